"""Frame masks for conditional training (Open-Sora v1.1 ``MaskGenerator``, config key ``mask_ratios``).

Per sample one mask type is drawn with the configured probabilities; the mask is a bool vector over the T
latent frames with ``False`` marking conditioning frames (kept clean) and ``True`` frames to generate:

* ``mask_no``: nothing masked;
* ``mask_quarter_{random,head,tail,head_tail}``: a block of ``randint(1, T // 4)`` frames at a random position,
  the head, the tail, or both head and tail;
* ``mask_image_{random,head,tail,head_tail}``: the same with exactly one frame.

Samples with ``T <= 1`` are never masked. Deviation from the reference: when ``T // 4 == 0`` (T = 2 or 3) the
quarter block has 1 frame instead of raising. The later spellings without the ``mask_`` prefix (``identity`` for
``mask_no``) are accepted too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import torch

from opensora_core.config.schema import MASK_RATIO_ALIASES, MASK_RATIO_NAMES

MASK_NAMES = MASK_RATIO_NAMES  # the mask kinds the config accepts (one table for both)


class MaskGenerator:
    """Draw per-sample frame masks with the probabilities of ``mask_ratios`` (must sum to 1)."""

    def __init__(self, mask_ratios: Mapping[str, float], rng: random.Random | None = None) -> None:
        ratios: dict[str, float] = {}
        for name, ratio in mask_ratios.items():
            canonical = name if name in MASK_NAMES else MASK_RATIO_ALIASES.get(name)
            if canonical is None:
                raise ValueError(f"mask_ratios: unknown mask {name!r}; known: {list(MASK_NAMES)}")
            if canonical in ratios:
                raise ValueError(f"mask_ratios: {name!r} given twice")
            if not 0.0 <= float(ratio) <= 1.0:
                raise ValueError(f"mask_ratios[{name!r}] must be within [0, 1], got {ratio}")
            ratios[canonical] = float(ratio)
        total = sum(ratios.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"mask_ratios must sum to 1, got {total}")
        self.mask_ratios = ratios
        self.rng = rng

    def _random(self) -> random.Random:
        return self.rng if self.rng is not None else random  # type: ignore[return-value]

    def pick(self) -> str:
        """Draw one mask name (cumulative probabilities in the config's order)."""
        u = self._random().random()
        acc = 0.0
        for name, ratio in self.mask_ratios.items():
            acc += ratio
            if u < acc:
                return name
        return "mask_no"  # only reachable through floating-point round-off of the cumulative sum

    def get_mask(self, num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
        """One bool mask of length ``num_frames`` (False = conditioning frame)."""
        name = self.pick()
        mask = torch.ones(num_frames, dtype=torch.bool, device=device)
        if num_frames <= 1 or name == "mask_no":
            return mask
        rng = self._random()
        size = 1 if name.startswith("mask_image") else rng.randint(1, max(1, num_frames // 4))
        if name.endswith("_random"):
            pos = rng.randint(0, num_frames - size)
            mask[pos : pos + size] = False
        if name.endswith(("_head", "_head_tail")):
            mask[:size] = False
        if name.endswith("_tail"):
            mask[-size:] = False
        return mask

    def get_masks(self, x: torch.Tensor) -> torch.Tensor:
        """Masks ``[B, T]`` for a latent batch ``x`` of shape ``[B, C, T, H, W]``."""
        return torch.stack([self.get_mask(x.shape[2], device=x.device) for _ in range(x.shape[0])])
