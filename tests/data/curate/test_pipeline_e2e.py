"""Every stage, in order, on generated long videos with cuts, a duplicate, a bad file, missing captions and a static
clip, to a table VariableVideoTextDataset and its bucket sampler load batches from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import torch

from opensora_core.data.curate.captions import caption
from opensora_core.data.curate.filter import FilterConfig, filter_table
from opensora_core.data.curate.report import dataset_report
from opensora_core.data.curate.scenes import SceneSplitConfig, split_scenes
from opensora_core.data.curate.scores import score
from opensora_core.data.datasets import VariableVideoTextDataset
from opensora_core.data.prepare import main, prepare
from opensora_core.data.sampler import VariableVideoBatchSampler
from tests.data.curate.media import make_scene_video

BUCKETS = {"144p": {1: (1.0, 4), 8: (1.0, 2)}}


def test_raw_folder_to_training_table(tmp_path: Path) -> None:
    raw, work = tmp_path / "raw", tmp_path / "work"
    raw.mkdir()
    size = {"size": 144, "width": 256}
    make_scene_video(raw / "long1.mp4", [23, 31, 26], seed=0, **size)
    (raw / "long1.txt").write_text("  three   shots of texture ")
    make_scene_video(raw / "long2.mp4", [30, 30], seed=1, **size)  # no caption
    shutil.copy(raw / "long1.mp4", raw / "z_copy.mp4")
    (raw / "z_copy.txt").write_text("the same file again")
    make_scene_video(raw / "still.mp4", [30], seed=2, drift=0, **size)
    (raw / "still.txt").write_text("nothing moves")
    (raw / "bad.mp4").write_bytes(b"\x00garbage" * 100)
    (raw / "bad.txt").write_text("broken")

    probed = prepare(raw, work / "meta.csv", allow_missing_captions=True, progress=False)
    assert (probed.num_kept, probed.num_quarantined) == (4, 1)
    clips = split_scenes(
        work / "meta.csv", work / "clips.csv", work / "clips", SceneSplitConfig(min_clip_seconds=0.5)
    )
    assert (clips.num_in, clips.num_out) == (4, 9)  # 3 + 2 + 1 + 3 (z_copy)
    scored = score(work / "clips.csv", work / "scored.csv")
    assert scored.num_out == 9
    kept = filter_table(work / "scored.csv", work / "kept.csv", FilterConfig(scores={"motion": {"min": 0.2}}))
    assert [(Path(p).name, r.split(" (")[0]) for p, r in kept.dropped] == [
        ("still_scene000.mp4", "motion < 0.2")
    ]
    captioned = caption(work / "kept.csv", work / "captioned.csv")
    assert sorted(Path(p).name for p, _ in captioned.dropped) == ["long2_scene000.mp4", "long2_scene001.mp4"]
    assert {r for _, r in captioned.dropped} == {"missing caption"}
    # main() runs the same stage from the command line
    assert main(["dedup", str(work / "captioned.csv"), "-o", str(work / "train.csv")]) == 0
    deduped = json.loads((work / "train.report.json").read_text())
    assert sorted(Path(p).name for p, _ in deduped["dropped"]) == [f"z_copy_scene00{k}.mp4" for k in range(3)]
    assert all("duplicate of" in r and "long1_scene" in r for _, r in deduped["dropped"])

    train = pd.read_csv(work / "train.csv")
    assert sorted(Path(p).name for p in train["path"]) == [f"long1_scene00{k}.mp4" for k in range(3)]
    assert set(train["text"]) == {"three shots of texture"} and set(train["text_len"]) == {4}

    report = dataset_report(work / "train.csv", work / "report", BUCKETS)
    assert report["bucket_config"]["buckets"] == {"144p/8/0.56": 3}
    assert {Path(p).name for p in report["plots"]} >= {
        "hist_duration.png",
        "hist_resolution.png",
        "hist_aspect_ratio.png",
        "hist_fps.png",
        "hist_motion.png",
    }
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"])

    dataset = VariableVideoTextDataset(str(work / "train.csv"), frame_interval=1)
    sampler = VariableVideoBatchSampler(dataset, BUCKETS, num_replicas=1, rank=0, shuffle=True, seed=0)
    batches = list(sampler)
    assert len(batches) == 2 and sum(len(b) for b in batches) == 4  # 3 clips padded to a multiple of 2
    items = [dataset[i] for i in batches[0]]
    video = torch.stack([it["video"] for it in items])
    assert video.shape == (2, 3, 8, 144, 256) and dataset.num_failed == 0
    assert items[0]["text"] == "three shots of texture"
