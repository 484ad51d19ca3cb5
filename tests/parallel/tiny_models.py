"""Tiny STDiT / STDiT2 / STDiT3 models and inputs shared by the parallel tests (deterministic from a seed)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from opensora_core.models.stdit import STDiT
from opensora_core.models.stdit2 import STDiT2
from opensora_core.models.stdit3 import STDiT3

TINY_STDIT = dict(
    input_size=(4, 8, 8),
    hidden_size=32,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
)
TINY_STDIT2 = dict(
    hidden_size=48,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
    qk_norm=True,
    input_sq_size=64,
)
TINY_STDIT3 = dict(
    hidden_size=32,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
    input_sq_size=64,
)


def build_tiny(kind: str, seed: int = 0, **overrides: Any) -> nn.Module:
    """A tiny ``"stdit"``, ``"stdit2"`` or ``"stdit3"`` whose zero-initialised projections get small random values, so every
    branch (temporal attention included) contributes to outputs and gradients."""
    torch.manual_seed(seed)
    cls, cfg = {
        "stdit": (STDiT, TINY_STDIT),
        "stdit2": (STDiT2, TINY_STDIT2),
        "stdit3": (STDiT3, TINY_STDIT3),
    }[kind]
    model = cls(**{**cfg, **overrides})
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def tiny_batch(kind: str, batch: int = 2, frames: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Model inputs (x, timestep, y, mask, x_mask and, for STDiT2 / STDiT3, video info) for ``build_tiny(kind)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, 8, 8, generator=g)
    y = torch.randn(batch, 1, 6, 16, generator=g)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 3:] = 0
    x_mask = torch.ones(batch, frames, dtype=torch.bool)
    x_mask[-1, 0] = False  # one conditioning frame: exercises per-frame modulation under the split
    inputs = dict(x=x, timestep=torch.randint(0, 1000, (batch,), generator=g), y=y, mask=mask, x_mask=x_mask)
    full = lambda v: torch.full((batch,), float(v))  # noqa: E731
    if kind == "stdit2":
        inputs.update(height=full(64), width=full(64), num_frames=full(frames), ar=full(1.0), fps=full(24))
    if kind == "stdit3":
        inputs.update(height=full(64), width=full(64), fps=torch.tensor([24.0, 12.0][:batch]))
    return inputs
