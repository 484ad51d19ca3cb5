"""Build a ``kubeflow.org/v1`` PyTorchJob manifest (Kubeflow Training Operator) from a TrainingJobSpec.

Layout: one ``Master`` pod plus ``num_nodes - 1`` ``Worker`` pods, each running ``nprocPerNode`` processes.
The operator injects ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` into every pod, and ``torchrun`` reads them as defaults of its flags, so the container
command stays ``torchrun -m opensora_core.train <config> ...`` on every replica. With an elastic policy the job
has Worker pods only and torchrun rendezvouses through the operator's ``PET_RDZV_*`` variables.
"""

from __future__ import annotations

from typing import Any

from launchers.spec import TrainingJobSpec

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"  # the Training Operator looks for this container name
PORT_NAME = "pytorchjob-port"


def pod_spec(spec: TrainingJobSpec, container_name: str = CONTAINER_NAME) -> dict[str, Any]:
    """The pod spec of one training node (shared by every replica)."""
    container: dict[str, Any] = {
        "name": container_name,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": spec.container_command(),
        "env": spec.container_env(),
        "ports": [{"name": PORT_NAME, "containerPort": spec.master_port, "protocol": "TCP"}],
        "securityContext": spec.security.container_k8s(),
    }
    if spec.env_from():
        container["envFrom"] = spec.env_from()
    resources = spec.resources()
    if resources:
        container["resources"] = resources
    mounts = spec.volume_mounts()
    if mounts:
        container["volumeMounts"] = mounts
    return spec.pod_k8s(container)


def _replica(spec: TrainingJobSpec, replicas: int) -> dict[str, Any]:
    return {
        "replicas": replicas,
        "restartPolicy": spec.restart_policy,
        "template": {"metadata": {"labels": spec.template_labels()}, "spec": pod_spec(spec)},
    }


def build_pytorchjob(spec: TrainingJobSpec) -> dict[str, Any]:
    """Return the PyTorchJob manifest (a plain dict, ready for ``CustomObjectsApi`` or ``yaml.safe_dump``)."""
    run_policy: dict[str, Any] = {"backoffLimit": spec.backoff_limit, "cleanPodPolicy": spec.clean_pod_policy}
    if spec.active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        run_policy["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished

    job_spec: dict[str, Any] = {"nprocPerNode": str(spec.nprocs_per_node), "runPolicy": run_policy}
    if spec.elastic is None:
        replicas = {"Master": _replica(spec, 1)}
        if spec.num_nodes > 1:
            replicas["Worker"] = _replica(spec, spec.num_nodes - 1)
    else:
        replicas = {"Worker": _replica(spec, spec.num_nodes)}
        job_spec["elasticPolicy"] = {
            "minReplicas": spec.elastic.min_nodes,
            "maxReplicas": spec.elastic.max_nodes,
            "maxRestarts": spec.elastic.max_restarts,
            "rdzvBackend": spec.elastic.rdzv_backend,
            "nProcPerNode": spec.nprocs_per_node,
        }
    job_spec["pytorchReplicaSpecs"] = replicas

    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": spec.job_metadata(), "spec": job_spec}
