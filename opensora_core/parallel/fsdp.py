"""The ``fsdp2`` backend: torch FSDP2 (``fully_shard``) with ZeRO-2-like sharding, on every platform.

Every transformer block and then the root module are sharded over all ranks of the world (dp x sp) with
``reshard_after_forward=False``: parameters are all-gathered once before the forward and stay unsharded until
the backward is done (no second all-gather, as ZeRO stage 2), gradients are reduce-scattered (averaged over the
world) and the fp32 optimizer state only exists for this rank's shard. Averaging over the whole world is also
what sequence parallelism needs: its gradients are pre-scaled so the world average equals the gradient of a run
without it (see :mod:`opensora_core.parallel.sequence`).

Works with gloo on CPU and nccl on CUDA. In a single process (or a world of one) the model is left unwrapped.
Checkpoints: :meth:`FSDP2Backend.model_state_dict` consolidates full tensors (``DTensor.full_tensor()``, a
collective: call it on every rank); the optimizer state is saved per rank (``optimizer_rank{r}.pt``, this
rank's shards as plain tensors) and loads back on the same world size.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from opensora_core.parallel.backends import OptimizerPaths, TrainBackend, save_synced

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

    # ------------------------------------------------------------------ per-rank optimizer checkpoints
    def _ordered_params(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def optimizer_state(self) -> dict[str, Any]:
        """This rank's optimizer state with sharded tensors as plain local tensors (plus the world size)."""
        state = super().optimizer_state()
        opt = state["optimizer"]
        opt["state"] = {
            idx: {k: v.to_local().detach().clone() if is_dtensor(v) else v for k, v in entry.items()}
            for idx, entry in opt["state"].items()
        }
        state["world_size"] = dist.get_world_size() if self._sharded() else 1
        return state

    def save_optimizer(self, files: OptimizerPaths) -> list[Path]:
        """Every rank writes its own shard ``files.shard(rank)``; returns [that file]."""
        rank = dist.get_rank() if self._sharded() else 0
        return [save_synced(self.optimizer_state(), files.shard(rank))]

    def load_optimizer(self, files: OptimizerPaths) -> None:
        """Load this rank's shard written by :meth:`save_optimizer` (same world size required)."""
        world = dist.get_world_size() if self._sharded() else 1
        rank = dist.get_rank() if self._sharded() else 0
        path = files.shard(rank)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the fsdp2 backend resumes from per-rank optimizer shards written on the "
                f"same number of processes ({world} now); resume with the original world size, or start from "
                "the weights only with --ckpt-path CKPT_DIR instead of --load"
            )
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("world_size") != world:
            raise ValueError(
                f"{path} was written by {state.get('world_size')} processes, this run has {world}: fsdp2 "
                "optimizer shards only load on the same world size (or restart from the weights with "
                "--ckpt-path)"
            )
        params = self._ordered_params()
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
