"""Live launches on a real cluster with the Training Operator installed; skipped unless KUBECONFIG is set.

Environment: KUBECONFIG (required), OPENSORA_TEST_NAMESPACE (default "default"), OPENSORA_TEST_IMAGE (a small
image with python, default python:3.11-slim). The jobs run on CPU and finish in seconds once the image is pulled.
"""

from __future__ import annotations

import os
import uuid

import pytest

from launchers import TrainingJobSpec
from launchers.runner import JobFailedError, launch, load_api_client

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set: no cluster to launch on"
    ),
]

NAMESPACE = os.environ.get("OPENSORA_TEST_NAMESPACE", "default")
IMAGE = os.environ.get("OPENSORA_TEST_IMAGE", "python:3.11-slim")


@pytest.fixture(scope="module")
def api_client():
    client = load_api_client(os.environ["KUBECONFIG"])
    from kubernetes import client as k8s

    try:
        served = {
            r.name for r in k8s.CustomObjectsApi(client).get_api_resources("kubeflow.org", "v1").resources
        }
    except k8s.exceptions.ApiException:
        served = set()
    if "pytorchjobs" not in served:
        pytest.skip(
            "the cluster does not serve kubeflow.org/v1 pytorchjobs (Training Operator not installed)"
        )
    return client


def _spec(command: list[str], **kw) -> TrainingJobSpec:
    return TrainingJobSpec(
        name=f"opensora-live-{uuid.uuid4().hex[:8]}",
        namespace=NAMESPACE,
        image=IMAGE,
        config="unused.py",
        command=command,
        num_nodes=2,
        gpus_per_node=0,
        procs_per_node=1,
        shm_size=None,
        cpu="100m",
        memory="128Mi",
        ttl_seconds_after_finished=300,
        **kw,
    )


def test_live_pytorchjob_succeeds_and_streams_master_logs(api_client, crds):
    lines: list[str] = []
    code = "import os; print('rank', os.environ['PET_NODE_RANK'], 'of', os.environ['PET_NNODES'])"
    status = launch(
        _spec(["python", "-c", code]),
        crd_dir=crds,
        timeout_s=600,
        poll_s=3,
        log=lines.append,
        api_client=api_client,
    )
    assert status.succeeded
    assert any(line.strip() == "rank 0 of 2" for line in lines), lines


def test_live_pytorchjob_failure_surfaces_exit_code(api_client, crds):
    with pytest.raises(JobFailedError) as exc:
        launch(
            _spec(["python", "-c", "raise SystemExit(3)"], restart_policy="Never", backoff_limit=0),
            crd_dir=crds,
            timeout_s=600,
            poll_s=3,
            log=lambda s: None,
            api_client=api_client,
            cleanup="always",
        )
    assert any("exit 3" in d for d in exc.value.details), exc.value.details
