"""train component and its body (launchers.train): TaskConfig passthrough, launcher dispatch, checkpoint discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import Model, TaskConfig

from components.train.component import train
from launchers import TrainingJobSpec, build_pytorchjob, build_trainjob
from launchers import train as train_module
from launchers.images import TRAIN_IMAGE, project_version
from launchers.local import torchrun_command
from launchers.task_config import spec_fields_from_task_config
from launchers.train import job_name, run_training, training_args
from opensora_core import checkpoint as ckpt

TASK_CONFIG = TaskConfig(
    resources={"limits": {"nvidia.com/gpu": "8", "memory": "900Gi"}, "requests": {"cpu": "64"}},
    tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {
            "key": "dedicated",
            "operator": "Equal",
            "value": "train",
            "effect": "NoExecute",
            "tolerationSeconds": 60,
        },
    ],
    node_selector={"node.kubernetes.io/instance-type": "p5.48xlarge"},
    env=[
        {"name": "AWS_REGION", "value": "us-east-1"},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "opensora-s3", "key": "sk"}},
        },
        {"name": "MLFLOW_TRACKING_URI", "valueFrom": {"configMapKeyRef": {"name": "opensora", "key": "uri"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
    volumes=[
        {"name": "cache", "persistentVolumeClaim": {"claimName": "opensora-model-cache"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "unmounted", "emptyDir": {}},
    ],
    volume_mounts=[
        {"name": "cache", "mountPath": "/cache"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ],
)


def test_task_config_passthrough_into_job_manifests():
    fields = spec_fields_from_task_config(TASK_CONFIG, environ={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    skipped = fields.pop("skipped")
    assert any("POD_IP" in s for s in skipped) and any("dshm" in s for s in skipped)
    assert any("unmounted" in s for s in skipped)
    assert (fields["gpus_per_node"], fields["memory"], fields["cpu"]) == (8, "900Gi", "64")
    assert fields["env"] == {"AWS_REGION": "us-east-1", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert fields["secret_env"] == [{"name": "AWS_SECRET_ACCESS_KEY", "secret": "opensora-s3", "key": "sk"}]

    spec = TrainingJobSpec(name="opensora-train-abc", image="train:1", config="c.py", num_nodes=2, **fields)
    job = build_pytorchjob(spec)
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge"}
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "opensora-model-cache"}} in pod["volumes"]
    assert {"name": "cache", "mountPath": "/cache"} in container["volumeMounts"]
    secret = next(e for e in container["env"] if e["name"] == "AWS_SECRET_ACCESS_KEY")
    assert secret == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "opensora-s3", "key": "sk"}},
    }
    trainjob = json.dumps(build_trainjob(spec))
    assert "opensora-model-cache" in trainjob and "p5.48xlarge" in trainjob


def test_empty_task_config_changes_nothing():
    assert spec_fields_from_task_config(TaskConfig()) == {}
    assert spec_fields_from_task_config({}) == {}


def test_training_args_order_and_tracking():
    args = training_args("c.py", "s3://d/meta.csv", "s3://o/run1", ["lr=1e-4"], "", "exp", "train-run1")
    # every launch resumes: --load latest (fresh start without a checkpoint) in one experiment folder
    assert args[:6] == ["c.py", "--outputs", "s3://o/run1", "--load", "latest", "--cfg-options"]
    assert args[6:] == [
        "tracking.backend=mlflow",
        "tracking.experiment=exp",
        "tracking.run_name=train-run1",
        "lr=1e-4",
        "dataset.data_path=s3://d/meta.csv",
        "experiment_folder=latest",
    ]
    assert "tracking.backend=mlflow" not in training_args("c.py", "m.csv", "o")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        training_args("c.py", "m.csv", "o", ["lr"])


def test_job_name_and_torchrun_command():
    assert job_name("Run_ABC/123-xyz") == "opensora-train-run-abc-123-xyz"
    assert len(job_name("x" * 200)) <= 63 and job_name("").startswith("opensora-train-")
    cmd = torchrun_command(["c.py", "--outputs", "o"], 2)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert cmd[6:] == ["opensora_core.train", "c.py", "--outputs", "o"]


def _fake_checkpoint(outputs: str, step: int = 5, metrics_step: int | None = None) -> None:
    """A complete checkpoint at ``step`` and the trainer's final metrics file (for ``metrics_step``)."""
    exp = Path(outputs) / "000-STDiT-XL-2"
    folder = exp / ckpt.checkpoint_name(0, step)
    folder.mkdir(parents=True)
    ckpt.write_json({"global_step": step, "mlflow_run_id": "mlrun"}, folder / ckpt.RUNNING_STATES_FILE)
    (folder / ckpt.COMPLETE_MARKER).write_text("{}")
    summary_step = step if metrics_step is None else metrics_step
    ckpt.write_final_metrics(
        str(exp),
        {
            "global_step": summary_step,
            "metrics": {"loss": 0.5, "tokens_per_s": 99.0},
            "mlflow_run_id": "mlrun",
        },
    )


