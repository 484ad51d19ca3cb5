"""Metadata preparation: probing, quarantine of every kind of bad file, incremental re-runs, table inputs."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opensora_core.data.prepare import META_COLUMNS, main, prepare, quarantine_path
from tests.data.media_factory import make_audio_only, make_faststart_video, make_image, make_video, truncate


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    (d / "sub").mkdir(parents=True)
    make_video(d / "good.mp4", num_frames=24, height=48, width=64, fps=8)
    make_video(d / "sub" / "tall.mp4", num_frames=12, height=64, width=32, fps=12)
    make_image(d / "still.png", height=40, width=60)
    (d / "empty.mp4").write_bytes(b"")
    # fixed bytes: in some random buffers FFmpeg detects a container and the probe then reports "no video
    # stream" instead of "unreadable" (about 1 in 200 os.urandom(3000) buffers here)
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    truncate(make_video(tmp_path / "whole.mp4", num_frames=30), d / "cut.mp4", 0.5)
    truncate(make_faststart_video(tmp_path / "fs.mp4", num_frames=24), d / "cut_faststart.mp4", 0.6)
    make_audio_only(d / "audio.mp4")
    (d / "notes.json").write_text("{}")
    make_video(d / "nocaption.mp4", num_frames=8)
    for name in ("good", "sub/tall", "still", "empty", "corrupt", "cut", "cut_faststart", "audio", "notes"):
        (d / f"{name}.txt").write_text(f"caption of {name} with words\n")
    return d


def test_folder_with_good_and_bad_files(media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.csv"
    report = prepare(media_dir, out, workers=2, progress=False)
    df = pd.read_csv(out)
    assert list(df.columns[: len(META_COLUMNS)]) == META_COLUMNS
    kept = {Path(p).name: row for p, row in zip(df["path"], df.to_dict("records"), strict=True)}
    assert set(kept) == {"good.mp4", "tall.mp4", "still.png"}
    good = kept["good.mp4"]
    assert (good["num_frames"], good["fps"], good["height"], good["width"]) == (24, 8.0, 48, 64)
    assert good["aspect_ratio"] == pytest.approx(48 / 64) and good["resolution"] == 48 * 64
    assert good["text"] == "caption of good with words" and good["text_len"] == 5
    assert (kept["tall.mp4"]["num_frames"], kept["tall.mp4"]["fps"]) == (12, 12.0)
    still = kept["still.png"]
    assert (still["num_frames"], still["height"], still["width"]) == (1, 40, 60) and pd.isna(still["fps"])
    assert all(os.path.isabs(p) for p in df["path"])

    q = pd.read_csv(quarantine_path(str(out)))
    assert list(q.columns) == ["path", "reason"]
    reasons = {Path(p).name: r for p, r in zip(q["path"], q["reason"], strict=True)}
    assert set(reasons) == {
        "empty.mp4",
        "corrupt.mp4",
        "cut.mp4",
        "cut_faststart.mp4",
        "audio.mp4",
        "notes.json",
        "nocaption.mp4",
    }
    assert reasons["empty.mp4"] == "zero-byte file"
    assert reasons["corrupt.mp4"].startswith("unreadable")
    assert reasons["cut.mp4"].startswith("unreadable")  # index at the end: the cut file has none
    assert reasons["cut_faststart.mp4"].startswith("truncated: header lists 24 frames")
    assert reasons["audio.mp4"] == "audio-only file (no video stream)"
    assert reasons["notes.json"].startswith("unsupported extension")
    assert reasons["nocaption.mp4"].startswith("missing caption")
    assert (report.num_kept, report.num_quarantined, report.num_probed, report.num_reused) == (3, 7, 8, 0)
    assert report.reasons["zero-byte file"] == 1
    assert report.orphan_captions == 1  # notes.txt: notes.json is no media file
    assert "kept 3, quarantined 7" in str(report)


def test_zero_frame_video_is_quarantined(tmp_path: Path) -> None:
    import av

    d = tmp_path / "raw"
    d.mkdir()
    with av.open(
        str(d / "zero.mkv"), "w"
    ) as c:  # a video track without a single frame (audio keeps it valid)
        video = c.add_stream("libx264", rate=8)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = c.add_stream("aac", rate=16000)
        audio.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        for packet in [*audio.encode(frame), *audio.encode(), *video.encode()]:
            c.mux(packet)
    (d / "zero.txt").write_text("nothing")
    report = prepare(d, tmp_path / "m.csv", progress=False)
    assert (report.num_kept, report.num_quarantined) == (0, 1)
    assert pd.read_csv(report.quarantine)["reason"].tolist() == ["zero frames"]


def test_incremental_rerun_reuses_unchanged_files(media_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.parquet"
    prepare(media_dir, out, progress=False)
    first = pd.read_parquet(out)
    again = prepare(media_dir, out, progress=False)
    assert (again.num_reused, again.num_probed) == (3, 5)  # kept rows reused; quarantined files re-checked
    pd.testing.assert_frame_equal(pd.read_parquet(out), first)
    # a changed file is probed again; a changed caption is refreshed without probing
    make_video(media_dir / "good.mp4", num_frames=40, height=48, width=64, fps=8)
    (media_dir / "still.txt").write_text("a new caption")
    third = prepare(media_dir, out, progress=False)
    assert (third.num_reused, third.num_probed) == (2, 6)
    df = pd.read_parquet(out).set_index(pd.read_parquet(out)["path"].map(lambda p: Path(p).name))
    assert df.loc["good.mp4", "num_frames"] == 40
    assert df.loc["still.png", "text"] == "a new caption" and df.loc["still.png", "text_len"] == 3


def test_table_input_captions_csv_and_tokenizer(media_dir: Path, tmp_path: Path) -> None:
    table = tmp_path / "in.csv"
    pd.DataFrame(
        {"path": ["raw/good.mp4", str(media_dir / "still.png"), "raw/missing.mp4"], "text": ["a b", "c", "d"]}
    ).to_csv(table, index=False)
    report = prepare(table, tmp_path / "out.csv", tokenizer=lambda t: 100 + len(t), progress=False)
    df = pd.read_csv(report.output)
    assert df["text_len"].tolist() == [103, 101]
    assert report.num_quarantined == 1 and "cannot stat" in pd.read_csv(report.quarantine)["reason"][0]

    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(media_dir / "good.mp4", clean / "a.mp4")
    shutil.copy(media_dir / "still.png", clean / "b.png")
    captions = tmp_path / "captions.csv"
    pd.DataFrame({"path": ["a.mp4", "b.png"], "text": ["first clip", "second"]}).to_csv(captions, index=False)
    report = prepare(clean, tmp_path / "c.csv", captions=captions, progress=False)
    assert sorted(pd.read_csv(report.output)["text"]) == ["first clip", "second"]


def test_missing_captions_can_be_allowed_and_cli(media_dir: Path, tmp_path: Path, capsys) -> None:
    report = prepare(media_dir, tmp_path / "m.csv", allow_missing_captions=True, progress=False)
    assert report.num_kept == 4
    assert (
        main([str(media_dir), "--output", str(tmp_path / "cli.csv"), "--workers", "1", "--no-progress"]) == 0
    )
    assert len(pd.read_csv(tmp_path / "cli.csv")) == 3
    with pytest.raises(ValueError, match="must end in .csv"):
        prepare(media_dir, tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError):
        prepare(tmp_path / "nope", tmp_path / "m.csv")
