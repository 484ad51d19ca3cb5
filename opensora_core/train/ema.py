"""Exponential moving average of model weights, kept in fp32.

``ema = decay * ema + (1 - decay) * param`` after every optimizer step, for every trainable parameter (the
reference's ``update_ema``; frozen parameters and buffers are copied, so the EMA state dict is a complete model
state dict that loads with ``build_model(...).load_state_dict``). Created as an exact copy of the model (the
reference's ``update_ema(decay=0)`` at start).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


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
            self.shadow[key] = (value.float() if value.is_floating_point() else value).to(target, copy=True)
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float | None = None) -> None:
        """One EMA step towards ``model`` (the unwrapped module) with ``decay`` (default: the EMA's)."""
        d = self.decay if decay is None else float(decay)
        for key, value in model.state_dict().items():
            shadow = self.shadow.get(key)
            if shadow is None:
                raise KeyError(f"EMA has no entry {key!r}; was the model changed after the EMA was created?")
            if key in self.trainable:
                shadow.mul_(d).add_(value.detach().to(shadow.device, torch.float32), alpha=1.0 - d)
            else:
                shadow.copy_(value.detach())
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights as a CPU state dict (fp32 floats), ready for safetensors."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.shadow.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load EMA weights (e.g. from ``ema.safetensors``); ``strict`` requires the same keys and shapes."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if strict and (missing or unexpected):
            raise KeyError(f"EMA state mismatch: missing {missing[:10]}, unexpected {unexpected[:10]}")
        for key, value in state.items():
            if key not in self.shadow:
                continue
            target = self.shadow[key]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"EMA entry {key!r} has shape {tuple(value.shape)}, the model expects {tuple(target.shape)}"
                )
            target.copy_(value.to(target.device, target.dtype))

    def copy_to(self, model: nn.Module) -> None:
        """Write the EMA weights into ``model`` (e.g. to evaluate the EMA model)."""
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})
