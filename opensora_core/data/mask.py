"""Frame masks for conditional training (Open-Sora 1.1 / 1.2 ``MaskGenerator``, config key ``mask_ratios``).

Per sample one mask type is drawn with the configured probabilities; the mask is a bool vector over the T
latent frames with ``False`` marking conditioning frames (kept clean) and ``True`` frames to generate:

* ``mask_no``: nothing masked;
* ``mask_quarter_{random,head,tail,head_tail}``: a block of ``randint(1, T // 4)`` frames at a random position,
  the head, the tail, or both head and tail;
* ``mask_image_{random,head,tail,head_tail}``: the same with exactly one frame;
* ``random`` (1.2): each frame is a conditioning frame with probability ``p ~ U(0.1, 0.9)`` drawn per sample
  (frame kept to generate when its uniform draw exceeds ``p``); if every frame would condition, the last is
  generated;
* ``intepolate`` (1.2, the reference's spelling): every other frame conditions, starting at frame 0 or 1.

Samples with ``T <= 1`` are never masked. Without ``mask_no`` in the config the remaining probability is
``mask_no`` (1.2). Deviations from the reference: when ``T // 4 == 0`` (T = 2 or 3) the quarter block has 1
frame instead of raising; ``random``'s per-frame uniforms come from a torch generator seeded by the mask rng
(the reference used the global torch RNG), so a step's masks depend only on its key. The later spellings
without the ``mask_`` prefix (``identity`` for ``mask_no``) are accepted too.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch

from opensora_core.config.schema import MASK_RATIO_NAMES, normalize_mask_ratios

MASK_NAMES = MASK_RATIO_NAMES  # the mask kinds the config accepts (one table for both)


class MaskGenerator:
    """Draw per-sample frame masks with the probabilities of ``mask_ratios`` (see the module docstring)."""

    def __init__(self, mask_ratios: Mapping[str, float], rng: random.Random | None = None) -> None:
        self.mask_ratios: dict[str, float] = normalize_mask_ratios(dict(mask_ratios)) or {}
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
        if name == "intepolate":
            mask[rng.randint(0, 1) :: 2] = False
            return mask
        if name == "random":
            ratio = rng.uniform(0.1, 0.9)
            gen = torch.Generator().manual_seed(rng.getrandbits(63))
            mask = (torch.rand(num_frames, generator=gen) > ratio).to(device)
            if not mask.any():
                mask[-1] = True
            return mask
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
