"""The synthetic caption metric is exact on ground-truth clips and at chance on shuffled captions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from opensora_core.data.synthetic import COLOURS, DIRECTIONS, clip_specs, generate, parse_caption, render_clip
from opensora_core.eval import (
    CHANCE_COLOUR,
    is_synthetic_prompt,
    score_caption_agreement,
    synthetic_prompts,
    video_statistics,
)
from opensora_core.sample.writer import read_sample


def _clips(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    videos, prompts = [], []
    for colour, shape, direction in clip_specs(n, seed):
        videos.append(render_clip(colour, shape, direction, size=size, num_frames=8, rng=rng))
        prompts.append(f"a {colour} {shape} moving {direction}")
    return videos, prompts


def test_synthetic_prompts_are_balanced():
    prompts = synthetic_prompts()
    assert len(prompts) == 32 == len(set(prompts))
    parsed = [parse_caption(p) for p in prompts]
    for colour in COLOURS:
        assert sorted(d for c, _, d in parsed if c == colour) == sorted(list(DIRECTIONS) * 2)
    assert len(synthetic_prompts(["square"])) == 16
    with pytest.raises(ValueError, match="subset"):
        synthetic_prompts(["triangle"])


@pytest.mark.parametrize("size", [16, 32])
def test_ground_truth_frames_score_100_percent(size):
    videos, prompts = _clips(64, size)
    result = score_caption_agreement(videos, prompts)
    assert result.num_clips == 64
    assert result.colour_accuracy == result.direction_accuracy == result.joint_accuracy == 1.0
    assert result.no_shape_fraction == 0.0


def test_ground_truth_mp4_files_score_100_percent(tmp_path):
    """Clips decoded back from H.264 files (what evaluation scores), at the demo's 16 px."""
    generate(tmp_path, 32, size=16, num_frames=8, seed=3)
    meta = pd.read_csv(tmp_path / "meta.csv")
    videos = [read_sample(p) for p in meta["path"]]
    result = score_caption_agreement(videos, list(meta["text"]))
    assert (result.colour_accuracy, result.direction_accuracy) == (1.0, 1.0)


def test_ground_truth_with_noise_and_float_layout():
    videos, prompts = _clips(32, 16, seed=1)
    rng = np.random.default_rng(0)
    noisy = []
    for v in videos:
        x = v.astype(np.float32) / 127.5 - 1.0 + rng.normal(0, 0.15, v.shape).astype(np.float32)
        noisy.append(np.clip(x, -1, 1).transpose(3, 0, 1, 2))  # [3, T, H, W] in [-1, 1]
    result = score_caption_agreement(noisy, prompts)
    assert result.colour_accuracy == 1.0
    assert result.direction_accuracy == 1.0


def test_shuffled_captions_score_near_chance():
    videos, prompts = _clips(256, 16, seed=2)
    shuffled = list(np.random.default_rng(7).permutation(prompts))
    result = score_caption_agreement(videos, shuffled)
    assert abs(result.colour_accuracy - CHANCE_COLOUR) < 0.1
    assert abs(result.direction_accuracy - 0.25) < 0.1
    assert result.joint_accuracy < 0.15


def test_blank_and_noise_videos():
    blank = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    result = score_caption_agreement([blank], ["a red square moving left"])
    assert result.colour_accuracy == 0.0 and result.no_shape_fraction == 1.0
    verdict = result.verdicts[0].as_dict()
    assert verdict["got_colour"] == "none" and verdict["colour_ok"] is False
    stats = video_statistics([blank, render_clip("red", "square", "left", 16, 8)])
    assert stats["valid_fraction"] == 0.5
    assert stats["temporal_change"] > 0


def test_video_statistics_rejects_non_finite():
    x = np.zeros((3, 4, 8, 8), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    assert video_statistics([x])["valid_fraction"] == 0.0


def test_bad_inputs_name_the_problem():
    videos, prompts = _clips(2, 16)
    with pytest.raises(ValueError, match="2 videos but 1 prompts"):
        score_caption_agreement(videos, prompts[:1])
    with pytest.raises(ValueError, match="prompt 1 cannot be scored"):
        score_caption_agreement(videos, [prompts[0], "a dog running on a beach"])
    assert is_synthetic_prompt("a blue circle moving up")
    assert not is_synthetic_prompt("a dog running on a beach")
