"""Classifier-free guidance helpers shared by the samplers: building the doubled (2B) model inputs once per
video (the caption mask prepared once, so no step reads it back from the device)."""

from __future__ import annotations

from typing import Any

import torch

from opensora_core.utils.text_mask import prepare_text_mask


def resolve_null_caption(model: Any, y: torch.Tensor, y_null: torch.Tensor | None) -> torch.Tensor:
    """Return the null condition for ``y``: ``y_null`` or ``model.null_caption(B)``.

    ``y`` is caption embeddings [B, 1, L, D] (STDiT/PixArt/text DiT) or class ids [B] (label DiT/Latte, whose
    null condition is the extra class ``num_classes``).
    """
    is_labels = y.dim() == 1 and not torch.is_floating_point(y)
    if y.dim() != 4 and not is_labels:
        raise ValueError(
            f"y must be caption embeddings [B, 1, L, D] or class ids [B], got shape {tuple(y.shape)}"
        )
    if y_null is None:
        null_fn = getattr(model, "null_caption", None)
        if null_fn is None:
            raise ValueError(
                "y_null is None and the model has no null_caption(batch_size) method; "
                "pass y_null (the null caption embeddings, same shape as y)"
            )
        y_null = null_fn(y.shape[0])
    if y_null.shape != y.shape:
        raise ValueError(f"y_null shape {tuple(y_null.shape)} must equal y shape {tuple(y.shape)}")
    return y_null.to(device=y.device, dtype=y.dtype)


def double_batch(value: Any, batch_size: int) -> Any:
    """Concatenate a per-sample tensor (first dim == ``batch_size``) with itself; pass anything else through."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch_size:
        return torch.cat([value, value], dim=0)
    return value


def guided_kwargs(
    y_first: torch.Tensor,
    y_second: torch.Tensor,
    mask: torch.Tensor | None,
    video_info: dict[str, Any],
    batch_size: int,
) -> dict[str, Any]:
    """Model kwargs for a 2B batch: ``y = cat(y_first, y_second)``, text mask and video info doubled.

    The text mask of the condition is reused for the null caption, as the reference does. It is handed to the
    model prepared (a :class:`~opensora_core.utils.text_mask.TextMask` with the packing of padded captions, or
    None when no token is padding): read back from the device here, once per video, not in every step.
    """
    kwargs: dict[str, Any] = {key: double_batch(val, batch_size) for key, val in video_info.items()}
    kwargs["y"] = torch.cat([y_first, y_second], dim=0)
    if mask is not None:
        if mask.dim() != 2 or mask.shape[0] != batch_size:
            raise ValueError(
                f"mask must be the text mask [B, L] with B={batch_size}, got {tuple(mask.shape)}"
            )
        kwargs["mask"] = prepare_text_mask(torch.cat([mask, mask], dim=0), 2 * batch_size, mask.shape[1])
    return kwargs
