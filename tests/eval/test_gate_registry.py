"""The gate through the real MLflow registry (sqlite store): the default gate rejects random weights, accepts
a trained model, and compares the next candidate with that champion pair by pair."""

from __future__ import annotations

import json
import shutil

import pytest
from kfp.dsl import HTML, Artifact, Metrics

from components.evaluate.component import evaluate
from components.register.component import register
from opensora_core.data.split import split_metadata
from opensora_core.data.synthetic import generate
from tests.eval.tiny_checkpoint import DEMO_CONFIG, make_tiny_checkpoint

PROMPTS = ["a red square moving left", "a blue circle moving up"]
NAME = "opensora-gate-test"


def _trained_checkpoint(root, table):
    """The demo model trained for 60 steps in this process (the real trainer, one rank)."""
    from opensora_core.config import load_config
    from opensora_core.train import train

    cfg = load_config(
        DEMO_CONFIG,
        overrides={"dataset.data_path": table, "max_steps": 60, "outputs": str(root), "batch_size": 8},
    )
    return train(cfg).checkpoint_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from opensora_core.model_registry import ensure_experiment

    root = tmp_path_factory.mktemp("gate")
    generate(root / "data", 24, size=16, num_frames=8, seed=0)
    split = split_metadata(str(root / "data" / "meta.csv"), 0.25)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    ensure_experiment(uri, "gate", (root / "artifacts").as_uri())
    return {
        "root": root,
        "uri": uri,
        "val_table": split.eval_uri,
        "random": make_tiny_checkpoint(root / "random", seed=1),
        "trained": _trained_checkpoint(root / "trained", split.train_uri),
    }


def _evaluate_and_register(setup, checkpoint, tag, num_eval_timesteps=3):
    root = setup["root"]
    out = evaluate.python_func(
        checkpoint_uri=str(checkpoint),
        output_uri=str(root / "eval"),
        eval_metrics=Metrics(uri=str(root / f"{tag}-m.json")),
        report=Artifact(uri=str(root / f"{tag}-r.json")),
        comparison=HTML(uri=str(root / f"{tag}.html")),
        prompts=PROMPTS,
        num_sampling_steps=2,
        tracking_uri=setup["uri"],
        experiment="gate",
        run_id=tag,
        run_name=f"pipeline-{tag}",
        val_table=setup["val_table"],
        num_eval_timesteps=num_eval_timesteps,
        model_name=NAME,
    )
    reg = register.python_func(
        checkpoint_uri=str(checkpoint),
        model_name=out.model_name,
        registration=Artifact(uri=str(root / f"{tag}-reg.json")),
        metrics=out.metrics,
        gate_decision=out.gate_decision,
        tracking_uri=setup["uri"],
        experiment="gate",
        eval_run_id=out.mlflow_run_id,
        pipeline_run_id=tag,
    )
    return out, reg


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_default_gate_through_the_registry(setup):
    from mlflow import MlflowClient

    client = MlflowClient(setup["uri"])
    # 1. random weights, no champion yet: the default absolute thresholds reject them
    out, reg = _evaluate_and_register(setup, setup["random"], "random")
    assert out.metrics["val_loss_improvement"] == 0.0
    assert not reg.champion and reg.aliases == ["candidate"]
    assert "val_loss_improvement=0 >= 0.1: FAIL" in " ".join(out.gate_decision["details"])
    assert client.get_run(out.mlflow_run_id).info.run_name == "pipeline-random-eval"

    # 2. the trained model: accepted, champion; the model card is the version's description
    out, reg = _evaluate_and_register(setup, setup["trained"], "trained")
    assert out.metrics["val_loss_improvement"] > 0.1, out.metrics
    assert reg.champion and reg.aliases == ["candidate", "champion"]
    version = client.get_model_version(NAME, reg.version)
    assert "## Metrics" in version.description and "| val_loss |" in version.description
    assert "pipeline_run_id: `trained`" in version.description
    html = (setup["root"] / "trained.html").read_text()
    assert "no champion yet" in html and "PASSED" in html

    # 3. random weights again: compared with champion v2 on the same clips, timesteps and seeds; rejected
    shutil.rmtree(setup["root"] / "eval" / "random")
    out, reg = _evaluate_and_register(setup, setup["random"], "random")
    assert out.gate_decision["champion_version"] == reg_version(client) == "2"
    assert out.gate_decision["comparisons"]["val_loss"]["mean_diff"] > 0
    assert not reg.champion and reg_version(client) == "2"
    assert "champion v2" in (setup["root"] / "random.html").read_text()
    report = json.loads((setup["root"] / "random-r.json").read_text())
    assert report["gate_decision"]["passed"] is False

    # 4. other evaluation settings: the champion's stored report does not pair up, so its registered weights
    #    are downloaded and evaluated with the candidate's settings; the champion itself is not worse than itself
    out, reg = _evaluate_and_register(setup, setup["trained"], "again", num_eval_timesteps=2)
    champion_report = json.loads((setup["root"] / "eval" / "again" / "champion" / "report.json").read_text())
    # the demo's rectified-flow times linspace(0, 1000, 4)[1:-1], re-evaluated at 2 times instead of 3
    assert champion_report["val_loss"]["ema"]["timesteps"] == pytest.approx([1000 / 3, 2000 / 3])
    assert out.gate_decision["comparisons"]["val_loss"]["mean_diff"] == pytest.approx(0.0, abs=1e-6)
    assert out.gate_decision["passed"] and reg.champion and reg.version == "2"
    assert json.loads((setup["root"] / "again-reg.json").read_text())["reused"] is True


def reg_version(client) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)
