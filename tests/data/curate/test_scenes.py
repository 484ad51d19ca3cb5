"""Scene split: known cuts are found within one frame; clips by stream copy or re-encode; length rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from opensora_core.data.curate.scenes import (
    SceneSplitConfig,
    detect_scenes,
    index_packets,
    plan_clips,
    split_scenes,
)
from opensora_core.data.prepare import prepare
from opensora_core.data.video_io import read_frames
from tests.data.curate.media import make_scene_video, scene_frames

LENGTHS = [23, 31, 26]  # cuts at frames 23 and 54, 80 frames


def test_detect_scenes_finds_known_cuts(tmp_path: Path) -> None:
    video = make_scene_video(tmp_path / "long.mp4", LENGTHS)
    scenes = detect_scenes(str(video))
    assert len(scenes) == 3
    expected = [(0, 23), (23, 54), (54, 80)]
    for (s, e), (xs, xe) in zip(scenes, expected, strict=True):
        assert abs(s - xs) <= 1 and abs(e - xe) <= 1


def test_plan_clips_edges_min_and_max() -> None:
    cfg = SceneSplitConfig(min_clip_seconds=1.0, max_clip_seconds=2.0, skip_edge_frames=2)
    clips, dropped = plan_clips([(0, 12), (12, 60), (60, 100)], fps=10, cfg=cfg)
    # (0,12) -> 8 frames < 10: dropped; (12,60) -> 14..58 = 44 frames -> 3 pieces of <= 20; (60,100) -> 62..98
    assert dropped == [((0, 12), "scene too short: 8 frames < 10")]
    assert clips == [(14, 29), (29, 43), (43, 58), (62, 80), (80, 98)]
    assert all(e - s <= 20 for s, e in clips)
    with pytest.raises(ValidationError):
        SceneSplitConfig(min_clip_secs=1)


@pytest.mark.parametrize(
    ("stream_copy", "keyint", "cut"), [(True, 1, "copy"), (True, 250, "reencode"), (False, 1, "reencode")]
)
def test_split_scenes_cuts_clips(tmp_path: Path, stream_copy: bool, keyint: int, cut: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    make_scene_video(raw / "long.mp4", LENGTHS, keyint=keyint)
    (raw / "long.txt").write_text("three shots")
    prepare(raw, tmp_path / "meta.csv", progress=False)
    report = split_scenes(
        tmp_path / "meta.csv",
        tmp_path / "clips.csv",
        tmp_path / "clips",
        SceneSplitConfig(min_clip_seconds=0.5, stream_copy=stream_copy),
    )
    df = pd.read_csv(tmp_path / "clips.csv")
    assert (report.num_in, report.num_out) == (1, 3) and report.details["cuts"] == {cut: 3}
    assert df["cut"].tolist() == [cut] * 3 and df["text"].tolist() == ["three shots"] * 3
    bounds = list(zip(df["start_frame"], df["end_frame"], strict=True))
    for (s, e), (xs, xe) in zip(bounds, [(0, 23), (23, 54), (54, 80)], strict=True):
        assert abs(s - xs) <= 1 and abs(e - xe) <= 1
    source = scene_frames(LENGTHS)
    for row in df.to_dict("records"):
        index = index_packets(row["path"])
        assert index.num_frames == row["num_frames"] == row["end_frame"] - row["start_frame"]
        assert index.fps == pytest.approx(10)
        first = read_frames(row["path"], [0])[0].astype(int)
        err = np.abs(first - source[row["start_frame"]].astype(int)).mean()
        assert err < 12, err  # the clip starts on the source frame it claims (lossy codec: small error)


def test_sources_sharing_a_stem_get_distinct_clips(tmp_path: Path) -> None:
    for k, folder in enumerate(("a", "b")):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        make_scene_video(tmp_path / "raw" / folder / "x.mp4", [12, 12], seed=k)
        (tmp_path / "raw" / folder / "x.txt").write_text(f"from {folder}")
    prepare(tmp_path / "raw", tmp_path / "meta.csv", progress=False)
    report = split_scenes(
        tmp_path / "meta.csv", tmp_path / "clips.csv", tmp_path / "clips", SceneSplitConfig(min_clip_seconds=0.5),
        workers=2,
    )  # fmt: skip
    df = pd.read_csv(tmp_path / "clips.csv")
    assert report.num_out == 4 and df["path"].nunique() == 4
    assert len(list((tmp_path / "clips").glob("x-*_scene00[01].mp4"))) == 4
    for text, group in df.groupby("text"):
        assert group["source_path"].str.contains(f"/{text[-1]}/x.mp4").all()
