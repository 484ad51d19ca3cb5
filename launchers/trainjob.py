"""Build a ``trainer.kubeflow.org/v1alpha1`` TrainJob manifest (Kubeflow Trainer v2) from a TrainingJobSpec.

The TrainJob references a training runtime (``torch-distributed`` ClusterTrainingRuntime by default) and
overrides its trainer: image, command, ``numNodes``, ``numProcPerNode``, ``resourcesPerNode`` and env. The
torch runtime sets the same ``PET_*`` variables for torchrun as the Training Operator does. Pod-level settings
the trainer block cannot express (volumes with /dev/shm, tolerations, node selector, service account, security
context, envFrom, pod labels) go into a ``runtimePatches`` entry owned by this launcher, patching the runtime's trainer job
(``runtime_job_name``) and container (``runtime_container``).
"""

from __future__ import annotations

from typing import Any

from launchers.spec import TrainingJobSpec

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
PATCH_MANAGER = "opensora-platform/launcher"


def _runtime_patch(spec: TrainingJobSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": spec.runtime_container,
        "securityContext": spec.security.container_k8s(),
    }
    mounts = spec.volume_mounts()
    if mounts:
        container["volumeMounts"] = mounts
    template: dict[str, Any] = {"spec": spec.pod_k8s(container)}
    if spec.pod_labels:
        template["metadata"] = {"labels": dict(spec.pod_labels)}
    job_patch = {"name": spec.runtime_job_name, "template": {"spec": {"template": template}}}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job_patch]}}},
    }


def build_trainjob(spec: TrainingJobSpec) -> dict[str, Any]:
    """Return the TrainJob manifest (a plain dict).

    Restart, backoff, TTL and pod-cleanup policies come from the runtime and are not part of a TrainJob.
    Raises ValueError for settings a TrainJob cannot carry (elastic policy, ``priority_class``, ``envFrom``
    sources): set those in the runtime or launch a PyTorchJob.
    """
    unsupported = []
    if spec.elastic is not None:
        unsupported.append("elastic")
    if spec.priority_class:
        unsupported.append("priority_class")
    if spec.env_from_secrets or spec.env_from_config_maps:
        unsupported.append("env_from_secrets/env_from_config_maps (use secret_env)")
    if unsupported:
        raise ValueError(
            f"TrainJob cannot express {', '.join(unsupported)}; set them in the training runtime or launch a "
            "PyTorchJob instead"
        )
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": spec.container_command(),
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.nprocs_per_node,
        "env": spec.container_env(),
    }
    resources = spec.resources()
    if resources:
        trainer["resourcesPerNode"] = resources
    job_spec: dict[str, Any] = {
        "runtimeRef": {
            "name": spec.runtime_ref,
            "apiGroup": "trainer.kubeflow.org",
            "kind": spec.runtime_kind,
        },
        "trainer": trainer,
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    job_spec["runtimePatches"] = [_runtime_patch(spec)]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": spec.job_metadata(), "spec": job_spec}
