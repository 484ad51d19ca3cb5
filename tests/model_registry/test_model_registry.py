"""MLflow registration against a real MLflow server: aliases, gate, idempotency, lineage, no secrets."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from opensora_core.config import load_config
from opensora_core.model_registry import (
    CANDIDATE_ALIAS,
    CHAMPION_ALIAS,
    check_gate,
    register_checkpoint,
    safe_tags,
    scrub_uri,
)
from opensora_core.train.reporting import run_tags
from tests.eval.tiny_checkpoint import make_tiny_checkpoint

SECRET = "s3cr3t-value-never-logged"
LINEAGE = {
    "dataset_uri": "s3://opensora-datasets/raw/meta.csv",
    "dataset_sha256": "ab" * 32,
    "image": "ghcr.io/opensora-platform/train:0.1.0",
    "pipeline_run_id": "run-123",
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
}
GATE = {"colour_accuracy": 0.5, "colour_accuracy_gain": 0.2}


# ------------------------------------------------------------------------------------------- unit
def test_gate_rules():
    ok = check_gate({"a": 0.6, "b": 0.1}, {"a": 0.5, "b<=": 0.2})
    assert ok.passed and len(ok.details) == 2 and "pass" in ok.summary()
    assert not check_gate({"a": 0.4}, {"a": 0.5}).passed
    missing = check_gate({"a": 0.9}, {"b": 0.1})
    assert not missing.passed and "missing" in missing.details[0]
    assert not check_gate({"a": float("nan")}, {"a": 0.0}).passed
    assert not check_gate({"a": 1.0}, {}).passed  # no gate, no champion


def test_scrub_and_safe_tags():
    assert scrub_uri("http://user:pw@mlflow:5000/x") == "http://mlflow:5000/x"
    assert scrub_uri("https://bucket.s3/x?X-Amz-Signature=abc") == "https://bucket.s3/x"
    assert scrub_uri("s3://bucket/key") == "s3://bucket/key"
    tags = safe_tags(
        {"aws_secret_access_key": "x", "api_token": "y", "uri": "http://a:b@h/p", "n": None, "k": 1}
    )
    assert tags == {"uri": "http://h/p", "k": "1"}


# ------------------------------------------------------------------------------------ integration
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return make_tiny_checkpoint(root / "a", seed=1), make_tiny_checkpoint(root / "b", seed=2, global_step=9)


@pytest.mark.integration
def test_registry_aliases_gate_idempotency_lineage(mlflow_server, checkpoints, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "opensora-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    first, second = checkpoints
    name = "opensora-registry-test"
    client = MlflowClient(mlflow_server.uri)

    # 1. a failing gate: candidate only
    r1 = register_checkpoint(
        str(first),
        name,
        tracking_uri=mlflow_server.uri,
        experiment="registry-test",
        metrics={"colour_accuracy": 0.3, "colour_accuracy_gain": 0.05},
        gate=GATE,
        lineage=LINEAGE,
    )
    assert (r1.version, r1.reused, r1.champion) == ("1", False, False)
    assert r1.aliases == [CANDIDATE_ALIAS]
    mv = client.get_model_version(name, "1")
    assert set(mv.aliases) == {CANDIDATE_ALIAS}
    tags = mv.tags
    for key, value in LINEAGE.items():
        assert tags[f"opensora.{key}"] == value
    for key in ("checkpoint_sha256", "config_sha256", "checkpoint_uri", "model_type", "vae", "text_encoder"):
        assert tags[f"opensora.{key}"], key
    assert tags["opensora.text_encoder"] == "debug/tiny-t5"
    assert tags["opensora.gate_passed"] == "false"
    assert tags["opensora.global_step"] == "7"
    # the training run of this checkpoint's config carries the same config hash
    assert tags["opensora.config_sha256"] == run_tags(load_config(first / "config.json"), {})["config_hash"]

    # 2. the same checkpoint again, gate now passing: same version reused, champion set
    r2 = register_checkpoint(
        str(first),
        name,
        tracking_uri=mlflow_server.uri,
        experiment="registry-test",
        metrics={"colour_accuracy": 0.9, "colour_accuracy_gain": 0.6},
        gate=GATE,
        lineage=LINEAGE,
    )
    assert (r2.version, r2.reused, r2.champion) == ("1", True, True)
    assert set(client.get_model_version(name, "1").aliases) == {CANDIDATE_ALIAS, CHAMPION_ALIAS}
    assert len(client.search_model_versions(f"name = '{name}'")) == 1

    # 3. a new checkpoint failing the gate: new version is candidate, champion stays on version 1
    r3 = register_checkpoint(
        str(second),
        name,
        tracking_uri=mlflow_server.uri,
        experiment="registry-test",
        metrics={"colour_accuracy": 0.2},
        gate=GATE,
        lineage=LINEAGE,
    )
    assert (r3.version, r3.reused, r3.champion) == ("2", False, False)
    assert client.get_model_version_by_alias(name, CANDIDATE_ALIAS).version == "2"
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == "1"

    # 4. no secret anywhere in version tags, run params or run tags
    for version in ("1", "2"):
        mv = client.get_model_version(name, version)
        blob = json.dumps(mv.tags) + json.dumps(client.get_run(mv.run_id).data.to_dictionary())
        assert SECRET not in blob
        assert not any("secret" in k.lower() or "password" in k.lower() for k in mv.tags)


@pytest.mark.integration
def test_registered_pyfunc_samples_videos(mlflow_server, checkpoints, tmp_path):
    import mlflow

    name = "opensora-pyfunc-test"
    register_checkpoint(str(checkpoints[0]), name, tracking_uri=mlflow_server.uri, experiment="registry-test")
    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CANDIDATE_ALIAS}")
    prompts = pd.DataFrame({"prompt": ["a red square moving left"]})
    out = model.predict(prompts, params={"num_sampling_steps": 2, "save_dir": str(tmp_path / "v")})
    assert list(out.columns) == ["prompt", "video"]
    video = tmp_path / "v" / "sample_0.mp4"
    assert out["video"][0] == str(video) and video.stat().st_size > 0
    card = model.metadata.metadata["opensora"]
    assert card["references"]["text_encoder"] == "debug/tiny-t5"
    assert card["weights"] == "ema"


def test_bad_arguments(checkpoints):
    with pytest.raises(ValueError, match="weights"):
        register_checkpoint(str(checkpoints[0]), "m", tracking_uri="sqlite:///x.db", weights="best")
    with pytest.raises(ValueError, match="model_name"):
        register_checkpoint(str(checkpoints[0]), "bad name!", tracking_uri="sqlite:///x.db")
    with pytest.raises(ValueError, match="lineage keys"):
        register_checkpoint(str(checkpoints[0]), "m", tracking_uri="sqlite:///x.db", lineage={"secret": "x"})


@pytest.mark.integration
def test_promotion_refuses_versions_not_registered_by_the_pipeline(mlflow_server, checkpoints):
    """Issue 14: a version someone registered with the checkpoint's hash tag but other weights (or without the
    pipeline's lineage tag) is reused by hash, but never gets an alias: loading it would run its code."""
    import mlflow
    from mlflow import MlflowClient

    from opensora_core.model_registry import ProvenanceError, sha256_of

    first, second = checkpoints
    client = MlflowClient(mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    # Register the second checkpoint honestly, then a forged version: first's hash tag, second's weights.
    honest = register_checkpoint(str(second), "forged-test", tracking_uri=mlflow_server.uri, lineage=LINEAGE)
    forged_sha = sha256_of(first / "ema.safetensors")
    source = client.get_model_version("forged-test", honest.version).source
    forged = mlflow.register_model(
        source,
        "forged-test",
        tags={"opensora.checkpoint_sha256": forged_sha, "opensora.pipeline_run_id": "run-1"},
    )
    with pytest.raises(ProvenanceError, match="does not hash to the checkpoint"):
        register_checkpoint(str(first), "forged-test", tracking_uri=mlflow_server.uri, lineage=LINEAGE)
    assert client.get_model_version("forged-test", forged.version).aliases == []
    # A version without the lineage tag: refused when the pipeline requires lineage, accepted otherwise.
    client.delete_model_version_tag("forged-test", honest.version, "opensora.pipeline_run_id")
    with pytest.raises(ProvenanceError, match="pipeline_run_id"):
        register_checkpoint(str(second), "forged-test", tracking_uri=mlflow_server.uri, require_lineage=True)
    kept = register_checkpoint(str(second), "forged-test", tracking_uri=mlflow_server.uri)
    assert kept.reused and kept.aliases == [CANDIDATE_ALIAS]
