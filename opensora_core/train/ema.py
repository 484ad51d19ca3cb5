"""Exponential moving average of model weights, kept in fp32.

``ema = decay * ema + (1 - decay) * param`` after every optimizer step, for every trainable parameter (the
reference's ``update_ema``; frozen parameters and buffers are copied, so the EMA state dict is a complete model
state dict that loads with ``build_model(...).load_state_dict``). Created as an exact copy of the model (the
reference's ``update_ema(decay=0)`` at start).

Sharded models (the ``fsdp2`` backend, whose state dict holds ``DTensor`` shards): the EMA keeps only this
rank's shard of every sharded entry (as a ``DTensor`` with the parameter's mesh and placements) and updates it
locally, without communication. :meth:`EMA.state_dict` gathers full tensors (``DTensor.full_tensor()``, a
collective: call it on every rank in the same order); :meth:`EMA.load_state_dict` and :meth:`EMA.copy_to` take
full tensors and keep each rank's part.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from opensora_core.parallel.fsdp import is_dtensor


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``full_tensor()`` of a DTensor (collective), else ``t`` itself."""
    return t.full_tensor() if is_dtensor(t) else t


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's part of the full tensor ``full`` laid out as the DTensor ``like`` (no communication: every
    rank holds ``full``)."""
    from torch.distributed.tensor import distribute_tensor

    full = full.to(like.device, like.dtype)
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


class EMA:
    """fp32 shadow copy of a model's state dict, updated with :meth:`update` (see the module docstring)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {}
        for key, value in model.state_dict().items():
            value = value.detach()
            target = device if device is not None else value.device
            if is_dtensor(value) and device is not None and torch.device(device) != value.device:
                raise ValueError(
                    f"EMA of a sharded model must live on the model's device ({value.device}), got "
                    f"device={device!r}; leave device unset"
                )
            dtype = torch.float32 if value.is_floating_point() else value.dtype
            self.shadow[key] = value.to(target, dtype, copy=True)
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.num_updates = 0

    @property
    def sharded(self) -> bool:
        """Whether some entry is a DTensor shard (then :meth:`state_dict` is a collective)."""
        return any(is_dtensor(v) for v in self.shadow.values())

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """One EMA step towards ``model`` (the module whose state dict created the EMA) with ``decay``
        (default: the EMA's). Shards update locally (no communication)."""
        d = self.decay if decay is None else float(decay)
        for key, value in model.state_dict().items():
            shadow = self.shadow.get(key)
            if shadow is None:
                raise KeyError(f"EMA has no entry {key!r}; was the model changed after the EMA was created?")
            if is_dtensor(shadow) != is_dtensor(value):
                raise TypeError(
                    f"EMA entry {key!r} is {'' if is_dtensor(shadow) else 'not '}sharded but the model's is "
                    f"{'' if is_dtensor(value) else 'not'}; update the EMA with the module it was created from"
                )
            local, source = _local(shadow), _local(value.detach())
            if key in self.trainable:
                local.mul_(d).add_(source.to(local.device, torch.float32), alpha=1.0 - d)
            else:
                local.copy_(source)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a CPU state dict of full tensors (fp32 floats), ready for safetensors.

        Collective when the EMA is sharded (:attr:`sharded`): every rank must call it.
        """
        return {k: _full(v.detach()).to("cpu", copy=True).contiguous() for k, v in self.shadow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load full EMA weights (e.g. from ``ema.safetensors``, on every rank); ``strict`` requires the same
        keys and shapes. Sharded entries keep this rank's part (no communication)."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if strict and (missing or unexpected):
            raise KeyError(f"EMA state mismatch: missing {missing[:10]}, unexpected {unexpected[:10]}")
        for key, value in state.items():
            if key not in self.shadow:
                continue
            target = self.shadow[key]
            if is_dtensor(value):
                value = value.full_tensor()
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"EMA entry {key!r} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                )
            if is_dtensor(target):
                target.to_local().copy_(_shard_like(value, target))
            else:
                target.copy_(value.to(target.device, target.dtype))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the EMA weights into ``model`` (e.g. to evaluate the EMA model).

        ``model`` may be the sharded module the EMA was made from or an unsharded copy of it; with a sharded
        EMA and an unsharded ``model`` this gathers full tensors (collective: call it on every rank).
        """
        current = model.state_dict()
        missing = sorted(set(self.shadow) - set(current))
        if missing:
            raise KeyError(
                f"model has no entries {missing[:10]} of the EMA; was it built from the same config?"
            )
        state: dict[str, torch.Tensor] = {}
        for key, shadow in self.shadow.items():
            like = current[key]
            if is_dtensor(like) and is_dtensor(shadow):
                value = shadow
            elif is_dtensor(like):
                from torch.distributed.tensor import DTensor

                local = _shard_like(shadow, like)
                value = DTensor.from_local(
                    local, like.device_mesh, like.placements, shape=like.shape, stride=like.stride()
                )
            else:
                value = _full(shadow)
            state[key] = value.to(dtype=like.dtype)
        model.load_state_dict(state)
