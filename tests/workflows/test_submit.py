"""workflows.submit: parameter parsing, validation against the compiled YAML, kfp.Client call."""

from __future__ import annotations

import json
import types

import pytest

from workflows.submit import WORKFLOWS_DIR, main, parse_params, resolve_pipeline, submit


class FakeClient:
    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self.calls.append((pipeline_file, kwargs))
        return types.SimpleNamespace(run_id="run-42")


def test_parse_params_json_and_strings(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"num_nodes": 2, "model_name": "m"}))
    params = parse_params(
        [
            "num_nodes=4",
            'tolerations=[{"key": "gpu", "operator": "Exists"}]',
            "raw_data_uri=s3://b/raw",
            "gate={}",
        ],
        str(f),
    )
    assert params == {
        "num_nodes": 4,
        "model_name": "m",
        "tolerations": [{"key": "gpu", "operator": "Exists"}],
        "raw_data_uri": "s3://b/raw",
        "gate": {},
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_params(["oops"])


def test_submit_calls_client_with_preset():
    client = FakeClient()
    result = submit("train_512", "exp1", {"num_nodes": 4}, client=client, service_account="opensora-pipeline")
    assert result.run_id == "run-42"
    path, kwargs = client.calls[0]
    assert path == str(WORKFLOWS_DIR / "train_512.yaml")
    assert kwargs["experiment_name"] == "exp1" and kwargs["arguments"]["num_nodes"] == 4
    assert kwargs["service_account"] == "opensora-pipeline" and kwargs["enable_caching"] is False
    assert len(kwargs["arguments"].get("git_commit", "x" * 40)) == 40


def test_submit_rejects_unknown_parameters_and_pipelines():
    with pytest.raises(ValueError, match="unknown pipeline parameters \\['nodes'\\]"):
        submit("train_256", "e", {"nodes": 2}, client=FakeClient())
    with pytest.raises(FileNotFoundError, match="train_256"):
        resolve_pipeline("train_1024")
    assert main(["train_1024", "--experiment", "e"]) == 2
