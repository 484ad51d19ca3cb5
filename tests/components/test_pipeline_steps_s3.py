"""The four pipeline steps in order with every large-data URI on a real S3 server (SeaweedFS).

prepare_data reads ``s3://BUCKET/raw`` and writes the metadata table there; train (local launcher, one CPU
process) reads it and writes checkpoints to ``s3://BUCKET/ckpt``; evaluate samples the ``s3://`` checkpoint and
writes videos and previews to ``s3://BUCKET/eval``; register logs the ``s3://`` checkpoint into MLflow (sqlite
store, artifacts on S3). Credentials and endpoint come from the environment only, as in the cluster.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model, TaskConfig

from components.evaluate.component import evaluate
from components.prepare_data.component import prepare_data
from components.register.component import register
from components.train.component import train
from opensora_core.data.synthetic import generate
from opensora_core.io import storage

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "debug" / "demo.py"
PROMPTS = ["a red square moving left", "a blue circle moving up"]
CLIPS = 6


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_pipeline_steps_on_s3(s3_server, s3_bucket, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from opensora_core.model_registry import ensure_experiment

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("S3_MAX_ATTEMPTS", "3")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(storage.api, "_default_storage", None)  # re-read the environment on first use
    bucket = f"s3://{s3_bucket}"

    # raw synthetic clips + captions, uploaded without their table: prepare_data writes it
    local_raw = tmp_path / "raw"
    generate(local_raw, CLIPS, size=16, num_frames=8, seed=0)
    (local_raw / "meta.csv").unlink()
    storage.upload_dir(local_raw, f"{bucket}/raw")

    # 1. prepare_data
    prepared = prepare_data.python_func(
        raw_data_uri=f"{bucket}/raw",
        metadata=Dataset(uri=str(tmp_path / "metadata.json")),
        prepared_root_uri=f"{bucket}/prepared",
        run_id="s3-run",
        workers=2,
    )
    table = f"{bucket}/prepared/s3-run/meta.csv"  # run-scoped, never inside the raw input
    assert (
        prepared.metadata_uri == table
        and storage.exists(table)
        and not storage.exists(f"{bucket}/raw/meta.csv")
    )
    assert (prepared.num_kept, prepared.num_quarantined) == (CLIPS, 0)
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(prepared.metadata_uri).decode())))
    assert len(rows) == CLIPS and all(r["path"].startswith(f"{bucket}/raw/") for r in rows)

    # 2. train (local launcher: torchrun in this machine, env inherited by the workers)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_experiment(tracking_uri, "s3-pipeline", f"{bucket}/mlflow")
    trained = train.python_func(
        config=str(DEMO_CONFIG),
        metadata_uri=prepared.train_metadata_uri,
        outputs_uri=f"{bucket}/ckpt",
        checkpoint=Model(uri=str(tmp_path / "checkpoint.json")),
        task_config=TaskConfig(),
        cfg_options=["max_steps=2", "batch_size=2", "log_every=1"],
        launcher="local",
        run_id="s3-run",
        gpus_per_node=0,
        procs_per_node=1,
        tracking_uri=tracking_uri,
        experiment="s3-pipeline",
    )
    ckpt = trained.checkpoint_uri
    assert ckpt.startswith(f"{bucket}/ckpt/s3-run/") and ckpt.endswith("global_step2")
    assert trained.global_step == 2
    for name in ("model.safetensors", "ema.safetensors", "_COMPLETE"):
        assert storage.exists(storage.join(ckpt, name)), name
    assert storage.join(ckpt, "ema.safetensors") in storage.list_uri(ckpt)

    # 3. evaluate the s3:// checkpoint, outputs on s3
    evaluated = evaluate.python_func(
        checkpoint_uri=ckpt,
        output_uri=f"{bucket}/eval",
        eval_metrics=Metrics(uri=str(tmp_path / "metrics.json")),
        report=Artifact(uri=str(tmp_path / "report.json")),
        comparison=HTML(uri=str(tmp_path / "comparison.html")),
        prompts=PROMPTS,
        num_sampling_steps=2,
        batch_size=2,
        tracking_uri=tracking_uri,
        experiment="s3-pipeline",
        run_id="s3-run",
        train_run_id=trained.mlflow_run_id,
        val_table=prepared.eval_metadata_uri,
        num_eval_timesteps=2,
        model_name="opensora-s3-steps",
        gate={"thresholds": {"colour_accuracy": 1.01}},  # unreachable: candidate only
    )
    assert evaluated.output_uri == f"{bucket}/eval/s3-run"
    outputs = set(storage.list_uri(evaluated.output_uri))
    for variant in ("ema", "untrained"):
        for i in range(len(PROMPTS)):
            assert f"{evaluated.output_uri}/{variant}/sample_{i}.mp4" in outputs
        assert f"{evaluated.output_uri}/preview/{variant}.png" in outputs
    assert f"{evaluated.output_uri}/comparison.html" in outputs and "val_loss" in evaluated.metrics
    assert json.loads((tmp_path / "report.json").read_text())["global_step"] == 2

    # 4. register the s3:// checkpoint with its lineage
    registered = register.python_func(
        checkpoint_uri=ckpt,
        model_name="opensora-s3-steps",
        registration=Artifact(uri=str(tmp_path / "registration.json")),
        metrics=evaluated.metrics,
        gate_decision=evaluated.gate_decision,
        tracking_uri=tracking_uri,
        experiment="s3-pipeline",
        eval_run_id=evaluated.mlflow_run_id,
        dataset_uri=prepared.metadata_uri,
        dataset_sha256=prepared.dataset_sha256,
        pipeline_run_id="s3-run",
    )
    assert (registered.version, registered.aliases, registered.champion) == ("1", ["candidate"], False)
    client = MlflowClient(tracking_uri)
    mv = client.get_model_version("opensora-s3-steps", "1")
    assert mv.aliases == ["candidate"]
    assert mv.tags["opensora.dataset_uri"] == table
    assert mv.tags["opensora.dataset_sha256"] == prepared.dataset_sha256
    assert mv.run_id == evaluated.mlflow_run_id
    assert mv.tags["opensora.checkpoint_uri"] == ckpt and mv.tags["opensora.global_step"] == "2"
    mlflow_objects = storage.list_uri(f"{bucket}/mlflow")  # run and model artifacts went to S3 too
    assert any(u.endswith("/artifacts/MLmodel") for u in mlflow_objects)
    assert any(u.endswith("/artifacts/preview/ema.png") for u in mlflow_objects)

    # no credentials anywhere in MLflow params or tags
    exp_id = client.get_experiment_by_name("s3-pipeline").experiment_id
    runs = client.search_runs([exp_id])
    assert len(runs) >= 2  # train + evaluate
    texts = [json.dumps(dict(mv.tags))]
    for run in runs:
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags)]
    for text in texts:
        assert s3_server.secret_key not in text and s3_server.access_key not in text
