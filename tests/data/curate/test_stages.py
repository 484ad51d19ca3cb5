"""Score, filter, dedup and stage-output rules on small generated clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from opensora_core.data.curate.dedup import dedup
from opensora_core.data.curate.filter import FilterConfig, why_dropped
from opensora_core.data.curate.scores import AestheticHead, AestheticScorer, motion_score
from opensora_core.data.prepare import OutputExistsError, prepare
from opensora_core.data.video_io import read_frames
from tests.data.curate.media import make_scene_video


def test_motion_score_separates_static_and_moving(tmp_path: Path) -> None:
    still = make_scene_video(tmp_path / "still.mp4", [20], drift=0)
    moving = make_scene_video(tmp_path / "moving.mp4", [20], drift=4)
    assert motion_score(str(still), 20) < 0.2
    assert motion_score(str(moving), 20) > 4 * 256 / 64 * 0.5  # 4 px/frame at 64 px = 16 px at 256, roughly


def test_aesthetic_scorer_with_a_tiny_clip(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    head = AestheticHead(16)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    scorer = AestheticScorer(str(tmp_path / "clip"), str(tmp_path / "head.pth"))
    frames = read_frames(make_scene_video(tmp_path / "v.mp4", [6]), [0, 3])
    got = scorer(frames)
    pixels = scorer.processor(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emb = scorer.model(pixel_values=pixels).image_embeds
        expected = float(head.eval()(emb / emb.norm(dim=-1, keepdim=True)).mean())
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(FileNotFoundError, match="aesthetic head"):
        AestheticScorer(str(tmp_path / "clip"), str(tmp_path / "missing.pth"))


def test_filter_rules_and_config_validation() -> None:
    cfg = FilterConfig.model_validate(
        {"duration": {"min": 2}, "aspect_ratio": {"max": 1.0}, "scores": {"motion": {"min": 0.5}}}
    )
    row = {"num_frames": 30, "fps": 10.0, "height": 48, "width": 64, "resolution": 3072, "aspect_ratio": 0.75}
    assert why_dropped({**row, "motion": 1.0}, cfg) is None
    assert why_dropped({**row, "num_frames": 10, "motion": 1.0}, cfg) == "duration < 2 s (1)"
    assert why_dropped({**row, "aspect_ratio": 1.5, "motion": 1.0}, cfg) == "aspect_ratio > 1 (1.5)"
    assert why_dropped({**row, "motion": 0.1}, cfg) == "motion < 0.5 (0.1)"
    with pytest.raises(ValidationError, match="min_duration"):
        FilterConfig.model_validate({"min_duration": 2})


def test_dedup_finds_a_reencoded_near_duplicate_and_refuses_a_foreign_output(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    make_scene_video(raw / "a.mp4", [24], seed=3, crf=10)
    make_scene_video(raw / "b.mp4", [24], seed=3, crf=30)  # same pictures, other bytes
    make_scene_video(raw / "c.mp4", [24], seed=4)
    for name in "abc":
        (raw / f"{name}.txt").write_text(name)
    prepare(raw, tmp_path / "meta.csv", progress=False)
    report = dedup(tmp_path / "meta.csv", tmp_path / "dedup.csv")
    assert [(Path(p).name, r.split(" of ")[0]) for p, r in report.dropped] == [("b.mp4", "near duplicate")]
    assert sorted(Path(p).name for p in pd.read_csv(tmp_path / "dedup.csv")["path"]) == ["a.mp4", "c.mp4"]
    dedup(tmp_path / "meta.csv", tmp_path / "dedup.csv")  # a re-run of the same stage replaces its own table
    with pytest.raises(OutputExistsError, match="--overwrite"):
        dedup(tmp_path / "dedup.csv", tmp_path / "meta.csv")  # the probe table is not dedup's to replace
    assert len(pd.read_csv(tmp_path / "meta.csv")) == 3
