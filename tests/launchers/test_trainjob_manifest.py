"""TrainJob (Kubeflow Trainer v2) manifests: trainer block, runtime patches, unsupported settings, and
validation against the trainer.kubeflow.org/v1alpha1 CRD schema."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from launchers import TrainingJobSpec, build_trainjob, validate_manifest
from launchers.spec import SUPERVISOR

BASE = {
    "name": "stdit-run1",
    "image": "registry.example.com/opensora-train:1.0",
    "config": "configs/train/16x256.py",
}


def _spec(**kw) -> TrainingJobSpec:
    return TrainingJobSpec(**{**BASE, **kw})


def _pod_patch(m: dict) -> dict:
    patch = m["spec"]["runtimePatches"][0]
    job = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    return job["template"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("num_nodes", [1, 2, 4])
@pytest.mark.parametrize("sp_size", [1, 4])
def test_trainjob_trainer_block_for_nodes_and_sequence_parallelism(num_nodes, sp_size, crds):
    spec = _spec(num_nodes=num_nodes, gpus_per_node=8, sp_size=sp_size, memory="256Gi")
    m = build_trainjob(spec)
    assert validate_manifest(m, crds) == []
    assert (m["apiVersion"], m["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert m["spec"]["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    trainer = m["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["image"]) == (num_nodes, 8, BASE["image"])
    assert trainer["command"][:7] == [
        *SUPERVISOR,
        "torchrun",
        "-m",
        "opensora_core.train",
        "configs/train/16x256.py",
    ]
    assert ("--cfg-options" in trainer["command"]) == (sp_size > 1)
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": 8, "memory": "256Gi"}
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in trainer["env"]
    pod = _pod_patch(m)
    assert pod["containers"][0]["name"] == "node"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]


def test_trainjob_pod_settings_go_to_runtime_patches(crds):
    spec = _spec(
        num_nodes=2,
        gpus_per_node=4,
        active_deadline_seconds=7200,
        queue_name="team-a-gpu",
        service_account="opensora-pipeline",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"gpu": "h100"},
        secret_env=[{"name": "AWS_SECRET_ACCESS_KEY", "secret": "s3-creds", "key": "secret-key"}],
        volumes=[{"name": "data", "mount_path": "/data", "pvc": "videos"}],
        runtime_ref="opensora-torch",
        runtime_kind="TrainingRuntime",
    )
    m = build_trainjob(spec)
    assert validate_manifest(m, crds) == []
    assert m["spec"]["activeDeadlineSeconds"] == 7200
    assert (
        m["spec"]["runtimeRef"]["name"] == "opensora-torch"
        and m["spec"]["runtimeRef"]["kind"] == "TrainingRuntime"
    )
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpu"
    assert m["spec"]["runtimePatches"][0]["manager"] == "opensora-platform/launcher"
    pod = _pod_patch(m)
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["serviceAccountName"] == "opensora-pipeline"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "videos"}} in pod["volumes"]
    env = {e["name"]: e for e in m["spec"]["trainer"]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-creds",
        "key": "secret-key",
    }


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"elastic": {"min_nodes": 1, "max_nodes": 2}}, "elastic"),
        ({"priority_class": "high"}, "priority_class"),
        ({"env_from_secrets": ["mlflow-env"]}, "env_from_secrets"),
    ],
)
def test_trainjob_rejects_settings_it_cannot_express(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        build_trainjob(_spec(**overrides))


def test_trainjob_bad_inputs_fail_before_building():
    with pytest.raises(ValidationError, match="sp_size=3 must divide"):
        _spec(num_nodes=4, gpus_per_node=8, sp_size=3)
    with pytest.raises(ValidationError, match="DNS-1035"):
        _spec(name="Stdit.Run")
    with pytest.raises(ValidationError, match="runtime_ref"):
        _spec(runtime_ref="Not Valid")


def test_trainjob_validation_catches_broken_manifests(crds):
    good = build_trainjob(_spec(num_nodes=2))
    bad = copy.deepcopy(good)
    bad["spec"]["trainer"]["numNodes"] = "2"
    bad["spec"]["trainer"]["gpus"] = 8
    del bad["spec"]["runtimeRef"]["name"]
    bad["spec"]["activeDeadlineSeconds"] = 0
    bad["spec"]["trainer"]["resourcesPerNode"]["limits"]["memory"] = "much"
    paths = {i.path for i in validate_manifest(bad, crds)}
    assert paths == {
        "$.spec.trainer.numNodes",
        "$.spec.trainer",
        "$.spec.runtimeRef",
        "$.spec.activeDeadlineSeconds",
        "$.spec.trainer.resourcesPerNode.limits.memory",
    }
    missing = copy.deepcopy(good)
    del missing["spec"]["runtimeRef"]
    assert any("'runtimeRef' is a required property" in i.message for i in validate_manifest(missing, crds))