def test_outcome_comes_from_the_final_metrics_file_not_the_log(tmp_path, monkeypatch):
    def fake_launch(spec, **kw):
        kw["log"]("step=5 epoch=0 loss=7.0")  # log lines are shown, never parsed
        _fake_checkpoint(str(tmp_path / "run-2"))

    monkeypatch.setattr("launchers.runner.launch", fake_launch)
    outcome = run_training(
        config="c.py", metadata_uri="m.csv", outputs_uri=str(tmp_path), run_id="run-2", log=lambda s: None
    )
    assert outcome.final_metrics == {"loss": 0.5, "tokens_per_s": 99.0, "global_step": 5.0}
    assert outcome.mlflow_run_id == "mlrun"


def test_missing_or_stale_final_metrics_is_an_error(tmp_path):
    exp = tmp_path / "a" / "000-STDiT-XL-2"
    _fake_checkpoint(str(tmp_path / "a"), step=5, metrics_step=3)
    with pytest.raises(RuntimeError, match="stale"):
        train_module.read_outcome(str(tmp_path / "a"))
    (exp / ckpt.FINAL_METRICS_FILE).unlink()
    with pytest.raises(RuntimeError, match=ckpt.FINAL_METRICS_FILE):
        train_module.read_outcome(str(tmp_path / "a"))


def test_cluster_launcher_gets_spec_and_returns_checkpoint(tmp_path, monkeypatch):
    seen = {}

    def fake_launch(spec, *, launcher, crd_dir, timeout_s, cleanup, log):
        seen.update(spec=spec, launcher=launcher, timeout_s=timeout_s, cleanup=cleanup)
        _fake_checkpoint(str(tmp_path / "out" / "run-1"))

    monkeypatch.setattr("launchers.runner.launch", fake_launch)
    monkeypatch.setenv("OPENSORA_ALLOWED_NAMESPACES", "ml")  # the admin's allow-list (launchers.policy)
    outcome = run_training(
        config="configs/opensora/train/16x512x512.py",
        metadata_uri="s3://d/meta.csv",
        outputs_uri=str(tmp_path / "out"),
        launcher="trainjob",
        run_id="run-1",
        num_nodes=2,
        gpus_per_node=4,
        sp_size=2,
        namespace="ml",
        image="train:1",
        task_config=TASK_CONFIG,
        log=lambda line: None,
    )
    spec = seen["spec"]
    assert seen["launcher"] == "trainjob" and seen["timeout_s"] == 168 * 3600.0
    assert (spec.namespace, spec.num_nodes, spec.gpus_per_node, spec.sp_size) == ("ml", 2, 8, 2)
    assert spec.name == "opensora-train-run-1" and spec.image == "train:1"
    assert spec.args[:2] == ["--outputs", str(tmp_path / "out" / "run-1")]
    assert "--cfg-options" in spec.training_args() and "sp_size=2" in spec.training_args()
    assert outcome.checkpoint_uri.endswith("epoch0-global_step5")
    assert outcome.global_step == 5 and outcome.mlflow_run_id == "mlrun"
    assert outcome.final_metrics["loss"] == 0.5


