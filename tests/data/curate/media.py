"""Generated long videos with known shot boundaries for the curation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensora_core.data.video_io import write_video


def scene_frames(
    lengths: list[int], size: int = 64, seed: int = 0, drift: int = 1, width: int | None = None
) -> np.ndarray:
    """Frames of consecutive shots: each shot is its own random texture drifting ``drift`` px per frame, so
    frames inside a shot barely change and every boundary is a hard cut. -> uint8 ``[sum(lengths), H, W, 3]``."""
    rng = np.random.default_rng(seed)
    shots = []
    for length in lengths:
        tile = rng.integers(0, 256, (size // 8, (width or size) // 8, 3), dtype=np.uint8)
        texture = np.kron(tile, np.ones((8, 8, 1), dtype=np.uint8))
        shots.append(np.stack([np.roll(texture, drift * i, axis=1) for i in range(length)]))
    return np.concatenate(shots)


def make_scene_video(
    path: Path,
    lengths: list[int],
    fps: int = 10,
    size: int = 64,
    seed: int = 0,
    drift: int = 1,
    width: int | None = None,
    **kw,
) -> Path:
    """An H.264 mp4 with hard cuts after each of ``lengths`` frames (``size`` x ``width or size`` px)."""
    return write_video(path, scene_frames(lengths, size, seed, drift, width), fps=fps, **kw)
