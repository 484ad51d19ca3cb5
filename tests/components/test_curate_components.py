"""plan_shards -> curate_shard (per listing) -> merge_shards: the component functions on a local folder, as the
pipeline chains them on a cluster (2 shards), with the HTML report artifact and an MLflow dataset run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kfp.dsl import HTML
from mlflow import MlflowClient

from components.curate_shard.component import curate_shard
from components.merge_shards.component import merge_shards
from components.plan_shards.component import plan_shards
from opensora_core.data.curate.shards import shard_of
from tests.data.curate.media import make_scene_video

CONFIG = {"scenes": {"min_clip_seconds": 0.5}, "score": None, "filter": None}


def test_plan_curate_merge_components(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    names = [f"v{k}" for k in range(20)]
    by_shard = [[n for n in names if shard_of(str(raw / f"{n}.mp4"), 2) == s] for s in (0, 1)]
    for k, name in enumerate([*by_shard[0][:2], by_shard[1][0]]):  # both shards get files
        make_scene_video(raw / f"{name}.mp4", [12, 12], seed=k)
        (raw / f"{name}.txt").write_text(f"video {k}")
    plan = plan_shards.python_func(
        raw_data_uri=str(raw), num_shards=2, curated_root_uri=str(tmp_path / "curated"), run_id="run-1"
    )
    root = tmp_path / "curated" / "run-1"
    assert plan.root_uri == str(root) and len(plan.listings) == 2
    results = [curate_shard.python_func(listing_uri=listing, config=CONFIG) for listing in plan.listings]
    assert all(Path(r).name == "result.json" for r in results)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # a sqlite store without a server keeps artifacts in ./mlruns
    report = HTML(name="report", uri=str(tmp_path / "report.html"))
    out = merge_shards.python_func(
        results=results, root_uri=plan.root_uri, report=report, config=CONFIG, tracking_uri=uri
    )

    assert out.metadata_uri == str(root / "train.csv") and out.num_clips == 6
    assert out.eval_metadata_uri == ""  # no holdout in CONFIG
    assert out.dataset_sha256 == hashlib.sha256((root / "train.csv").read_bytes()).hexdigest()
    page = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in page and "split-scenes" in page
    assert report.metadata["num_clips"] == 6
    run = MlflowClient(uri).get_run(out.mlflow_run_id)
    assert run.data.metrics["rows"] == 6 and len(run.inputs.dataset_inputs) == 1


def test_plan_shards_needs_a_root_and_input(tmp_path):
    with pytest.raises(ValueError, match="raw_data_uri"):
        plan_shards.python_func(raw_data_uri=" ", num_shards=2, curated_uri=str(tmp_path))
    with pytest.raises(ValueError, match="curated_uri"):
        plan_shards.python_func(raw_data_uri=str(tmp_path), num_shards=2)
    (tmp_path / "raw").mkdir()
    with pytest.raises(RuntimeError, match="lists no videos"):
        plan_shards.python_func(
            raw_data_uri=str(tmp_path / "raw"), num_shards=2, curated_uri=str(tmp_path / "c")
        )
