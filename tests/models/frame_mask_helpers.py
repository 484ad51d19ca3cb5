"""Capture what a model hands to its final layer, to test the frame-mask path block by block."""

from __future__ import annotations

from typing import Any

import torch


def run_capturing(model: torch.nn.Module, module: torch.nn.Module, *args: Any, **kwargs: Any):
    """Run ``model(*args, **kwargs)`` without grad; return (output, positional args of ``module``'s first call)."""
    calls: list[tuple] = []
    handle = module.register_forward_hook(lambda _m, a, _o: calls.append(a))
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    finally:
        handle.remove()
    return out, calls[0]


def frames(h: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Tokens [B, T*S, C] -> [B, T, S, C]."""
    return h.view(h.shape[0], num_frames, -1, h.shape[-1])
