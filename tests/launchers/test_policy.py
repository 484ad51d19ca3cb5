"""The allow-list of what a pipeline user may set on the training job (issue 14): refused values name the field."""

from __future__ import annotations

import pytest
from kfp.dsl import TaskConfig

from launchers import TrainingJobSpec
from launchers.policy import LaunchPolicy, PolicyError
from launchers.train import run_training

BASE = {"name": "run1", "namespace": "ml", "image": "img:1", "config": "c.py"}


def _spec(**kw) -> TrainingJobSpec:
    return TrainingJobSpec(**{**BASE, **kw})


def test_default_policy_own_namespace_default_sa_cache_pvc_only():
    policy = LaunchPolicy.from_env("ml", environ={})
    policy.check(_spec(volumes=[{"name": "cache", "mount_path": "/cache", "pvc": "opensora-model-cache"}]))
    with pytest.raises(PolicyError, match=r"namespace='kube-system' is not allowed; allowed: \['ml'\]"):
        policy.check(_spec(namespace="kube-system"))
    with pytest.raises(PolicyError, match=r"service_account='cluster-admin' is not allowed; allowed: none"):
        policy.check(_spec(service_account="cluster-admin"))
    with pytest.raises(PolicyError, match=r"volumes\['data'\]\.pvc='other-team' is not allowed"):
        policy.check(_spec(volumes=[{"name": "data", "mount_path": "/d", "pvc": "other-team"}]))
    with pytest.raises(PolicyError, match=r"volumes\['creds'\]\.secret='db-root' is not allowed"):
        policy.check(_spec(volumes=[{"name": "creds", "mount_path": "/s", "secret": "db-root"}]))


def test_admin_lists_widen_the_policy_but_never_allow_host_path():
    environ = {
        "OPENSORA_ALLOWED_NAMESPACES": "train-a, train-b",
        "OPENSORA_ALLOWED_SERVICE_ACCOUNTS": "trainer",
        "OPENSORA_ALLOWED_PVCS": "datasets",
        "OPENSORA_ALLOWED_CONFIG_MAPS": "nccl-topology",
    }
    policy = LaunchPolicy.from_env("ml", environ=environ)
    assert policy.namespaces == ("ml", "train-a", "train-b") and policy.pvcs == ("datasets",)
    policy.check(
        _spec(
            namespace="train-b",
            service_account="trainer",
            volumes=[
                {"name": "data", "mount_path": "/data", "pvc": "datasets", "read_only": True},
                {"name": "topo", "mount_path": "/topo", "config_map": "nccl-topology"},
                {"name": "scratch", "mount_path": "/scratch", "empty_dir": True},
            ],
        )
    )
    with pytest.raises(
        PolicyError, match=r"volumes\['root'\]\.host_path='/': hostPath volumes are not allowed"
    ):
        policy.check(_spec(volumes=[{"name": "root", "mount_path": "/host", "host_path": "/"}]))


def _launch_never(spec, **kwargs):
    raise AssertionError("a refused job must never be created")


def test_train_step_refuses_a_task_config_with_host_path(tmp_path, monkeypatch):
    monkeypatch.setattr("launchers.runner.launch", _launch_never)
    task_config = TaskConfig(
        volumes=[{"name": "root", "hostPath": {"path": "/"}}],
        volume_mounts=[{"name": "root", "mountPath": "/host"}],
    )
    with pytest.raises(PolicyError, match=r"volumes\['root'\]\.host_path='/'"):
        run_training(
            config="c.py",
            metadata_uri="m.csv",
            outputs_uri=str(tmp_path),
            run_id="r1",
            task_config=task_config,
            log=lambda s: None,
        )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"namespace": "kube-system"}, "namespace"), ({"service_account": "cluster-admin"}, "service_account")],
)
def test_train_step_refuses_namespace_and_sa_outside_the_list(kwargs, field, tmp_path, monkeypatch):
    monkeypatch.setattr("launchers.runner.launch", _launch_never)
    monkeypatch.setenv("OPENSORA_ALLOWED_NAMESPACES", "ml")
    monkeypatch.setenv("OPENSORA_ALLOWED_SERVICE_ACCOUNTS", "trainer")
    with pytest.raises(PolicyError, match=rf"^{field}=.* is not allowed"):
        run_training(
            config="c.py",
            metadata_uri="m.csv",
            outputs_uri=str(tmp_path),
            run_id="r1",
            log=lambda s: None,
            **kwargs,
        )
