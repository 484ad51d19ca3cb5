"""Labelled preview grids: one row of frames per video, the row's text written above it.

:func:`labelled_grid` is what the trainer's preview (``preview_every``), evaluation and the sampler's previews
show: up to ``max_frames`` evenly spaced frames per row (left to right in time), frames smaller than
``min_tile`` pixels enlarged by an integer factor (nearest neighbour, so a 16x16 debug clip stays visible),
``pad`` white pixels between cells, and with ``labels`` a white band above each row holding its prompt in black, wrapped to the grid width
at ``font_size`` pixels (readable at 100% zoom; the grid is at least ``min_label_width`` wide so a prompt does
not wrap to one word per line on tiny videos). PIL and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

FONT_SIZE = 14
MIN_LABEL_WIDTH = 384
MAX_LABEL_LINES = 4
MIN_TILE = 64


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    """Pillow's bundled scalable font at ``size`` pixels (its bitmap font when Pillow lacks FreeType)."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def to_uint8_frames(video: Any) -> np.ndarray:
    """A torch video ``[3, T, H, W]`` in [-1, 1] -> uint8 ``[T, H, W, 3]`` (clamped, ``round((x + 1) / 2 * 255)``)."""
    import torch

    x = video.detach().to("cpu", torch.float32).clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


def _text_width(font: Any, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def wrap_label(
    text: str, width: int, font_size: int = FONT_SIZE, max_lines: int = MAX_LABEL_LINES
) -> list[str]:
    """``text`` broken into lines that fit ``width`` pixels at ``font_size``; at most ``max_lines`` lines, the
    last one ending in an ellipsis when the text is longer (a single word wider than the grid is cut)."""
    font = _font(font_size)
    lines: list[str] = []
    current = ""
    for word in " ".join(text.split()).split(" "):
        candidate = f"{current} {word}".strip()
        if current and _text_width(font, candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _text_width(font, last + " ...") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + " ..."]
    return lines


def labelled_grid(
    rows: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    max_frames: int = 8,
    pad: int = 2,
    font_size: int = FONT_SIZE,
    min_label_width: int = MIN_LABEL_WIDTH,
    min_tile: int = MIN_TILE,
) -> np.ndarray:
    """Tile uint8 videos ``[T, H, W, 3]`` (one per row) into one uint8 image ``[H', W', 3]``.

    Rows of another size are cropped/padded to the first. With ``labels`` (one per row) each row gets its text
    above it (see the module docstring). Raises ValueError for no rows or a label count that differs.
    """
    if not rows:
        raise ValueError("labelled_grid needs at least one video")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"labelled_grid: {len(labels)} labels for {len(rows)} rows; give one label per row")
    scale = max(1, -(-min_tile // min(rows[0].shape[1:3])))  # ceil: the first row's frames set the tile size
    if scale > 1:
        rows = [r.repeat(scale, axis=1).repeat(scale, axis=2) for r in rows]
    height, width = rows[0].shape[1:3]
    cols = min(max_frames, max(r.shape[0] for r in rows))
    tiles_width = cols * (width + pad) - pad
    grid_width = max(tiles_width, min_label_width) if labels is not None else tiles_width
    line_height = font_size + font_size // 3
    texts = [wrap_label(t, grid_width - 2 * pad, font_size) for t in labels] if labels is not None else None
    bands = [len(t) * line_height + pad for t in texts] if texts is not None else [0] * len(rows)
    total = sum(bands) + len(rows) * (height + pad) - pad
    grid = np.full((total, grid_width, 3), 255, dtype=np.uint8)
    tops = []
    top = 0
    for i, frames in enumerate(rows):
        tops.append(top)
        top += bands[i]
        picks = np.linspace(0, frames.shape[0] - 1, min(cols, frames.shape[0])).round().astype(int)
        for j, f in enumerate(picks):
            tile = frames[f, :height, :width]
            left = j * (width + pad)
            grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
        top += height + pad
    if texts is None:
        return grid
    from PIL import Image, ImageDraw

    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for band_top, lines in zip(tops, texts, strict=True):
        for k, line in enumerate(lines):
            draw.text((pad, band_top + k * line_height), line, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def encode_png(image: np.ndarray) -> bytes:
    """A uint8 ``[H, W, 3]`` image as PNG bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_grid_png(image: np.ndarray, path: Any) -> Any:
    """Write a uint8 ``[H, W, 3]`` image as a PNG through a temporary name (never a truncated file); returns
    ``path`` as a ``Path``."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        tmp.write_bytes(encode_png(image))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
