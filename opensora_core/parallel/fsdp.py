"""The ``fsdp2`` backend: torch FSDP2 (``fully_shard``) with ZeRO-2-like sharding, on every platform.

Every transformer block and then the root module are sharded over all ranks of the world (dp x sp) with
``reshard_after_forward=False``: parameters are all-gathered once before the forward and stay unsharded until
the backward is done (no second all-gather, as ZeRO stage 2), gradients are reduce-scattered (averaged over the
world) and the fp32 optimizer state only exists for this rank's shard. Averaging over the whole world is also
what sequence parallelism needs: its gradients are pre-scaled so the world average equals the gradient of a run
without it (see :mod:`opensora_core.parallel.sequence`).

Works with gloo on CPU and nccl on CUDA. In a single process (or a world of one) the model is left unwrapped.
Checkpoints: :meth:`FSDP2Backend.model_state_dict` consolidates full tensors (``DTensor.full_tensor()``, a
collective: call it on every rank); the optimizer state is consolidated too (full tensors keyed by parameter
name, rank 0 writes one file), so a checkpoint resumes on any world size (2 -> 1, 1 -> 2 processes). Older
checkpoints hold one shard per rank and still load on the world size that wrote them.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from opensora_core.parallel.backends import (
    OptimizerPaths,
    TrainBackend,
    load_consolidated_optimizer,
    save_consolidated_optimizer,
)

__all__ = ["FSDP2Backend", "is_dtensor"]


@functools.cache
def _dtensor_type() -> type | None:
    """``DTensor``, looked up once rather than imported on every call (the EMA update checks each state-dict
    entry on every step); ``None`` for a torch built without distributed support."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return None
    return DTensor


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (a shard of a ``fully_shard`` module)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


class FSDP2Backend(TrainBackend):
    """FSDP2 with ZeRO-2-like sharding over the world (see the module docstring)."""

    name = "fsdp2"

    def _sharded(self) -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self._sharded():
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        world = init_device_mesh(self.device.type, (dist.get_world_size(),))
        # one communication group per block (overlaps its gather/reduce with the neighbours' compute) ...
        for block in getattr(model, "blocks", ()):
            fully_shard(block, mesh=world, reshard_after_forward=False)
        # ... and the root for everything else (embedders, final layer)
        fully_shard(model, mesh=world, reshard_after_forward=False)
        return model

    def _clip_and_norm(self) -> float:
        if not self._sharded():
            return super()._clip_and_norm()
        params = self._trainable()
        grads = [p.grad for p in params if p.grad is not None]
        foreach = self.device.type == "cuda"
        norm = torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False, foreach=foreach)
        if is_dtensor(norm):
            norm = norm.full_tensor()  # per-shard norms reduced over the world
        if self.grad_clip is not None and math.isfinite(float(norm)):
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm, foreach=foreach)
        return float(norm)

    def _full_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """``full_tensor()`` of a sharded entry: a collective, so :meth:`model_state_dict` must run on all ranks."""
        return value.full_tensor() if is_dtensor(value) else value

    # ------------------------------------------------------------------ optimizer checkpoints
    def _rank_world(self) -> tuple[int, int]:
        return (dist.get_rank(), dist.get_world_size()) if self._sharded() else (0, 1)

    def save_optimizer(self, files: OptimizerPaths) -> list[Path]:
        """Consolidated optimizer state (:func:`save_consolidated_optimizer`; a collective, rank 0 writes)."""
        return save_consolidated_optimizer(files, self.module, self.optimizer, self.scaler)

    def load_optimizer(self, files: OptimizerPaths) -> None:
        """Load the state written by :meth:`save_optimizer` on any world size (every rank calls this), or an
        older checkpoint's per-rank shards on the same world size."""
        if not load_consolidated_optimizer(files, self.module, self.optimizer, self.scaler):
            rank, world = self._rank_world()
            self._load_per_rank_shard(files, rank, world)

    def _load_per_rank_shard(self, files: OptimizerPaths, rank: int, world: int) -> None:
        """The older layout: this rank's shard ``files.shard(rank)``, written on the same world size."""
        path = files.shard(rank)
        if not path.is_file():
            if files.booster_dir.is_dir():
                raise FileNotFoundError(
                    f"{files.consolidated} is missing but {files.booster_dir} exists: the checkpoint holds "
                    "ColossalAI ZeRO optimizer state, which this torch-native backend cannot read (zero2 runs "
                    "ColossalAI only with a process group on more than one process); resume on 2 or more "
                    "processes, or start from the weights only with --ckpt-path CKPT_DIR instead of --load"
                )
            raise FileNotFoundError(
                f"{files.consolidated} is missing (and so is {path}): the checkpoint has no fsdp2 optimizer "
                "state (was it written with another plugin?); resume with the plugin that wrote it, or start "
                "from the weights only with --ckpt-path CKPT_DIR instead of --load"
            )
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("world_size") != world:
            raise ValueError(
                f"{path} is an older per-rank fsdp2 optimizer shard written by {state.get('world_size')} "
                f"processes, this run has {world}: such shards only load on the same world size; resume on "
                f"{state.get('world_size')} processes (its next checkpoint then resumes on any world size), or "
                "restart from the weights only with --ckpt-path CKPT_DIR instead of --load"
            )
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        opt = state["optimizer"]
        for idx, entry in opt["state"].items():
            param = params[int(idx)]
            if not is_dtensor(param):
                continue
            from torch.distributed.tensor import DTensor

            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    entry[key] = DTensor.from_local(
                        value, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
                    )
        self.optimizer.load_state_dict(opt)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
