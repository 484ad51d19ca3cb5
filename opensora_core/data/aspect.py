"""The resolution / aspect-ratio tables as the data layer uses them (defined in :mod:`opensora_core.video_sizes`)."""

from __future__ import annotations

from opensora_core.video_sizes import (
    ASPECT_RATIO_NAMES,
    ASPECT_RATIOS,
    NUM_FRAMES_NAMES,
    RESOLUTIONS_V1_1,
    get_closest_ratio,
    get_image_size,
    image_size_of,
    num_frames_of,
)

__all__ = [
    "ASPECT_RATIOS",
    "ASPECT_RATIO_NAMES",
    "NUM_FRAMES_NAMES",
    "RESOLUTIONS_V1_1",
    "get_closest_ratio",
    "get_image_size",
    "image_size_of",
    "num_frames_of",
]