def test_the_mlflow_run_is_named_after_the_pipeline_run(tmp_path, monkeypatch):
    seen = []

    def fake_launch(spec, **kwargs):
        seen.append(spec.training_args())
        if len(seen) == 1:
            _fake_checkpoint(str(tmp_path / "run-3"))

    monkeypatch.setattr("launchers.runner.launch", fake_launch)
    monkeypatch.setenv("OPENSORA_ALLOWED_NAMESPACES", "ml")
    common = dict(
        config="c.py", metadata_uri="m.csv", outputs_uri=str(tmp_path), run_id="run-3", namespace="ml"
    )
    run_training(**common, experiment="exp", pipeline_run_name="opensora-train-20261202", log=lambda s: None)
    run_training(**common, experiment="exp", log=lambda s: None)
    assert "tracking.run_name=opensora-train-20261202-train" in seen[0]
    assert "tracking.run_name=run-3-train" in seen[1]  # no pipeline run name: the run id


def test_empty_image_means_this_release_train_image(tmp_path, monkeypatch):
    seen = {}

    def fake_launch(spec, **kwargs):
        seen["image"] = spec.image
        _fake_checkpoint(str(tmp_path / "run-2"))

    monkeypatch.setattr("launchers.runner.launch", fake_launch)
    run_training(
        config="c.py", metadata_uri="m.csv", outputs_uri=str(tmp_path), run_id="run-2", log=lambda s: None
    )
    assert seen["image"] == TRAIN_IMAGE == f"ghcr.io/opensora-platform/train:{project_version()}"
    assert train.component_spec.inputs["image"].default == ""  # resolved at run time, not baked in


def test_missing_checkpoint_and_bad_launcher(tmp_path, monkeypatch):
    monkeypatch.setattr("launchers.runner.launch", lambda spec, **kw: None)
    with pytest.raises(RuntimeError, match="no complete checkpoint"):
        run_training(config="c.py", metadata_uri="m.csv", outputs_uri=str(tmp_path), log=lambda s: None)
    with pytest.raises(ValueError, match="launcher must be one of"):
        run_training(config="c.py", metadata_uri="m.csv", outputs_uri=str(tmp_path), launcher="slurm")


def test_train_python_func_writes_small_artifact(tmp_path, monkeypatch):
    def fake_run_training(**kwargs):
        assert kwargs["launcher"] == "local" and kwargs["cfg_options"] == ["max_steps=1"]
        return train_module.TrainOutcome(str(tmp_path / "ckpt"), {"loss": 0.1, "global_step": 1.0}, "", 1)

    monkeypatch.setattr(train_module, "run_training", fake_run_training)
    artifact = Model(uri=str(tmp_path / "model.json"))
    out = train.python_func(
        config="c.py",
        metadata_uri="m.csv",
        outputs_uri=str(tmp_path),
        checkpoint=artifact,
        task_config=TaskConfig(),
        cfg_options=["max_steps=1"],
        launcher="local",
    )
    assert out.checkpoint_uri == str(tmp_path / "ckpt") and out.global_step == 1
    assert json.loads((tmp_path / "model.json").read_text())["final_metrics"]["loss"] == 0.1
    assert artifact.metadata["checkpoint_uri"] == str(tmp_path / "ckpt")


@pytest.mark.integration
def test_train_local_launcher_two_processes(tmp_path):
    from opensora_core.data.synthetic import generate

    generate(tmp_path / "data", 8, size=16, num_frames=8, seed=0)
    lines: list[str] = []
    outcome = run_training(
        config=str(Path(__file__).resolve().parents[2] / "configs" / "debug" / "demo.py"),
        metadata_uri=str(tmp_path / "data" / "meta.csv"),
        outputs_uri=str(tmp_path / "out"),
        launcher="local",
        run_id="local-1",
        gpus_per_node=0,
        procs_per_node=2,
        cfg_options=["max_steps=2", "batch_size=2", "log_every=1"],
        log=lines.append,
    )
    assert outcome.global_step == 2
    assert Path(outcome.checkpoint_uri, ckpt.EMA_FILE).is_file()
    assert outcome.final_metrics["global_step"] == 2.0 and "loss" in outcome.final_metrics
    assert any("2 rank(s)" in line for line in lines)
