"""The ``zero2`` / ``zero2-seq`` plugins: ColossalAI's Booster where it is installed, FSDP2 otherwise.

ColossalAI 0.5.0 is an optional extra (its declared requirements would replace torch): ``pip install -r
requirements-colossalai.txt && pip install --no-deps colossalai==0.5.0 galore-torch==1.0``.

- CUDA + ColossalAI: ``Booster(LowLevelZeroPlugin(stage=2, precision=dtype, initial_scale=2**16,
  max_norm=grad_clip))`` as the reference trainer. The model's working weights are cast to ``dtype`` and the
  ZeRO optimizer keeps sharded fp32 master weights, clips and (fp16) scales the loss itself.
- CPU + ColossalAI: ZeRO asserts a CUDA device, so the Booster runs its ``TorchDDPPlugin`` (gloo); precision
  as the torch backends (fp32 master weights, ``autocast`` to bf16), clipping by this backend.
- Without ColossalAI: the torch-native ZeRO-2-like :class:`~opensora_core.parallel.fsdp.FSDP2Backend`.

``zero2-seq`` is the same backend on a dp x sp mesh: gradients are reduced over the whole world, which is exact
for sequence parallelism (see :mod:`opensora_core.parallel.sequence`). The optimizer is torch ``AdamW``
(the reference's HybridAdam in AdamW mode computes the same update; its CPU kernels need a JIT build).
Optimizer checkpoints (a collective; rank 0 writes): the Booster's sharded format in ``<dir>/optimizer`` under
ZeRO; on the CPU path the consolidated file the fsdp2 backend writes too, so a zero2 checkpoint resumes on any
number of processes (one process runs zero2 as fsdp2). Older CPU checkpoints (the Booster's unsharded
``optimizer/optimizer.bin``) still load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from opensora_core.parallel.backends import (
    DTYPES,
    OptimizerPaths,
    TrainBackend,
    load_consolidated_optimizer,
    save_consolidated_optimizer,
)
from opensora_core.parallel.mesh import Mesh

__all__ = ["ColossalAIBackend", "colossalai_available", "zero2_backend"]

logger = logging.getLogger(__name__)

INITIAL_SCALE = 2.0**16


def colossalai_available() -> bool:
    """True when the optional ColossalAI extra is installed."""
    return importlib.util.find_spec("colossalai") is not None


class ColossalAIBackend(TrainBackend):
    """ColossalAI Booster backend (LowLevelZeroPlugin on CUDA, TorchDDPPlugin on CPU; see the module docstring)."""

    def __init__(self, model: nn.Module, mesh: Mesh, **kwargs: Any) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "the ColossalAI backend needs a process group: launch with torchrun (a single process "
                "trains with plugin 'ddp' or 'fsdp2')"
            )
        self.zero = next(model.parameters()).device.type == "cuda"
        self.name = "colossalai-zero2" if self.zero else "colossalai-torchddp"
        super().__init__(model, mesh, **kwargs)  # builds the torch optimizer over the fp32 parameters
        from colossalai.booster import Booster
        from colossalai.booster.plugin import LowLevelZeroPlugin, TorchDDPPlugin

        if self.zero:
            plugin = LowLevelZeroPlugin(
                stage=2,
                precision=self.dtype,
                initial_scale=INITIAL_SCALE,
                max_norm=self.grad_clip or 0.0,
            )
            if hasattr(model, "input_dtype"):
                # STDiT / STDiT2 cast their inputs to ``input_dtype``: the ZeRO working precision
                model.input_dtype = DTYPES[self.dtype]
            self.scaler = None  # the ZeRO optimizer scales fp16 losses itself
        else:
            plugin = TorchDDPPlugin(broadcast_buffers=False)
        self.booster = Booster(plugin=plugin)
        self.model, self.optimizer, *_ = self.booster.boost(model, self.optimizer)
        self.module = self.model.unwrap()

    # ------------------------------------------------------------------ precision / step
    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """CPU: autocast to ``dtype`` as the torch backends. CUDA ZeRO: the weights already are in ``dtype``."""
        if self.zero:
            yield
            return
        with super().autocast():
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """``booster.backward`` (ZeRO reduces gradient buckets during it; fp16 loss scaling on CUDA)."""
        if self.zero:
            self.booster.backward(loss, self.optimizer)
        else:
            super().backward(loss)

    def step(self) -> float:
        """Clip, step, zero the gradients; returns the pre-clip global gradient norm (inf on fp16 overflow)."""
        if not self.zero:
            return super().step()
        opt = self.optimizer
        opt._current_grad_norm = None  # set by a step that runs; stays None when ZeRO skips an overflow
        opt.step()
        norm = opt.get_grad_norm()
        skipped = norm is None
        norm = math.inf if skipped else float(norm)
        self.last_step_skipped = skipped or not math.isfinite(norm)
        self.last_step_overflow = self.last_step_skipped and self.dtype == "fp16"
        self.zero_grad()
        return norm

    def zero_grad(self) -> None:
        """Drop the gradients (ZeRO's own buckets too)."""
        self.optimizer.zero_grad()

    # ------------------------------------------------------------------ checkpoints
    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """Consolidated fp32 state dict on CPU, on every rank (a collective under ZeRO: call on all ranks).

        Under ZeRO the trainable parameters come from the fp32 master shards (all-gathered), not from the
        ``dtype`` working copy.
        """
        state = super().model_state_dict()
        if not self.zero:
            return state
        opt = self.optimizer
        masters = opt.get_working_to_master_map()
        for name, param in self.module.named_parameters():
            master = masters.get(id(param))
            if master is None or name not in state:
                continue
            group = opt.param_to_pg[param]
            parts = [torch.empty_like(master) for _ in range(dist.get_world_size(group))]
            dist.all_gather(parts, master.contiguous(), group=group)
            full = torch.cat(parts)[: param.numel()].view(param.shape)
            state[name] = full.float().to("cpu", copy=True).contiguous()
        return state

    def save_optimizer(self, files: OptimizerPaths) -> list[Path]:
        """Write the optimizer state (a collective; rank 0 writes; returns the files this rank wrote).

        CUDA ZeRO: the Booster's sharded checkpoint in ``files.booster_dir``. CPU (TorchDDPPlugin): the
        consolidated file of the torch backends (``files.consolidated``, parameter-name keyed), which resumes
        on any world size, also on one process where ``zero2`` runs the torch-native fsdp2 backend.
        """
        if not self.zero:
            return save_consolidated_optimizer(files, self.module, self.optimizer.optim)
        target = files.booster_dir
        self.booster.save_optimizer(self.optimizer, str(target), shard=True)
        if dist.get_rank() != 0:
            return []
        return sorted(p for p in target.iterdir() if p.is_file())

    def load_optimizer(self, files: OptimizerPaths) -> None:
        """Load the optimizer state written by :meth:`save_optimizer` (or by the fsdp2 backend; every rank)."""
        if not self.zero and load_consolidated_optimizer(files, self.module, self.optimizer.optim):
            return
        target = files.booster_dir
        if not target.is_dir():
            raise FileNotFoundError(
                f"{target} and {files.consolidated} are missing: the checkpoint has no zero2 optimizer state "
                "(was it written with another plugin?); resume with the plugin that wrote it, or start from "
                "the weights only with --ckpt-path CKPT_DIR instead of --load"
            )
        # older CPU checkpoints: the Booster's unsharded file
        self.booster.load_optimizer(self.optimizer, str(target if self.zero else files.booster_unsharded))


def zero2_backend(model: nn.Module, mesh: Mesh, **kwargs: Any) -> TrainBackend:
    """The ``zero2`` / ``zero2-seq`` backend: ColossalAI's Booster when installed, else FSDP2 (ZeRO-2-like)."""
    if colossalai_available() and dist.is_available() and dist.is_initialized():
        return ColossalAIBackend(model, mesh, **kwargs)
    from opensora_core.parallel.fsdp import FSDP2Backend

    reason = "ColossalAI is not installed" if not colossalai_available() else "single process"
    logger.info("plugin zero2: %s, using the torch-native ZeRO-2-like fsdp2 backend", reason)
    return FSDP2Backend(model, mesh, **kwargs)
