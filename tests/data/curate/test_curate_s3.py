"""Sharded curation with the raw input, the dataset root and the clips on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from opensora_core.data.curate.merge import run_curation
from opensora_core.io import storage
from tests.data.curate.media import make_scene_video


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_curation_on_s3(s3_server, s3_bucket, tmp_path: Path, monkeypatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(storage.api, "_default_storage", None)  # re-read the environment on first use
    bucket = f"s3://{s3_bucket}"
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(3):
        make_scene_video(raw / f"v{k}.mp4", [12, 12, 12], seed=k)
        (raw / f"v{k}.txt").write_text(f"video {k}")
    (raw / "bad.mp4").write_bytes(b"not a video")
    storage.upload_dir(raw, f"{bucket}/raw")

    config = {
        "scenes": {"min_clip_seconds": 0.5},
        "filter": None,
        "holdout": {"eval_fraction": 0.3, "by_source": True},
    }
    root = f"{bucket}/curated"
    report = run_curation(f"{bucket}/raw", root, config, num_shards=2, workers=2, progress=False)

    assert report["table"] == f"{root}/train.csv" and report["eval_table"] == f"{root}/eval.csv"
    train = pd.read_csv(io.BytesIO(storage.read_bytes(report["table"])))
    held = pd.read_csv(io.BytesIO(storage.read_bytes(report["eval_table"])))
    clips = pd.concat([train, held], ignore_index=True)  # whole source videos (3 clips each) on each side
    assert (
        len(clips) == 9
        and len(held) in (3, 6)
        and report["rows"] == 9 - len(held)
        and all(p.startswith(f"{root}/shards/") and "/clips/v" in p for p in clips["path"])
    )
    assert all(storage.exists(p) for p in clips["path"])  # the clips were written to S3
    assert set(clips["cut"]) <= {"copy", "reencode"} and set(clips["text"]) == {
        f"video {k}" for k in range(3)
    }
    stored = json.loads(storage.read_bytes(f"{root}/report/curation.json"))
    assert stored["rows"] == 9 - len(held) and {s["stage"]: s["drops"] for s in stored["stages"]}[
        "probe"
    ] == {"unreadable": 1}
    assert storage.exists(f"{root}/report/report.html") and storage.exists(f"{root}/report/hist_motion.png")

    again = run_curation(f"{bucket}/raw", root, config, num_shards=2, workers=1, progress=False)
    assert all(
        s["cached_shards"] == s["shards"] for s in again["stages"] if s["stage"] in ("probe", "split-scenes")
    )
