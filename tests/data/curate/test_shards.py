"""Sharded curation on 2 shards with 2 worker processes: plan -> per-shard stages -> merge (dedup across shards),
the merged report (HTML with inlined PNGs), and the per-shard stage cache on re-runs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from opensora_core.data.curate.merge import rule_kind, run_curation
from opensora_core.data.curate.shards import CurateConfig, plan_shards, shard_of
from opensora_core.data.prepare import OutputExistsError
from tests.data.curate.media import make_scene_video

BUCKETS = {"144p": {1: (1.0, 4), 8: (1.0, 2)}}
SIZE = {"size": 144, "width": 256}
CONFIG = {
    "scenes": {"min_clip_seconds": 0.5},
    "filter": {"scores": {"motion": {"min": 0.2}}},
    "bucket_config": BUCKETS,
}


def _stages(report: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in report["stages"]}


def _raw(tmp_path: Path) -> tuple[Path, str]:
    """long1 (3 shots, captioned), its byte copy in the other shard, still (1 static shot), long2 (2 shots, no
    caption), a bad file and an unsupported extension."""
    raw = tmp_path / "raw"
    raw.mkdir()
    make_scene_video(raw / "long1.mp4", [23, 31, 26], seed=0, **SIZE)
    (raw / "long1.txt").write_text("three shots of texture")
    copy = next(
        f"{n}.mp4"
        for n in (f"z{k}_copy" for k in range(20))  # after long1 in path order: the copy is the one dropped
        if shard_of(str(raw / f"{n}.mp4"), 2) != shard_of(str(raw / "long1.mp4"), 2)
    )
    shutil.copy(raw / "long1.mp4", raw / copy)
    (raw / copy).with_suffix(".txt").write_text("the same file again")
    make_scene_video(raw / "still.mp4", [30], seed=2, drift=0, **SIZE)
    (raw / "still.txt").write_text("nothing moves")
    make_scene_video(raw / "long2.mp4", [30, 30], seed=1, **SIZE)
    (raw / "bad.mp4").write_bytes(b"\x00garbage" * 100)
    (raw / "notes.doc").write_text("not media")
    return raw, copy


def test_two_shards_merge_dedup_report_and_cache(tmp_path: Path) -> None:
    raw, copy = _raw(tmp_path)
    root = tmp_path / "curated"
    report = run_curation(raw, root, CONFIG, num_shards=2, workers=2, progress=False)

    assert report["num_shards"] == 2
    stages = _stages(report)
    assert list(stages) == ["list", "probe", "split-scenes", "score", "filter", "caption", "dedup"]
    assert (stages["list"]["num_in"], stages["list"]["num_out"]) == (6, 5)
    assert stages["probe"]["shards"] == 2 and stages["probe"]["drops"] == {"unreadable": 1}
    assert (stages["split-scenes"]["num_in"], stages["split-scenes"]["num_out"]) == (4, 9)
    assert stages["filter"]["drops"] == {"motion < 0.2": 1}
    assert stages["caption"]["drops"] == {"missing caption": 2}  # long2's two clips
    # the copy of long1 sits in the other shard: only the merged dedup can see it
    assert stages["dedup"]["drops"] == {"exact duplicate": 3}
    dropped = {Path(p).name: (stage, rule) for p, stage, rule in report["dropped"]}
    assert dropped["notes.doc"][0] == "list" and dropped["bad.mp4"][0] == "probe"
    assert {n for n, (s, _) in dropped.items() if s == "dedup"} == {
        f"{Path(copy).stem}_scene00{k}.mp4" for k in range(3)
    }

    train = pd.read_csv(report["table"])
    assert report["table"] == str(root / "train.csv") and report["rows"] == len(train) == 3
    assert sorted(Path(p).name for p in train["path"]) == [f"long1_scene00{k}.mp4" for k in range(3)]
    assert report["dataset"]["bucket_config"]["buckets"] == {"144p/8/0.56": 3}
    html = Path(report["html"]).read_text()
    assert html.count("src='data:image/png;base64,") == len(report["dataset"]["plots"]) >= 5
    assert "144p/8/0.56" in html and "exact duplicate" in html
    stored = json.loads((root / "report" / "curation.json").read_text())
    assert (
        stored["rows"] == 3
        and stored["sha256"] == hashlib.sha256((root / "train.csv").read_bytes()).hexdigest()
    )

    # same input, same config: every shard stage comes from the cache
    again = _stages(run_curation(raw, root, CONFIG, num_shards=2, workers=1, progress=False))
    for stage in ("probe", "split-scenes", "score", "filter", "caption"):
        assert again[stage]["cached_shards"] == 2, stage

    # a new file re-runs only its shard; a new filter threshold re-runs filter and caption only
    make_scene_video(raw / "new.mp4", [20, 20], seed=5, **SIZE)
    (raw / "new.txt").write_text("a new video")
    grown = _stages(run_curation(raw, root, {**CONFIG, "filter": {}}, num_shards=2, progress=False))
    assert grown["probe"]["cached_shards"] == 1 and grown["split-scenes"]["cached_shards"] == 1
    assert grown["filter"]["cached_shards"] == 0 and grown["filter"]["drops"] == {}
    assert grown["caption"]["num_out"] == 3 + 3 + 1 + 2  # long1, its copy, still, new
    assert grown["dedup"]["num_out"] == 3 + 1 + 2


def test_plan_refuses_a_foreign_shards_folder_and_bad_config(tmp_path: Path) -> None:
    raw, _ = _raw(tmp_path)
    (tmp_path / "root" / "shards").mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="plan.json"):
        plan_shards(raw, tmp_path / "root", 2)
    with pytest.raises(ValueError, match="num_shards"):
        plan_shards(raw, tmp_path / "other", 0)
    with pytest.raises(ValueError, match="extra"):
        CurateConfig.model_validate({"scenes": {"treshold": 3}})


def test_rule_kind() -> None:
    assert rule_kind("motion < 0.2 (0.03)") == "motion < 0.2"
    assert rule_kind("exact duplicate of /a/b.mp4") == "exact duplicate"
    assert rule_kind("probe failed: InvalidDataError: x") == "probe failed"


def test_curate_cli_logs_the_dataset_run_to_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from opensora_core.data.prepare import main
    from opensora_core.io.dataset_run import log_dataset_run

    raw = tmp_path / "raw"
    raw.mkdir()
    make_scene_video(raw / "a.mp4", [20, 20], seed=0)
    (raw / "a.txt").write_text("two shots")
    (raw / "b.mp4").write_bytes(b"broken")
    root = tmp_path / "curated"
    config = tmp_path / "curate.json"
    config.write_text(json.dumps({"scenes": {"min_clip_seconds": 0.5}, "filter": None, "dedup": None}))
    assert main(["curate", str(raw), "--root", str(root), "--shards", "2", "--config", str(config)]) == 0
    curation = json.loads((root / "report" / "curation.json").read_text())
    assert curation["table"] == str(root / "merged.csv") and curation["rows"] == 2

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = log_dataset_run(curation, uri, "data", artifact_location=str(tmp_path / "artifacts"))
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics["rows"] == 2 and run.data.metrics["probe/dropped"] == 1
    assert run.data.metrics["split-scenes/rows_out"] == 2
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.source_type == "local" and str(root / "merged.csv") in logged.dataset.source
    assert json.loads(logged.dataset.profile)["num_rows"] == 2
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"
    names = {Path(a.path).name for a in MlflowClient(uri).list_artifacts(run_id, "report")}
    assert {"report.html", "curation.json", "hist_duration.png", "hist_motion.png"} <= names


def test_a_shard_with_no_usable_video_flows_through_every_stage(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bad.mp4").write_bytes(b"broken")
    report = run_curation(raw, tmp_path / "root", CONFIG, num_shards=1, progress=False)
    stages = _stages(report)
    assert report["rows"] == 0 and stages["probe"]["drops"] == {"unreadable": 1}
    assert [stages[s]["num_out"] for s in ("split-scenes", "score", "filter", "caption")] == [0, 0, 0, 0]
    scored = pd.read_csv(tmp_path / "root" / "shards" / "00000" / "scored.csv")
    assert "motion" in scored.columns and "source_path" in scored.columns
