"""Score, filter, dedup and stage-output rules on small generated clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from opensora_core.data.curate import scores
from opensora_core.data.curate.common import sample_frames, sample_indices
from opensora_core.data.curate.dedup import dedup
from opensora_core.data.curate.filter import FilterConfig, filter_table, why_dropped
from opensora_core.data.curate.report import dataset_report
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
    from transformers.models.clip import CLIPImageProcessorPil

    from opensora_core.models.tiny import save_tiny_clip_model

    folder = save_tiny_clip_model(
        tmp_path / "clip"
    )  # loaded through models.clip.load_clip, as evaluation does
    torch.manual_seed(0)
    head = AestheticHead(32)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    scorer = AestheticScorer(str(folder), str(tmp_path / "head.pth"))
    frames = read_frames(make_scene_video(tmp_path / "v.mp4", [6]), [0, 3])
    got = scorer(frames)
    pixels = CLIPImageProcessorPil.from_pretrained(folder)(images=list(frames), return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        emb = scorer.clip.model.get_image_features(pixel_values=pixels).pooler_output
        expected = float(head.eval()(emb / emb.norm(dim=-1, keepdim=True)).mean())
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-5)
    with pytest.raises(FileNotFoundError, match="aesthetic head"):
        AestheticScorer(str(tmp_path / "clip"), str(tmp_path / "missing.pth"))


def test_text_match_column_and_a_filter_on_it(tmp_path: Path) -> None:
    from opensora_core.models.clip import load_clip
    from opensora_core.models.tiny import save_tiny_clip_model

    raw = tmp_path / "raw"
    raw.mkdir()
    captions = {"a": "a cat sleeps in the sun", "b": "the camera pans over a city at night", "c": None}
    for seed, (name, text) in enumerate(captions.items()):
        make_scene_video(raw / f"{name}.mp4", [12], seed=seed)
        if text:
            (raw / f"{name}.txt").write_text(text)
    prepare(raw, tmp_path / "meta.csv", allow_missing_captions=True, progress=False)
    folder = str(save_tiny_clip_model(tmp_path / "clip"))
    torch.save(AestheticHead(32).state_dict(), tmp_path / "head.pth")
    scores._clip.cache_clear()
    report = scores.score(
        tmp_path / "meta.csv",
        tmp_path / "scored.csv",
        motion=False,
        aesthetic_clip=folder,
        aesthetic_head=str(tmp_path / "head.pth"),
        progress=False,
        text_match_clip=folder,
    )
    assert report.num_out == 3 and scores._clip.cache_info().currsize == 1  # one CLIP for both scores
    table = pd.read_csv(tmp_path / "scored.csv").set_index(pd.Series(["a", "b", "c"]))
    clip = load_clip("debug/tiny-clip", "cpu")  # the same weights as the saved folder
    for name in ("a", "b"):
        path = table.loc[name, "path"]
        frames = sample_frames(path, sample_indices(int(table.loc[name, "num_frames"]), 3))
        expected = clip.text_frame_score(frames, captions[name])
        assert table.loc[name, "text_match"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert np.isnan(table.loc["c", "text_match"])  # no caption, no match score
    low, high = sorted(table.loc[["a", "b"], "text_match"])
    assert low < high
    kept = filter_table(
        tmp_path / "scored.csv", tmp_path / "kept.csv", {"scores": {"text_match": {"min": (low + high) / 2}}}
    )
    reasons = {Path(p).stem: r for p, r in kept.dropped}
    assert reasons.keys() == {table.index[table["text_match"] == low][0], "c"}
    assert reasons["c"] == "text_match is missing"
    assert pd.read_csv(tmp_path / "kept.csv")["text_match"].tolist() == pytest.approx([high])
    plots = dataset_report(tmp_path / "scored.csv", tmp_path / "report")["plots"]
    assert any(p.endswith("hist_text_match.png") for p in plots)


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
