"""Latte (Open-Sora 1.0 port): DiT blocks alternating spatial and temporal self-attention.

Same modules, keys and conditioning as :class:`~opensora_core.models.dit.DiT`; only the token mixing differs:
- even blocks (0, 2, ...) attend over the S spatial tokens of each frame, odd blocks over the T frames of each
  spatial position;
- the spatial sin-cos table is added at the input; the temporal table is added to the residual stream right
  before block 1 (the first temporal block). As in the reference this happens whatever
  ``no_temporal_pos_emb`` says, and never at the input.
Loads ``Latte-XL-2-256x256-ucf101.pt`` (``condition="label_101"``) through ``checkpoint.load_checkpoint``
(``ema`` unwrapped, ``pos_embed`` / ``temp_embed`` dropped, 2-D patch conv widened).
"""

from __future__ import annotations

import logging

import torch

from opensora_core.models.dit import DiT
from opensora_core.models.layers import call_block

__all__ = ["Latte"]

logger = logging.getLogger(__name__)


class Latte(DiT):
    """Open-Sora Latte; constructor and forward as :class:`DiT` (see there)."""

    def _post_init(self) -> None:
        if self.no_temporal_pos_emb:
            logger.warning(
                "Latte: no_temporal_pos_emb=True has no effect; as in the reference, the temporal sin-cos "
                "table is always added before the first temporal block"
            )

    def _blocks(self, x: torch.Tensor, c: torch.Tensor, pos_temporal: torch.Tensor) -> torch.Tensor:
        """x [B, T, S, C] (spatial positions added), c [B, C] -> [B, T, S, C]."""
        checkpoint = self.grad_checkpointing and self.training
        for i, block in enumerate(self.blocks):
            if i % 2 == 0:  # spatial: groups = frames, tokens = S
                x = call_block(block, x, c, checkpoint=checkpoint)
            else:  # temporal: groups = spatial positions, tokens = T
                h = x.transpose(1, 2)  # [B, S, T, C]
                if i == 1:
                    h = h + pos_temporal[:, None]  # [1, 1, T, C]
                h = call_block(block, h.contiguous(), c, checkpoint=checkpoint)
                x = h.transpose(1, 2).contiguous()
        return x
