"""Spatial transforms for video clips and images (Open-Sora v1.1 ``center`` and ``resize_crop``).

All functions take uint8 frames ``[T, H, W, 3]`` (numpy or torch) and return float32 ``[3, T, h, w]`` in [-1, 1]
(``x / 255`` normalised with mean 0.5, std 0.5).

* ``center``: resize so the short side equals the target size, then center-crop a square (the reference's
  ``UCFCenterCropVideo``; needs a square ``image_size``);
* ``resize_crop``: scale to cover ``(h, w)`` keeping the aspect ratio, then center-crop (reference ``ResizeCrop``).

Resizing is bilinear with antialiasing (the reference video path resizes without antialias; antialias avoids
aliasing when 720p sources are shrunk to 144p/240p buckets). Images go through the same tensor path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORM_NAMES = ("center", "resize_crop")


def to_tensor_video(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {tuple(x.shape)} {x.dtype}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T, 3, H, W] -> [T, 3, h, w] bilinear (antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"crop {th}x{tw} larger than frame {h}x{w}")
    top = int(round((h - th) / 2.0))
    left = int(round((w - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale ``[T, 3, H, W]`` to cover ``size = (h, w)`` keeping the aspect ratio, then center-crop."""
    h, w = x.shape[-2:]
    th, tw = int(size[0]), int(size[1])
    rh, rw = th / h, tw / w
    if rh > rw:
        scaled = (th, max(tw, round(w * rh)))
    else:
        scaled = (max(th, round(h * rw)), tw)
    return _center_crop(_resize(x, scaled), (th, tw))


def center_crop_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side of ``[T, 3, H, W]`` to ``size``, then center-crop ``size x size``."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    scaled = (max(size, round(h * scale)), max(size, round(w * scale)))
    return _center_crop(_resize(x, scaled), (size, size))


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (mean 0.5, std 0.5)."""
    return x.sub_(0.5).div_(0.5)


def get_transform(
    name: str, image_size: tuple[int, int]
) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """Transform ``uint8 [T, H, W, 3] -> float [3, T, h, w]`` in [-1, 1] by name (``center`` or ``resize_crop``)."""
    size = (int(image_size[0]), int(image_size[1]))
    if name == "center":
        if size[0] != size[1]:
            raise ValueError(
                f"transform 'center' crops a square but image_size is {size}; use transform_name='resize_crop'"
            )

        def spatial(x: torch.Tensor) -> torch.Tensor:
            return center_crop_square(x, size[0])

    elif name == "resize_crop":

        def spatial(x: torch.Tensor) -> torch.Tensor:
            return resize_crop(x, size)

    else:
        raise ValueError(f"unknown transform_name {name!r}; choose one of {TRANSFORM_NAMES}")

    def transform(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = normalize(spatial(to_tensor_video(frames)).contiguous())
        return x.permute(1, 0, 2, 3).contiguous()  # [T, 3, h, w] -> [3, T, h, w]

    return transform
