"""The caption (text) mask, read back from the device once and shared by every cross-attention that uses it.

A model prepares it once per forward (:func:`prepare_text_mask`); a sampler prepares it once per video and
hands the prepared :class:`TextMask` to every step's forward, so no step reads the mask back from the device.
Here (not in ``models``) so the schedulers, which sit beside the models, can prepare it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TextMask", "prepare_text_mask"]


def _as_key_mask(mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None:
    """Text mask ([B, L], [B, 1, 1, L]; 1/True = token) -> bool [B, L] repeated to ``batch``, or None if absent."""
    if mask is None:
        return None
    mask = mask.reshape(mask.shape[0], -1)
    if mask.shape[1] != length:
        raise ValueError(f"text mask has {mask.shape[1]} tokens but the caption has {length}")
    if mask.shape[0] != batch:
        if batch % mask.shape[0]:
            raise ValueError(f"text mask batch {mask.shape[0]} does not divide the caption batch {batch}")
        mask = mask.repeat(batch // mask.shape[0], 1)
    return mask != 0


@dataclass(frozen=True)
class TextMask:
    """A caption mask with some padding, checked once.

    Device tensors: ``key_mask`` bool [B, L] (True = token); ``has_token`` bool [B], or None when every sample
    has a token; ``kv_index`` int64 [total]: the flat positions (in [B, keep]) of the valid tokens, sample by
    sample; ``cu_seqlens`` int32 [B + 1]: where each sample's tokens start in that packed order.
    Host values: ``keep`` = 1 + the last position holding a token in any sample (the key positions after it
    are padding everywhere and can be cut off); ``uniform``: every sample has a token at every one of the first
    ``keep`` positions (once cut, no mask is needed); ``max_seqlen``: the most tokens of one sample.
    """

    key_mask: torch.Tensor
    has_token: torch.Tensor | None
    keep: int
    uniform: bool
    kv_index: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int


def prepare_text_mask(mask: torch.Tensor | TextMask | None, batch: int, length: int) -> TextMask | None:
    """Caption mask ([B, L] or [B, 1, 1, L]; 1 = token) -> :class:`TextMask`, or None when every token is valid.

    Reads the mask back to the host once (one device sync); a prepared ``TextMask`` passes through after a
    shape check.
    """
    if isinstance(mask, TextMask):
        if mask.key_mask.shape != (batch, length):
            raise ValueError(
                f"text mask is {list(mask.key_mask.shape)} but the caption is [{batch}, {length}]"
            )
        return mask
    key_mask = _as_key_mask(mask, batch, length)
    if key_mask is None:
        return None
    host = key_mask.cpu()  # the one read-back
    if bool(host.all()):
        return None
    lengths = host.sum(dim=1)  # [B]
    any_token = host.any(dim=0)  # [L]
    keep = int(any_token.nonzero().max()) + 1 if bool(any_token.any()) else 0
    kept = host[:, :keep]
    device = key_mask.device
    cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32)
    cu_seqlens[1:] = lengths.cumsum(0)
    return TextMask(
        key_mask=key_mask,
        has_token=None if bool((lengths > 0).all()) else (lengths > 0).to(device),
        keep=keep,
        uniform=bool(kept.all()),
        kv_index=kept.flatten().nonzero().squeeze(1).to(device),
        cu_seqlens=cu_seqlens.to(device),
        max_seqlen=int(lengths.max()),
    )
