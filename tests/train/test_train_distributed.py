"""Integration: torchrun (2 gloo ranks) resume after SIGKILL, MLflow outage, s3:// checkpoints."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from opensora_core import checkpoint as ckpt
from opensora_core.config import load_config
from opensora_core.train import train
from tests.train.conftest import (
    TINY_OVERRIDES,
    TINY_TRAIN,
    kill_tree,
    tiny_cli_overrides,
    torchrun_command,
    train_env,
)

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 300


def _run(args: list[str], log: Path, **env: str) -> subprocess.CompletedProcess:
    with open(log, "w") as f:
        proc = subprocess.run(
            torchrun_command(2, args),
            env=train_env(**env),
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT,
            cwd=str(TINY_TRAIN.parents[2]),
        )
    return proc


def _wait_for(log: Path, text: str, count: int, proc: subprocess.Popen, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if content.count(text) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"run exited ({proc.returncode}) before printing {text!r}:\n{content[-3000:]}"
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {text!r} in {log}")


def _final(outputs: Path) -> Path:
    refs = ckpt.list_checkpoints(str(next(outputs.glob("*-STDiT-XL-2"))))
    return Path(refs[-1].uri)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_safetensors(path)


def test_sigkill_then_resume_equals_uninterrupted_run(tiny_dataset: str, tmp_path: Path):
    # batch 1 x 2 ranks over 16 clips: 8 steps per epoch, so step 4 is mid-epoch (sampler resume)
    options = ["--cfg-options", *tiny_cli_overrides(tiny_dataset, max_steps=8, ckpt_every=4, batch_size=1)]
    # A: 8 steps uninterrupted, run next to B's first part (saves a launch's worth of wall time)
    log_a = tmp_path / "a.log"
    with open(log_a, "w") as f:
        proc_a = subprocess.Popen(
            torchrun_command(2, [str(TINY_TRAIN), "--outputs", str(tmp_path / "a"), *options]),
            env=train_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=str(TINY_TRAIN.parents[2]),
        )
    # B: checkpoint at step 4, keep training, SIGKILL every process after step 5
    log_b = tmp_path / "b1.log"
    with open(log_b, "w") as f:
        proc = subprocess.Popen(
            torchrun_command(2, [str(TINY_TRAIN), "--outputs", str(tmp_path / "b"), *options]),
            env=train_env(OPENSORA_DEBUG_PAUSE_AFTER_STEP="5"),
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=str(TINY_TRAIN.parents[2]),
        )
    try:
        _wait_for(log_b, "PAUSED after step 5", 2, proc)
    finally:
        kill_tree(proc)
    try:
        assert proc_a.wait(timeout=RUN_TIMEOUT) == 0, log_a.read_text()[-3000:]
    finally:
        if proc_a.poll() is None:
            kill_tree(proc_a)
    exp_b = next((tmp_path / "b").glob("*-STDiT-XL-2"))
    assert [r.global_step for r in ckpt.list_checkpoints(str(exp_b))] == [4]

    b = _run(
        [str(TINY_TRAIN), "--outputs", str(tmp_path / "b"), "--load", "latest", *options], tmp_path / "b2.log"
    )
    log = (tmp_path / "b2.log").read_text()
    assert b.returncode == 0, log[-3000:]
    assert "resumed at epoch 0, step 4, global step 4" in log

    final_a, final_b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert final_a.name == final_b.name == "epoch0-global_step8"
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = _tensors(final_a / name), _tensors(final_b / name)
        assert ta.keys() == tb.keys()
        assert [k for k in ta if not torch.equal(ta[k], tb[k])] == [], name
    opt_a = torch.load(final_a / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(final_b / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_a[k]["exp_avg_sq"], opt_b[k]["exp_avg_sq"]) for k in opt_a)
    assert sorted(p.name for p in (final_b / "rng").iterdir()) == ["rank00000.pt", "rank00001.pt"]


def test_mlflow_outage_mid_run(mlflow_server, tiny_dataset: str, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    tracking = {
        "backend": "mlflow",
        "uri": mlflow_server.uri,
        "experiment": "train-outage",
        "request_timeout": 1.0,
        "system_metrics_interval_s": 0.2,  # MLflow's monitor: samples before, during and after the outage
    }
    options = tiny_cli_overrides(tiny_dataset, max_steps=24, ckpt_every=12, tracking=tracking)
    log = tmp_path / "run.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            torchrun_command(
                2, [str(TINY_TRAIN), "--outputs", str(tmp_path / "out"), "--cfg-options", *options]
            ),
            env=train_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=str(TINY_TRAIN.parents[2]),
        )
    try:
        _wait_for(log, "step=3 ", 1, proc)
        mlflow_server.stop()  # outage while training
        _wait_for(log, "step=8 ", 1, proc)
    finally:
        mlflow_server.start()
    assert proc.wait(timeout=RUN_TIMEOUT) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "unreachable" in text  # the outage was noticed and logged, training went on

    final = _final(tmp_path / "out")
    run_id = json.loads((final / "running_states.json").read_text())["mlflow_run_id"]
    assert run_id
    client = MlflowClient(mlflow_server.uri)
    steps = {m.step for m in client.get_metric_history(run_id, "loss")}
    assert steps == set(range(1, 25))  # including the steps logged during the outage
    for metric in (
        "grad_norm",
        "lr",
        "samples_per_s",
        "tokens_per_s",
        "mfu",
        "system/cpu_utilization_percentage",
    ):
        assert client.get_metric_history(run_id, metric), metric
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.type"] == "STDiT-XL/2"
    assert run.data.params["dataset.data_path"] == tiny_dataset
    assert {"config_hash", "dataset_uri", "git_commit"} <= set(run.data.tags)
    assert "config.py" in {a.path for a in client.list_artifacts(run_id)}

    # resuming continues the same MLflow run (here with one process: replicated optimizer state)
    cfg = load_config(
        TINY_TRAIN,
        overrides={
            **TINY_OVERRIDES,
            "dataset.data_path": tiny_dataset,
            "outputs": str(tmp_path / "out"),
            "load": "latest",
            "max_steps": 26,
            "tracking": tracking,
        },
    )
    result = train(cfg)
    assert result.mlflow_run_id == run_id and result.global_step == 26
    assert {m.step for m in client.get_metric_history(run_id, "loss")} >= {25, 26}


def test_s3_checkpoints_save_resume_and_export(s3_server, s3_bucket, tiny_config, tmp_path, monkeypatch):
    from opensora_core.io import storage
    from opensora_core.train.export import export_checkpoint

    monkeypatch.setattr(storage.api, "_default_storage", storage.Storage(s3_server.storage_config()))
    monkeypatch.setenv("OPENSORA_CACHE_DIR", str(tmp_path / "cache"))
    outputs = f"s3://{s3_bucket}/runs"
    first = train(tiny_config(outputs=outputs, max_steps=2, ckpt_every=1, keep_last_n=1))
    assert first.checkpoint_dir == f"{outputs}/000-STDiT-XL-2/epoch0-global_step2"
    keys = storage.list_uri(first.checkpoint_dir)
    assert f"{first.checkpoint_dir}/_COMPLETE" in keys
    assert f"{first.checkpoint_dir}/model.safetensors" in keys
    assert not storage.exists(f"{outputs}/000-STDiT-XL-2/epoch0-global_step1/_COMPLETE")  # retention

    # an interrupted upload (objects but no marker) never counts
    storage.write_bytes(f"{outputs}/000-STDiT-XL-2/epoch0-global_step9/model.safetensors", b"partial")
    assert ckpt.find_latest_checkpoint(outputs, "STDiT-XL/2").global_step == 2

    resumed = train(tiny_config(outputs=outputs, max_steps=3, ckpt_every=0, load="latest"))
    assert resumed.global_step == 3 and resumed.checkpoint_dir.endswith("epoch0-global_step3")
    out = export_checkpoint(resumed.checkpoint_dir, str(tmp_path / "model.pth"), ema=True)
    state = torch.load(out, weights_only=True)
    assert "x_embedder.proj.weight" in state
