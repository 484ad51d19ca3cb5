"""Synthetic set: captions parse, the scorer is 100% right on ground-truth clips (also with noise), determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opensora_core.data.synthetic import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    caption,
    clip_specs,
    generate,
    main,
    parse_caption,
    render_clip,
    score_clip,
)
from opensora_core.data.video_io import read_video_full


def test_parse_caption() -> None:
    assert parse_caption("a red circle moving left") == ("red", "circle", "left")
    assert parse_caption("A Yellow square, moving down.") == ("yellow", "square", "down")
    for c in COLOURS:
        for s in SHAPES:
            for d in DIRECTIONS:
                assert parse_caption(caption(c, s, d)) == (c, s, d)
    with pytest.raises(ValueError, match="not a synthetic caption"):
        parse_caption("a purple cat sleeping")


def test_generated_set_scores_100_percent(tmp_path: Path) -> None:
    report = generate(tmp_path / "set", num=32, size=32, num_frames=16, fps=8, seed=3)
    assert (report.num_kept, report.num_quarantined) == (32, 0)
    meta = pd.read_csv(tmp_path / "set" / "meta.csv")
    assert set(meta["num_frames"]) == {16} and set(meta["fps"]) == {8.0} and set(meta["height"]) == {32}
    assert len({tuple(parse_caption(t)) for t in meta["text"]}) == 32  # every combination once
    rng = np.random.default_rng(0)
    for path, text in zip(meta["path"], meta["text"], strict=True):
        frames, _ = read_video_full(path)  # decoded H.264 (yuv420p) frames
        colour, _, direction = parse_caption(text)
        assert score_clip(frames) == (colour, direction), text
        as_model_output = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0  # [3, T, H, W]
        noisy = as_model_output + 0.3 * torch.from_numpy(
            rng.standard_normal(as_model_output.shape).astype(np.float32)
        )
        assert score_clip(noisy) == (colour, direction), text


@pytest.mark.parametrize("size", [16, 24, 64])
def test_scorer_on_rendered_clips_of_other_sizes(size: int) -> None:
    rng = np.random.default_rng(size)
    for c in COLOURS:
        for s in SHAPES:
            for d in DIRECTIONS:
                assert score_clip(render_clip(c, s, d, size=size, num_frames=8, rng=rng)) == (c, d)
    assert score_clip(np.zeros((4, 16, 16, 3), np.uint8)) == ("none", "none")


def test_deterministic_by_seed(tmp_path: Path) -> None:
    assert clip_specs(40, seed=1) == clip_specs(40, seed=1) != clip_specs(40, seed=2)
    a = render_clip("blue", "circle", "up", rng=np.random.default_rng(5))
    b = render_clip("blue", "circle", "up", rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert main([str(tmp_path / "x"), "--num", "4", "--size", "16", "--frames", "8"]) == 0
    generate(tmp_path / "y", num=4, size=16, num_frames=8)
    for i in range(4):
        name = f"clip_{i:05d}.mp4"
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes()
    with pytest.raises(ValueError, match="even"):
        generate(tmp_path / "z", num=1, size=17)


def _centroids(frames: np.ndarray) -> np.ndarray:
    """(y, x) centroid of the lit pixels of each frame, [T, 2]."""
    return np.stack([np.argwhere(f.max(axis=-1) > 0).mean(axis=0) for f in frames])


@pytest.mark.parametrize("size", [16, 32])
def test_jitter_keeps_the_path_in_the_middle(size: int) -> None:
    rng = np.random.default_rng(0)
    for d in DIRECTIONS:
        centred = _centroids(render_clip("red", "square", d, size=size, num_frames=8, jitter=0, rng=rng))
        again = _centroids(render_clip("red", "square", d, size=size, num_frames=8, jitter=0, rng=rng))
        np.testing.assert_array_equal(centred, again)  # jitter 0: the caption fixes the clip
        across = centred[:, 0] if d in ("left", "right") else centred[:, 1]
        assert abs(across.mean() - (size - 1) / 2) <= 1.0, (d, across)
        for _ in range(8):
            clip = render_clip("red", "square", d, size=size, num_frames=8, jitter=1, rng=rng)
            assert np.abs(_centroids(clip) - centred).max() <= 1.0
            assert score_clip(clip) == ("red", d)
    with pytest.raises(ValueError, match="jitter"):
        render_clip("red", "square", "up", jitter=-1)
