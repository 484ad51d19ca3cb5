"""The whole pipeline through kfp.local (SubprocessRunner, local launcher, sqlite MLflow), kept tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.demo import DEMO_MODEL, run_demo

PROMPTS = ["a red square moving left", "a green square moving up"]


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_local_pipeline_end_to_end(tmp_path):
    from mlflow import MlflowClient

    result = run_demo(
        tmp_path / "demo",
        steps=3,
        clips=16,
        eval_prompts=PROMPTS,
        eval_sampling_steps=2,
        gate={"thresholds": {"valid_fraction": 1.0}},  # 3 steps pass this gate: the first champion
        extra_cfg_options=["batch_size=4", "log_every=1"],
    )
    assert result.checkpoint_uri.endswith("global_step3")
    assert Path(result.checkpoint_uri, "ema.safetensors").is_file()
    for key in ("colour_accuracy", "untrained/colour_accuracy", "colour_accuracy_gain", "valid_fraction"):
        assert key in result.metrics, key
    assert sorted(p.name for p in Path(result.eval_output_uri, "ema").glob("*.mp4")) == [
        "sample_0.mp4",
        "sample_1.mp4",
    ]
    assert Path(result.eval_output_uri, "preview", "untrained.png").is_file()
    assert (result.model_version, result.aliases, result.champion) == ("1", ["candidate", "champion"], True)

    client = MlflowClient(result.tracking_uri)
    mv = client.get_model_version(DEMO_MODEL, "1")
    assert sorted(mv.aliases) == ["candidate", "champion"]
    assert mv.tags["opensora.dataset_uri"].endswith("meta.csv") and mv.tags["opensora.pipeline_run_id"]
    eval_run = client.get_run(mv.run_id)
    assert eval_run.data.metrics["colour_accuracy"] == result.metrics["colour_accuracy"]
    train_runs = client.search_runs(
        [client.get_experiment_by_name("opensora-demo").experiment_id], "tags.mlflow.runName LIKE '%-train'"
    )
    assert len(train_runs) == 1 and "loss" in train_runs[0].data.metrics
    # the runs are named after the pipeline run (KFP local: opensora-train-<timestamp>), one suffix per step
    pipeline_run = train_runs[0].info.run_name.removesuffix("-train")
    assert pipeline_run.startswith("opensora-train-") and eval_run.info.run_name == f"{pipeline_run}-eval"
    # the learning curve: one point per checkpoint (only the final one here), logged to the training run
    assert [p.global_step for p in result.curve] == [3]
    assert result.curve[0].colour_accuracy == result.metrics["colour_accuracy"]  # same weights, prompts, seed
    train_run = train_runs[0].info.run_id
    assert "learning_curve.png" in [a.path for a in client.list_artifacts(train_run)]
    assert train_runs[0].data.metrics["curve/direction_accuracy"] == result.curve[0].direction_accuracy
    assert "learning curve" in result.report()
    saved = json.loads((tmp_path / "demo" / "demo_result.json").read_text())
    assert saved["model_version"] == "1"
    assert " ui --backend-store-uri sqlite:///" in result.report()

    # a second run in the same workdir (--keep) with the random initial weights (--random-weights) and the demo's
    # gate: registered as candidate only, the first run's version stays champion
    again = run_demo(
        tmp_path / "demo",
        clips=16,
        eval_prompts=PROMPTS,
        eval_sampling_steps=2,
        extra_cfg_options=["batch_size=4"],
        keep=True,
        random_weights=True,
    )
    assert again.checkpoint_uri.endswith("global_step1")
    assert again.metrics["val_loss_improvement"] == 0.0  # the EMA weights stayed at their initialisation
    assert (again.model_version, again.aliases, again.champion) == ("2", ["candidate"], False)
    assert str(client.get_model_version_by_alias(DEMO_MODEL, "champion").version) == "1"
    assert "no champion: gate" in again.report()
    assert Path(result.curve_png).is_file() and result.curve_png != again.curve_png  # run-scoped curves


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    from workflows.demo import DEMO_MARKER, main, prepare_workdir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["--workdir", str(mine)]) == 2  # refused before anything runs
    assert (mine / "notes.txt").read_text() == "keep me" and not (mine / DEMO_MARKER).exists()
    demo = tmp_path / "demo"
    prepare_workdir(demo)
    (demo / "old.txt").write_text("a previous demo's output")
    prepare_workdir(demo, keep=True)
    assert (demo / "old.txt").is_file()  # --keep keeps
    prepare_workdir(demo)
    assert (
        not (demo / "old.txt").exists() and (demo / DEMO_MARKER).is_file()
    )  # a demo's own folder is emptied
