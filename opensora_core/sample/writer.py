"""Writing samples: H.264 mp4 (PyAV, yuv420p) or png for single frames, and preview grids of frames.

File names follow Open-Sora 1.1's ``inference.py``: ``{save_dir}/{sample_name or "sample"}_{index}.mp4`` with
``-{k}`` appended when ``num_sample > 1``; with ``prompt_as_path`` the (sanitised) prompt replaces
``{sample_name}_{index}``. ``index`` is the prompt's position in the whole prompt list (so ``--start-index``
runs never overwrite each other's files). Videos play at ``fps // frame_interval``. Files are written to a
temporary name and renamed, so an interrupted run never leaves a truncated video that a later
``prompt_as_path`` run would skip.

Preview grids (``{save_dir}/preview/{stem}.png``): one row per sample of a prompt, up to ``max_frames`` evenly
spaced frames per row, 2-pixel white separators, optionally a label above each row
(:func:`opensora_core.utils.grid.labelled_grid`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from opensora_core.utils.grid import labelled_grid, to_uint8_frames, write_grid_png

__all__ = [
    "PREVIEW_DIR",
    "output_stem",
    "preview_grid",
    "read_sample",
    "safe_filename",
    "sample_path",
    "save_fps",
    "save_sample",
    "to_uint8_frames",
    "write_preview_grid",
]

PREVIEW_DIR = "preview"
_MAX_NAME_BYTES = 200  # file systems allow 255 bytes; leave room for "-k", ".mp4" and temp prefixes


def safe_filename(text: str) -> str:
    """A prompt as a file name: path separators and control characters replaced, at most 200 bytes."""
    cleaned = "".join("_" if ch in "/\\\0" or ord(ch) < 32 else ch for ch in text).strip()
    cleaned = cleaned.lstrip(".") or "_"
    encoded = cleaned.encode("utf-8")[:_MAX_NAME_BYTES]
    return encoded.decode("utf-8", errors="ignore").rstrip() or "_"


def output_stem(
    save_dir: str | os.PathLike[str],
    prompt_index: int,
    prompt_text: str,
    sample_name: str | None = None,
    prompt_as_path: bool = False,
) -> Path:
    """``save_dir/{sample_name}_{prompt_index}`` or ``save_dir/{prompt}`` (prompt_as_path); no suffix."""
    if prompt_as_path:
        return Path(save_dir) / safe_filename(prompt_text)
    return Path(save_dir) / f"{sample_name or 'sample'}_{prompt_index}"


def sample_path(stem: Path, sample_index: int, num_sample: int, num_frames: int) -> Path:
    """The file of sample ``sample_index`` of a prompt: ``stem[-k].mp4`` (``.png`` for one frame)."""
    name = stem.name if num_sample == 1 else f"{stem.name}-{sample_index}"
    return stem.with_name(name + (".png" if num_frames == 1 else ".mp4"))


def save_fps(fps: int, frame_interval: int) -> int:
    """Playback rate of saved videos: ``fps // frame_interval`` (at least 1), as Open-Sora 1.1."""
    return max(1, int(fps) // int(frame_interval))


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad ``[T, H, W, 3]`` by repeating the last row/column to even H and W (yuv420p needs them)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def save_sample(frames: np.ndarray, path: str | os.PathLike[str], fps: int) -> Path:
    """Write uint8 ``[T, H, W, 3]`` frames: ``.png`` (first frame) or H.264 ``.mp4`` at ``fps``; atomic."""
    from PIL import Image

    from opensora_core.data.video_io import write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        if path.suffix == ".png":
            Image.fromarray(frames[0]).save(tmp, format="PNG")
        else:
            write_video(tmp, _even(frames), fps=fps)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_sample(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a saved sample back as uint8 ``[T, H, W, 3]`` (png: T = 1)."""
    from opensora_core.data.video_io import read_image, read_video_full

    path = Path(path)
    if path.suffix == ".png":
        return read_image(path)[None]
    frames, _ = read_video_full(path)
    return frames


def preview_grid(rows: Sequence[np.ndarray], max_frames: int = 8, pad: int = 2) -> np.ndarray:
    """Tile samples ``[T, H, W, 3]`` (one per row) into one uint8 image at their own size, without labels
    (:func:`opensora_core.utils.grid.labelled_grid`)."""
    return labelled_grid(rows, max_frames=max_frames, pad=pad, min_tile=1)


def write_preview_grid(
    rows: Sequence[np.ndarray],
    path: str | os.PathLike[str],
    max_frames: int = 8,
    labels: Sequence[str] | None = None,
    min_tile: int = 1,
) -> Path:
    """Write the grid of ``rows`` (``labels``: a text above each row; frames under ``min_tile`` pixels
    enlarged) as a PNG (atomic) and return its path."""
    return write_grid_png(labelled_grid(rows, labels, max_frames=max_frames, min_tile=min_tile), path)
