"""Synthetic captioned clips with machine-checkable captions: ``python -m opensora_core.data.synthetic OUT_DIR --num N``.

Each clip shows one coloured shape (red/green/blue/yellow x square/circle) on black moving left/right/up/down;
its caption is ``"a {colour} {shape} moving {direction}"``. Clips are H.264 mp4 (yuv420p, crf 12 so the
saturated colours survive chroma subsampling), with a same-name ``.txt`` caption, and ``meta.csv`` is written by
:func:`opensora_core.data.prepare.prepare`. Output is deterministic for a seed.

:func:`score_clip` recovers ``(colour, direction)`` from frames (uint8 ``[T, H, W, 3]`` or float ``[3, T, H, W]``
in [-1, 1], e.g. a model's decoded sample) and :func:`parse_caption` parses a caption, so a trained model can be
scored against its prompts.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}
SHAPES = ("square", "circle")
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}  # (dx, dy)
CAPTION_TEMPLATE = "a {colour} {shape} moving {direction}"
_CAPTION_RE = re.compile(
    r"\b(?P<colour>" + "|".join(COLOURS) + r")\s+(?P<shape>" + "|".join(SHAPES) + r")\b.*?\bmoving\s+"
    r"(?P<direction>" + "|".join(DIRECTIONS) + r")\b",
    re.IGNORECASE,
)


def caption(colour: str, shape: str, direction: str) -> str:
    """The caption of a clip."""
    return CAPTION_TEMPLATE.format(colour=colour, shape=shape, direction=direction)


def parse_caption(text: str) -> tuple[str, str, str]:
    """``"a red circle moving left"`` -> ``("red", "circle", "left")``; ValueError for other text."""
    match = _CAPTION_RE.search(text)
    if match is None:
        raise ValueError(f"not a synthetic caption (expected '{CAPTION_TEMPLATE}'): {text!r}")
    return match["colour"].lower(), match["shape"].lower(), match["direction"].lower()


def render_clip(
    colour: str,
    shape: str,
    direction: str,
    size: int = 32,
    num_frames: int = 16,
    rng: np.random.Generator | None = None,
    jitter: int | None = None,
) -> np.ndarray:
    """Frames uint8 ``[T, size, size, 3]`` of one shape moving half the frame width in ``direction``.

    ``jitter`` None places the path anywhere it fits (random start along the motion, random position across
    it); an integer ``k`` centres the path in the frame and shifts it by a random whole offset in ``[-k, k]``
    along and across (clamped to the frame), so that the caption nearly fixes the clip (the local demo's
    setting: a tiny model learns the motion in minutes).
    """
    if colour not in COLOURS or shape not in SHAPES or direction not in DIRECTIONS:
        raise ValueError(
            f"unknown clip spec {(colour, shape, direction)}; colours {list(COLOURS)}, "
            f"shapes {list(SHAPES)}, directions {list(DIRECTIONS)}"
        )
    if size < 16 or num_frames < 2:
        raise ValueError(f"size must be >= 16 and num_frames >= 2, got {size}, {num_frames}")
    rng = rng or np.random.default_rng(0)
    radius = max(2, size // 7)
    travel = size // 2
    lo, hi = radius + 1, size - radius - 2  # centre range that keeps the shape inside the frame
    dx, dy = DIRECTIONS[direction]
    if jitter is None:
        start_along = int(rng.integers(lo, hi - travel + 1))
        across = int(rng.integers(lo, hi + 1))
    else:
        if jitter < 0:
            raise ValueError(f"jitter must be >= 0 pixels or None, got {jitter}")
        centre_start, centre = (lo + hi - travel) // 2, (lo + hi) // 2
        start_along = min(max(centre_start + int(rng.integers(-jitter, jitter + 1)), lo), hi - travel)
        across = min(max(centre + int(rng.integers(-jitter, jitter + 1)), lo), hi)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.zeros((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        along = start_along + round(travel * t / (num_frames - 1))
        if dx:
            cx, cy = (along if dx > 0 else size - 1 - along), across
        else:
            cx, cy = across, (along if dy > 0 else size - 1 - along)
        if shape == "circle":
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        else:
            inside = (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
        frames[t][inside] = COLOURS[colour]
    return frames


def clip_specs(num: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """``num`` (colour, shape, direction) triples cycling through all 32 combinations in a seeded order."""
    combos = list(itertools.product(COLOURS, SHAPES, DIRECTIONS))
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, str]] = []
    while len(out) < num:
        out.extend(combos[i] for i in rng.permutation(len(combos)))
    return out[:num]


def generate(
    out_dir: str | os.PathLike[str],
    num: int,
    size: int = 32,
    num_frames: int = 16,
    fps: int = 8,
    seed: int = 0,
    workers: int = 1,
    jitter: int | None = None,
) -> Any:
    """Write ``num`` clips (``clip_00000.mp4`` + ``.txt``) and ``meta.csv`` into ``out_dir``; returns the PrepareReport.

    ``jitter`` is :func:`render_clip`'s (None: shapes anywhere in the frame)."""
    from opensora_core.data.prepare import prepare
    from opensora_core.data.video_io import write_video

    if size % 2:
        raise ValueError(f"size must be even for yuv420p H.264, got {size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (colour, shape, direction) in enumerate(clip_specs(num, seed)):
        frames = render_clip(colour, shape, direction, size=size, num_frames=num_frames, rng=rng, jitter=jitter)
        write_video(out / f"clip_{i:05d}.mp4", frames, fps=fps, crf=12)
        (out / f"clip_{i:05d}.txt").write_text(caption(colour, shape, direction) + "\n", encoding="utf-8")
    return prepare(out, out / "meta.csv", workers=workers, progress=False)


def _to_frames01(video: Any) -> np.ndarray:
    """uint8 [T,H,W,3] or float [3,T,H,W] in [-1,1] (numpy or torch) -> float [T,H,W,3] in [0,1]."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy() if video.dtype.is_floating_point else video.cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim != 4:
        raise ValueError(f"expected a 4-D clip, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        if arr.shape[-1] != 3:
            raise ValueError(f"uint8 clips must be [T, H, W, 3], got {arr.shape}")
        return arr.astype(np.float32) / 255.0
    if arr.shape[0] != 3:
        raise ValueError(f"float clips must be [3, T, H, W] in [-1, 1], got {arr.shape}")
    return np.clip((arr.transpose(1, 2, 3, 0).astype(np.float32) + 1.0) / 2.0, 0.0, 1.0)


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 spatial mean of [T, H, W, C] (edge-padded): averages out pixel noise before thresholding."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def score_clip(video: Any, threshold: float = 0.5) -> tuple[str, str]:
    """``(colour, direction)`` of a clip: threshold the brightest channel, nearest colour, centroid shift.

    Pixels whose 3x3-smoothed brightest channel exceeds ``threshold`` form the shape; its mean colour picks the
    nearest of :data:`COLOURS`; the shift of the shape's centroid between the first and last frames showing it
    gives the direction. Returns ``("none", "none")`` when no frame shows a shape.
    """
    frames = _to_frames01(video)
    mask = _box3(frames).max(axis=-1) > threshold  # [T, H, W]
    if not mask.any():
        return "none", "none"
    mean = frames[mask].mean(axis=0)
    palette = np.array(list(COLOURS.values()), dtype=np.float32) / 255.0
    colour = list(COLOURS)[int(np.argmin(((palette - mean) ** 2).sum(axis=1)))]
    shown = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if len(shown) < 2:
        return colour, "none"
    first, last = (np.argwhere(mask[t]).mean(axis=0) for t in (shown[0], shown[-1]))  # (y, x)
    dy, dx = last - first
    if abs(dx) >= abs(dy):
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"
    return colour, direction


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m opensora_core.data.synthetic",
        description="Write a synthetic captioned video set (coloured shapes moving in known directions).",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--num", type=int, default=64, help="number of clips")
    parser.add_argument("--size", type=int, default=32, help="frame height and width (even)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes for the metadata probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    report = generate(args.out_dir, args.num, args.size, args.frames, args.fps, args.seed, args.workers)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
