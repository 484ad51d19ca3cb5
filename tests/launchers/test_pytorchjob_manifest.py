"""PyTorchJob manifests: layout for 1/2/4 nodes with and without sequence parallelism, policies, bad inputs,
and validation against the kubeflow.org/v1 CRD schema (which must also catch broken manifests)."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from launchers import (
    ManifestValidationError,
    TrainingJobSpec,
    build_pytorchjob,
    check_manifest,
    validate_manifest,
)
from launchers.spec import SUPERVISOR
from launchers.validate import load_crd, main

BASE = {
    "name": "stdit-run1",
    "image": "registry.example.com/opensora-train:1.0",
    "config": "configs/train/16x256.py",
}


def _spec(**kw) -> TrainingJobSpec:
    return TrainingJobSpec(**{**BASE, **kw})


def _container(manifest: dict, replica: str = "Master") -> dict:
    return manifest["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("num_nodes", [1, 2, 4])
@pytest.mark.parametrize("sp_size", [1, 2, 8])
def test_pytorchjob_layout_for_nodes_and_sequence_parallelism(num_nodes, sp_size, crds):
    spec = _spec(
        num_nodes=num_nodes, gpus_per_node=8, sp_size=sp_size, args=["--data-path", "s3://data/meta.csv"]
    )
    m = build_pytorchjob(spec)
    assert validate_manifest(m, crds) == []
    assert (m["apiVersion"], m["kind"], m["metadata"]["name"]) == (
        "kubeflow.org/v1",
        "PyTorchJob",
        "stdit-run1",
    )
    replicas = m["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert ("Worker" in replicas) == (num_nodes > 1)
    if num_nodes > 1:
        assert replicas["Worker"]["replicas"] == num_nodes - 1
    assert m["spec"]["nprocPerNode"] == "8" and spec.world_size == 8 * num_nodes
    for replica in replicas:
        c = _container(m, replica)
        assert c["name"] == "pytorch"
        expected = [
            *SUPERVISOR,
            "torchrun",
            "-m",
            "opensora_core.train",
            "configs/train/16x256.py",
            "--data-path",
            "s3://data/meta.csv",
        ]
        if sp_size > 1:
            expected += ["--cfg-options", f"sp_size={sp_size}", "plugin=zero2-seq"]
        assert c["command"] == expected
        assert not any(e["name"].startswith("PET_") for e in c["env"])  # the operator injects PET_*
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 8
        assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
        pod = replicas[replica]["template"]["spec"]
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
        assert replicas[replica]["restartPolicy"] == "OnFailure"


def test_pytorchjob_run_policy_queue_and_pod_settings(crds):
    spec = _spec(
        num_nodes=2,
        gpus_per_node=4,
        cpu="32",
        memory="200Gi",
        shm_size="64Gi",
        restart_policy="ExitCode",
        backoff_limit=0,
        active_deadline_seconds=86400,
        ttl_seconds_after_finished=3600,
        clean_pod_policy="All",
        queue_name="team-a-gpu",
        priority_class="training-high",
        service_account="opensora-pipeline",
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        env={"HF_HOME": "/cache/hf"},
        nccl_env={"NCCL_DEBUG": "INFO", "NCCL_IB_DISABLE": "0"},
        secret_env=[{"name": "AWS_SECRET_ACCESS_KEY", "secret": "s3-creds", "key": "secret-key"}],
        env_from_secrets=["mlflow-env"],
        volumes=[
            {"name": "data", "mount_path": "/data", "pvc": "videos", "read_only": True},
            {"name": "cache", "mount_path": "/cache", "empty_dir": True, "size_limit": "100Gi"},
        ],
        image_pull_secrets=["regcred"],
        annotations={"opensora.dev/run-id": "abc123"},
    )
    m = build_pytorchjob(spec)
    assert validate_manifest(m, crds) == []
    assert m["spec"]["runPolicy"] == {
        "backoffLimit": 0,
        "cleanPodPolicy": "All",
        "activeDeadlineSeconds": 86400,
        "ttlSecondsAfterFinished": 3600,
    }
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpu"
    assert m["metadata"]["annotations"] == {"opensora.dev/run-id": "abc123"}
    worker = m["spec"]["pytorchReplicaSpecs"]["Worker"]
    pod = worker["template"]["spec"]
    assert "kueue.x-k8s.io/queue-name" not in worker["template"]["metadata"]["labels"]
    assert worker["restartPolicy"] == "ExitCode"
    assert pod["tolerations"] == [{"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert (pod["serviceAccountName"], pod["priorityClassName"]) == ("opensora-pipeline", "training-high")
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "videos", "readOnly": True}} in pod[
        "volumes"
    ]
    assert {"name": "cache", "emptyDir": {"sizeLimit": "100Gi"}} in pod["volumes"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["NCCL_DEBUG"] == "INFO" and env["NCCL_IB_DISABLE"] == "0" and env["HF_HOME"] == "/cache/hf"
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3-creds", "key": "secret-key"}}
    assert c["envFrom"] == [{"secretRef": {"name": "mlflow-env"}}]
    assert c["resources"]["requests"] == {"nvidia.com/gpu": 4, "cpu": "32", "memory": "200Gi"}
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]


def test_pytorchjob_elastic_policy_uses_workers_only(crds):
    spec = _spec(num_nodes=2, gpus_per_node=8, elastic={"min_nodes": 1, "max_nodes": 4, "max_restarts": 5})
    m = build_pytorchjob(spec)
    assert validate_manifest(m, crds) == []
    assert list(m["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    assert m["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    assert m["spec"]["elasticPolicy"] == {
        "minReplicas": 1,
        "maxReplicas": 4,
        "maxRestarts": 5,
        "rdzvBackend": "c10d",
        "nProcPerNode": 8,
    }


def test_pytorchjob_cpu_only_job_has_no_gpu_resources(crds):
    m = build_pytorchjob(_spec(num_nodes=2, gpus_per_node=0, procs_per_node=2, shm_size=None, cpu="2"))
    assert validate_manifest(m, crds) == []
    c = _container(m)
    assert m["spec"]["nprocPerNode"] == "2"
    assert c["resources"] == {"limits": {"cpu": "2"}, "requests": {"cpu": "2"}}
    # No /dev/shm; only the writable /tmp and /cache emptyDirs of the read-only-root image.
    assert c["volumeMounts"] == [
        {"name": "scratch-tmp", "mountPath": "/tmp"},
        {"name": "scratch-cache", "mountPath": "/cache"},
    ]
    assert m["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["volumes"] == [
        {"name": "scratch-tmp", "emptyDir": {}},
        {"name": "scratch-cache", "emptyDir": {}},
    ]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"num_nodes": 2, "gpus_per_node": 8, "sp_size": 3}, "sp_size=3 must divide"),
        ({"num_nodes": 1, "gpus_per_node": 4, "sp_size": 8}, "choose one of [1, 2, 4]"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"sp_size": 0}, "sp_size"),
        ({"name": "My_Job"}, "DNS-1035"),
        ({"name": "1-job"}, "DNS-1035"),
        ({"name": "job-"}, "DNS-1035"),
        ({"name": "a" * 64}, "DNS-1035"),
        ({"name": "a" * 60, "num_nodes": 4}, "too long"),
        ({"namespace": "Team_A"}, "namespace"),
        ({"active_deadline_seconds": -5}, "active_deadline_seconds"),
        ({"active_deadline_seconds": 0}, "active_deadline_seconds"),
        ({"ttl_seconds_after_finished": -1}, "ttl_seconds_after_finished"),
        ({"backoff_limit": -1}, "backoff_limit"),
        ({"memory": "lots"}, "not a Kubernetes quantity"),
        ({"shm_size": "-1Gi"}, "not a Kubernetes quantity"),
        ({"image": "my image"}, "image"),
        ({"env": {"PET_NNODES": "2"}}, "set by the training operator"),
        ({"env": {"WORLD_SIZE": "16"}}, "set by the training operator"),
        ({"env": {"1BAD": "x"}}, "not a valid environment variable name"),
        ({"gpus_per_node": 8, "procs_per_node": 4}, "one process drives one GPU"),
        ({"restart_policy": "Sometimes"}, "restart_policy"),
        ({"clean_pod_policy": "Some"}, "clean_pod_policy"),
        ({"elastic": {"min_nodes": 3, "max_nodes": 2}}, "min_nodes=3 > max_nodes=2"),
        ({"num_nodes": 8, "elastic": {"min_nodes": 1, "max_nodes": 4}}, "within min_nodes..max_nodes"),
        ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "takes no value"),
        ({"volumes": [{"name": "v", "mount_path": "/v", "pvc": "a", "secret": "b"}]}, "exactly one of"),
        ({"volumes": [{"name": "v", "mount_path": "rel", "pvc": "a"}]}, "mount_path must be absolute"),
        ({"volumes": [{"name": "dshm", "mount_path": "/x", "empty_dir": True}]}, "reserved for /dev/shm"),
        ({"node_selector": {"bad key!": "x"}}, "not a valid label"),
        ({"queue_name": "Queue_A"}, "queue_name"),
        ({"gpus": 8}, "Extra inputs are not permitted"),
    ],
)
def test_pytorchjob_bad_inputs_fail_with_clear_errors(overrides, needle):
    with pytest.raises(ValidationError) as exc:
        _spec(**overrides)
    assert needle in str(exc.value)


def test_pytorchjob_duplicate_env_is_rejected_when_building():
    spec = _spec(env={"S3_TOKEN": "x"}, secret_env=[{"name": "S3_TOKEN", "secret": "s", "key": "k"}])
    with pytest.raises(ValueError, match="defined twice"):
        build_pytorchjob(spec)


def test_pytorchjob_validation_catches_broken_manifests(crds):
    good = build_pytorchjob(_spec(num_nodes=2, gpus_per_node=8))
    broken = copy.deepcopy(good)
    master = broken["spec"]["pytorchReplicaSpecs"]["Master"]
    master["replicas"] = "two"
    broken["spec"]["pytorchReplicaSpecs"]["Worker"]["templat"] = {}
    c = master["template"]["spec"]["containers"][0]
    c["resources"]["limits"]["memory"] = "lots"
    c["ports"][0]["containerPort"] = 2**40
    del c["name"]
    broken["spec"]["runPolicy"]["backoffLimit"] = "3"
    broken["metadata"]["labels"]["tier"] = 3
    paths = {i.path for i in validate_manifest(broken, crds)}
    assert paths == {
        "$.metadata.labels.tier",
        "$.spec.pytorchReplicaSpecs.Master.replicas",
        "$.spec.pytorchReplicaSpecs.Worker",
        "$.spec.pytorchReplicaSpecs.Master.template.spec.containers[0]",
        "$.spec.pytorchReplicaSpecs.Master.template.spec.containers[0].resources.limits.memory",
        "$.spec.pytorchReplicaSpecs.Master.template.spec.containers[0].ports[0].containerPort",
        "$.spec.runPolicy.backoffLimit",
    }
    with pytest.raises(ManifestValidationError, match=r"showing 3 of 7") as exc:
        check_manifest(broken, crds, max_errors=3)
    assert len(exc.value.issues) == 3 and exc.value.total == 7
    # int-or-string fields take both forms; a wrong apiVersion/kind or a missing name is caught too
    ok = copy.deepcopy(good)
    ok["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "cpu"
    ] = 8
    assert validate_manifest(ok, crds) == []
    crd = load_crd(crds / "kubeflow.org_pytorchjobs.v1.9.4.yaml")
    for mutate, path in (
        (lambda m: m.update(apiVersion="kubeflow.org/v2"), "$.apiVersion"),
        (lambda m: m.update(kind="TFJob"), "$.kind"),
        (lambda m: m["metadata"].pop("name"), "$.metadata"),
        (lambda m: m["spec"].pop("pytorchReplicaSpecs"), "$.spec"),
    ):
        bad = copy.deepcopy(good)
        mutate(bad)
        assert path in {i.path for i in validate_manifest(bad, crd)}


def test_pytorchjob_validate_cli(tmp_path, crds, capsys):
    good = build_pytorchjob(_spec())
    bad = copy.deepcopy(good)
    bad["spec"]["nprocPerNode"] = 8  # the v1 CRD wants a string
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump_all([good, bad]))
    assert main([str(tmp_path / "good.yaml"), "--crds", str(crds)]) == 0
    assert main([str(tmp_path / "bad.yaml"), "--crds", str(crds)]) == 1
    assert "$.spec.nprocPerNode: 8 is not of type 'string'" in capsys.readouterr().out


def test_pytorchjob_launchers_import_without_kfp_or_kubernetes():
    import subprocess
    import sys

    code = (
        "import sys, launchers, launchers.runner, launchers.train, launchers.task_config, launchers.local;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('kfp','kubernetes','jsonschema','yaml')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_resume_args_grace_period_affinity_and_job_options_validate(crds):
    from launchers.spec import DEFAULT_GRACE_PERIOD_S, EXIT_MARGIN_S
    from launchers.train import _job_options, training_args

    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu.family", "operator": "In", "values": ["h100"]}]}
                ]
            }
        }
    }
    args = training_args("configs/train/16x256.py", "s3://d/meta.csv", "s3://o/run-7")
    options = _job_options("team-a", "train-high", "64Gi", {"NCCL_IB_HCA": "mlx5"}, affinity, 600)
    m = build_pytorchjob(_spec(args=args[1:], num_nodes=2, **options))
    assert validate_manifest(m, crds) == []
    for replica in ("Master", "Worker"):
        pod = m["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"][c["command"].index("--load") + 1] == "latest"
        assert "experiment_folder=latest" in c["command"]
        assert pod["terminationGracePeriodSeconds"] == 600 and pod["affinity"] == affinity
        assert pod["priorityClassName"] == "train-high"
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in pod["volumes"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["OPENSORA_PREEMPT_GRACE_S"] == str(600 - EXIT_MARGIN_S)
        assert env["NCCL_IB_HCA"] == "mlx5" and env["NCCL_DEBUG"] == "WARN"
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    default = build_pytorchjob(_spec())["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert default["terminationGracePeriodSeconds"] == DEFAULT_GRACE_PERIOD_S == 240
    with pytest.raises(ValidationError, match="termination_grace_period_s"):
        _spec(termination_grace_period_s=EXIT_MARGIN_S)
    with pytest.raises(ValidationError, match="affinity: unknown keys"):
        _spec(affinity={"nodeAfinity": {}})
