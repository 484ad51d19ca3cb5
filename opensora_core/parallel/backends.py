"""Training backends: the :class:`TrainBackend` interface every plugin implements, and ``"ddp"``.

``opensora_core.parallel.build_backend(plugin, model, mesh, ...)`` wraps a model and its optimizer with the
plugin's backend, looked up in ``opensora_core.parallel.registry.BACKENDS``. Plugin modules (``colossal``,
``fsdp``) import this module for the base class; this module imports none of them, nor the table.

A backend owns everything that depends on how parameters and gradients are distributed: the wrapped model
used for the forward pass, mixed precision (autocast, and a gradient scaler for fp16), ``backward``, the
optimizer step with gradient clipping, consolidated state dicts and optimizer checkpoints. The trainer only
talks to the :class:`TrainBackend` interface, so backends are interchangeable:

- ``"ddp"`` (:class:`DDPBackend`): torch ``DistributedDataParallel`` over the data-parallel group (gloo on CPU,
  nccl on CUDA); the plain module in a single process. Optimizer state is replicated, so one optimizer file
  (written by rank 0) resumes on any world size.
- ``"fsdp2"`` (``opensora_core.parallel.fsdp``) and ``"zero2"`` / ``"zero2-seq"``
  (``opensora_core.parallel.colossal``: ColossalAI's Booster when installed, else the torch-native ZeRO-2-like
  fsdp2 path): each lives in its own module.

Precision: parameters, gradients and optimizer state stay fp32 (the master weights); ``dtype="bf16"`` or
``"fp16"`` runs the forward under ``torch.autocast``. fp16 (CUDA only) adds a dynamic loss scaler (initial
scale 2**16 as the reference); bf16 works on CPU and CUDA.

The optimizer is ``torch.optim.AdamW`` (betas 0.9/0.999, ``adam_eps``), the reference's HybridAdam in AdamW
mode; on CPU ``foreach`` and ``fused`` are off (one kernel per tensor, bitwise reproducible), on CUDA it is
the fused kernel.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opensora_core.parallel.mesh import Mesh

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_FILE = "optimizer.pt"
FP16_INITIAL_SCALE = 2.0**16


def save_synced(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` and fsync the file (checkpoint files must be on disk before the rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return path


class TrainBackend:
    """Single-device behaviour shared by every backend (subclasses wrap the model and shard state).

    Args:
        model: the model, already on its device, parameters in fp32.
        mesh: the dp x sp mesh (gradients are averaged over ``mesh.dp_group``).
        lr, weight_decay, adam_eps: AdamW settings.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` compute dtype (autocast).
        grad_clip: max global gradient norm; ``None`` = no clipping (the norm is still measured).
    """

    name = "single"

    def __init__(
        self,
        model: nn.Module,
        mesh: Mesh,
        *,
        lr: float,
        weight_decay: float = 0.0,
        dtype: str = "fp32",
        grad_clip: float | None = 1.0,
        adam_eps: float = 1e-8,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.module = model
        self.mesh = mesh
        self.device = next(model.parameters()).device
        self.dtype = dtype
        self.grad_clip = grad_clip
        if dtype == "fp16" and self.device.type != "cuda":
            raise ValueError(
                "dtype 'fp16' needs CUDA (loss scaling); train on CPU with dtype 'bf16' or 'fp32'"
            )
        if any(p.dtype != torch.float32 for p in model.parameters()):
            raise ValueError(
                "the backend keeps fp32 master weights: build the model in fp32 and pick the compute "
                "precision with dtype (autocast)"
            )
        self.model = self._wrap(model)
        self.optimizer = self._build_optimizer(lr, weight_decay, adam_eps)
        self.scaler = torch.amp.GradScaler("cuda", init_scale=FP16_INITIAL_SCALE) if dtype == "fp16" else None
        self.last_step_skipped = False
        self.last_step_overflow = False

    # ------------------------------------------------------------------ hooks for subclasses
    def _wrap(self, model: nn.Module) -> nn.Module:
        """The module called for the forward pass (DDP/FSDP wrappers override this)."""
        return model

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _build_optimizer(self, lr: float, weight_decay: float, eps: float) -> torch.optim.Optimizer:
        params = self._trainable()
        if not params:
            raise ValueError("the model has no trainable parameters (check model.freeze)")
        on_cuda = self.device.type == "cuda"
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=(0.9, 0.999),
            eps=eps,
            weight_decay=weight_decay,
            foreach=False,
            fused=on_cuda,
        )

    def _clip_and_norm(self) -> float:
        """Pre-clip total gradient norm over all trainable parameters (clipping in place when configured)."""
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(
            self._trainable(), max_norm, error_if_nonfinite=False, foreach=self.device.type == "cuda"
        )
        return float(norm)

    # ------------------------------------------------------------------ public interface
    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context for the forward pass and loss: autocast to ``dtype`` (nothing for fp32)."""
        if self.dtype == "fp32":
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype]):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled for fp16)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self) -> float:
        """Unscale, measure and clip the gradients, step the optimizer, zero the gradients.

        Returns the pre-clip total gradient norm. A non-finite norm skips the update
        (``last_step_skipped``); with fp16 that is a loss-scale overflow (``last_step_overflow``) and the
        scale is lowered.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = self._clip_and_norm()
        finite = math.isfinite(norm)
        self.last_step_skipped = not finite
        self.last_step_overflow = (not finite) and self.scaler is not None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update itself on inf/nan gradients
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        self.zero_grad()
        return norm

    def zero_grad(self) -> None:
        """Drop the gradients without stepping (also used when a step is skipped)."""
        self.optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group (warm-up)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        """Current learning rate (first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _full_tensor(self, value: torch.Tensor) -> torch.Tensor:
        """The whole tensor of a state-dict entry (sharded backends gather it here)."""
        return value

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """Consolidated fp32 state dict (parameters and persistent buffers) on CPU, on every rank."""
        out: dict[str, torch.Tensor] = {}
        for key, value in self.module.state_dict().items():
            value = self._full_tensor(value).detach()
            if value.is_floating_point():
                value = value.float()
            out[key] = value.to("cpu", copy=True).contiguous()
        return out

    def optimizer_state(self) -> dict[str, Any]:
        """Optimizer (and loss-scaler) state to checkpoint."""
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def save_optimizer(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write the optimizer state into ``directory``; returns the files this rank wrote.

        Replicated backends write one file from the first rank of the first sp group (global rank 0);
        it resumes on any world size.
        """
        if self.mesh.dp_rank != 0 or self.mesh.sp_rank != 0:
            return []
        return [save_synced(self.optimizer_state(), Path(directory) / OPTIMIZER_FILE)]

    def load_optimizer(self, directory: str | os.PathLike[str]) -> None:
        """Restore the optimizer state written by :meth:`save_optimizer` (on every rank)."""
        path = Path(directory) / OPTIMIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: the checkpoint has no optimizer state for backend {self.name!r}; "
                "load a complete checkpoint written by the trainer, or start from its weights only with "
                "--ckpt-path CKPT_DIR instead of --load"
            )
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


class DDPBackend(TrainBackend):
    """``DistributedDataParallel`` over the data-parallel group; the plain module without a process group."""

    name = "ddp"

    def _wrap(self, model: nn.Module) -> nn.Module:
        import torch.distributed as dist

        if self.mesh.sp_size > 1:
            raise ValueError(
                f"the {self.name!r} backend does not reduce gradients over sequence-parallel groups "
                f"(sp_size={self.mesh.sp_size}); use plugin 'zero2-seq' with the sequence-parallel backend"
            )
        if not (dist.is_available() and dist.is_initialized()) or self.mesh.dp_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            model,
            device_ids=device_ids,
            process_group=self.mesh.dp_group,
            broadcast_buffers=False,  # buffers are functions of the config; rank 0's are broadcast once here
        )
