"""evaluate and register components: python functions on local paths against a real MLflow server."""

from __future__ import annotations

import json

import pytest
from kfp.dsl import HTML, Artifact, Metrics

from components.evaluate.component import evaluate
from components.register.component import register
from tests.eval.tiny_checkpoint import make_tiny_checkpoint

PROMPTS = ["a red square moving left", "a blue circle moving up"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), seed=3)


def test_evaluate_without_tracking(checkpoint, tmp_path, monkeypatch):
    from opensora_core.data.synthetic import generate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    generate(tmp_path / "held", 2, size=16, num_frames=8, seed=0)
    metrics_art = Metrics(uri=str(tmp_path / "metrics.json"))
    report_art = Artifact(uri=str(tmp_path / "report.json"))
    out = evaluate.python_func(
        checkpoint_uri=str(checkpoint),
        output_uri=str(tmp_path / "eval"),
        eval_metrics=metrics_art,
        report=report_art,
        comparison=HTML(uri=str(tmp_path / "comparison.html")),
        prompts=PROMPTS,
        num_sampling_steps=2,
        run_id="r1",
        val_table=str(tmp_path / "held" / "meta.csv"),
        num_eval_timesteps=2,
        clip_model="debug/tiny-clip",
    )
    assert out.output_uri == str(tmp_path / "eval" / "r1") and out.mlflow_run_id == ""
    assert metrics_art.metadata["clip_score"] == out.metrics["clip_score"]  # CLIPScore reaches the KFP UI
    for variant in ("ema", "untrained"):
        assert (tmp_path / "eval" / "r1" / variant / "sample_1.mp4").is_file()
        assert (tmp_path / "eval" / "r1" / "preview" / f"{variant}.png").is_file()
    import numpy as np
    from PIL import Image

    preview = np.asarray(Image.open(tmp_path / "eval" / "r1" / "preview" / "ema.png"))
    assert preview.shape[1] >= 384 and (preview[:12] < 80).any()  # the first prompt is written above its row
    assert set(out.metrics) >= {"colour_accuracy", "untrained/colour_accuracy", "colour_accuracy_gain"}
    assert metrics_art.metadata["colour_accuracy"] == out.metrics["colour_accuracy"]
    assert json.loads((tmp_path / "report.json").read_text())["global_step"] == 7
    assert out.metrics["val_loss_improvement"] == 0.0  # random weights: no better than the untrained model
    assert {"val_loss", "val_loss/t0333", "val_loss/t0667", "val_loss/bucket/16x16x4"} <= set(
        out.metrics
    )  # rflow times
    report = json.loads((tmp_path / "eval" / "r1" / "report.json").read_text())
    assert len(report["val_loss"]["ema"]["per_sample"]) == 2 and len(report["eval_config_sha256"]) == 64
    # no registry: absolute thresholds only, and random weights do not pass them
    assert out.gate_decision["passed"] is False and out.model_name == "opensora-stdit-16"
    assert "no champion yet" in (tmp_path / "comparison.html").read_text()
    assert "val_loss/t0333" not in metrics_art.metadata  # KFP gets the headline numbers only


def test_evaluate_data_parallel_equals_one_process(checkpoint, tmp_path, monkeypatch):
    """processes=2 (the pipeline's eval_gpus) runs torchrun ranks (gloo here): same metrics, same videos."""
    from opensora_core.data.synthetic import generate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    generate(tmp_path / "held", 3, size=16, num_frames=8, seed=0)
    outs = {}
    for processes in (1, 2):
        outs[processes] = evaluate.python_func(
            checkpoint_uri=str(checkpoint),
            output_uri=str(tmp_path / f"eval{processes}"),
            eval_metrics=Metrics(uri=str(tmp_path / f"m{processes}.json")),
            report=Artifact(uri=str(tmp_path / f"r{processes}.json")),
            comparison=HTML(uri=str(tmp_path / f"c{processes}.html")),
            prompts=PROMPTS + ["a green square moving down"],
            num_sampling_steps=2,
            run_id="r",
            val_table=str(tmp_path / "held" / "meta.csv"),
            num_eval_timesteps=2,
            processes=processes,
        )
    assert outs[2].metrics == outs[1].metrics and "val_loss" in outs[2].metrics
    assert outs[2].output_uri == str(tmp_path / "eval2" / "r")
    for i in range(3):
        one, two = (tmp_path / f"eval{n}" / "r" / "ema" / f"sample_{i}.mp4" for n in (1, 2))
        assert two.read_bytes() == one.read_bytes()
    assert json.loads((tmp_path / "r2.json").read_text())["global_step"] == 7


@pytest.mark.integration
def test_evaluate_then_register_with_mlflow(checkpoint, tmp_path, mlflow_server):
    from mlflow import MlflowClient

    out = evaluate.python_func(
        checkpoint_uri=str(checkpoint),
        output_uri=str(tmp_path / "eval"),
        eval_metrics=Metrics(uri=str(tmp_path / "m.json")),
        report=Artifact(uri=str(tmp_path / "r.json")),
        comparison=HTML(uri=str(tmp_path / "c.html")),
        prompts=PROMPTS,
        num_sampling_steps=2,
        tracking_uri=mlflow_server.uri,
        experiment="components",
        run_id="pipe-7",
        model_name="opensora-component-test",
        gate={"thresholds": {"valid_fraction": 0.0}},
    )
    assert out.gate_decision["passed"] is True
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(out.mlflow_run_id)
    assert run.data.metrics["untrained/colour_accuracy"] == out.metrics["untrained/colour_accuracy"]
    assert run.data.tags["opensora.pipeline_run_id"] == "pipe-7"
    assert run.info.run_name == "pipe-7-eval"  # no pipeline run name given: the run id
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"videos", "preview", "report.json", "comparison.html"} <= artifacts
    previews = {a.path for a in client.list_artifacts(run.info.run_id, "preview")}
    assert {"preview/ema.png", "preview/untrained.png"} <= previews
    videos = {a.path for a in client.list_artifacts(run.info.run_id, "videos/ema")}
    assert {"videos/ema/sample_0.mp4", "videos/ema/sample_1.mp4"} <= videos

    registration = Artifact(uri=str(tmp_path / "reg.json"))
    reg = register.python_func(
        checkpoint_uri=str(checkpoint),
        model_name="opensora-component-test",
        registration=registration,
        metrics=out.metrics,
        gate_decision=out.gate_decision,
        tracking_uri=mlflow_server.uri,
        experiment="components",
        eval_run_id=out.mlflow_run_id,
        dataset_uri="/data/meta.csv",
        dataset_sha256="00" * 32,
        image="train:1",
        pipeline_run_id="pipe-7",
    )
    assert reg.version == "1" and reg.champion and reg.aliases == ["candidate", "champion"]
    assert reg.model_uri == "models:/opensora-component-test/1"
    mv = client.get_model_version("opensora-component-test", "1")
    assert mv.run_id == out.mlflow_run_id  # the version links to the evaluation run and its metrics
    assert json.loads((tmp_path / "reg.json").read_text())["gate_passed"] is True
