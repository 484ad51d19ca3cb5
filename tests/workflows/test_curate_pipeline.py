"""The compiled curation pipeline: plan -> ParallelFor(curate_shard) -> merge, with the cluster wiring."""

from __future__ import annotations

import yaml
from kfp import compiler

from workflows.compile import WORKFLOWS_DIR
from workflows.curate import PARALLELISM, make_curate_pipeline


def _load(path) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_curate_pipeline_shards_in_parallel_then_merges():
    spec, executors = _load(WORKFLOWS_DIR / "curate.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"plan-shards", "for-loop-1", "merge-shards"}
    loop = tasks["for-loop-1"]
    assert loop["dependentTasks"] == ["plan-shards"]
    assert loop["iteratorPolicy"]["parallelismLimit"] == PARALLELISM
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert "plan-shards-listings" in items
    assert set(spec["components"]["comp-for-loop-1"]["dag"]["tasks"]) == {"curate-shard"}
    merge = tasks["merge-shards"]
    assert merge["dependentTasks"] == ["for-loop-1", "plan-shards"]
    collected = merge["inputs"]["parameters"]["results"]["taskOutputParameter"]
    assert collected["producerTask"] == "for-loop-1"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {"raw_data_uri", "curated_uri", "num_shards", "config", "mlflow_tracking_uri"} <= set(params)
    assert set(spec["root"]["outputDefinitions"]["parameters"]) == {
        "metadata_uri",
        "eval_metadata_uri",
        "num_clips",
        "dataset_sha256",
        "mlflow_run_id",
    }
    report = spec["components"]["comp-merge-shards"]["outputDefinitions"]["artifacts"]["report"]
    assert report["artifactType"]["schemaTitle"] == "system.HTML"
    for step in ("exec-plan-shards", "exec-curate-shard", "exec-merge-shards"):
        assert executors[step]["secretAsEnv"], step
        assert executors[step]["configMapAsEnv"], step


def test_parallelism_is_a_compile_time_argument(tmp_path):
    path = tmp_path / "c.yaml"
    compiler.Compiler().compile(make_curate_pipeline(parallelism=3), str(path))
    spec, _ = _load(path)
    assert spec["root"]["dag"]["tasks"]["for-loop-1"]["iteratorPolicy"]["parallelismLimit"] == 3
