"""Size conditioning of multi-resolution models for a generated clip size.

STDiT2 and PixArtMS take the clip's size as extra model inputs (their ``ModelCaps.video_info``); training gets
them from the batch (:mod:`opensora_core.data.datasets`), sampling and the trainer's preview from
:func:`video_info` here, with the same meaning: pixel ``height`` / ``width``, ``ar = width / height``,
``num_frames`` and ``fps`` (``IMAGE_FPS`` for a single frame, as the datasets give images).
"""

from __future__ import annotations

import torch

from opensora_core.data.video_io import IMAGE_FPS
from opensora_core.models.registry import model_caps


def video_info(
    model_type: str,
    image_size: tuple[int, int],
    num_frames: int,
    fps: float,
    batch: int,
    device: torch.device | str,
) -> dict[str, torch.Tensor]:
    """The ``ModelCaps.video_info`` inputs of ``model_type`` for clips of ``image_size`` (H, W) and
    ``num_frames`` at ``fps``: 1-D float tensors of length ``batch`` (empty for models without any)."""
    height, width = image_size
    values = {
        "height": height,
        "width": width,
        "ar": width / height,
        "num_frames": num_frames,
        "fps": IMAGE_FPS if num_frames == 1 else fps,
    }
    keys = model_caps(model_type).video_info
    return {key: torch.full((batch,), float(values[key]), device=device) for key in keys}
