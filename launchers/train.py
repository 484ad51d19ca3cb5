"""The train step's body: run ``opensora_core.train`` with a launcher, then find the checkpoint and metrics.

Launchers (``launcher=``):

- ``pytorchjob`` (default): a ``kubeflow.org/v1`` PyTorchJob (:mod:`launchers.pytorchjob`);
- ``trainjob``: a ``trainer.kubeflow.org/v1alpha1`` TrainJob (:mod:`launchers.trainjob`);
- ``local``: ``torchrun --standalone`` in the step's own process (:mod:`launchers.local`; `make demo`).

Every launcher runs ``-m opensora_core.train CONFIG --outputs OUTPUTS/RUN_ID --load latest --cfg-options ...
dataset.data_path=META experiment_folder=latest``: the run folder depends only on the pipeline run id, so a
restarted pod or a retried step resumes where the last complete checkpoint left off. Afterwards the step finds
the newest complete checkpoint under ``OUTPUTS/RUN_ID`` and reads the final metrics file the trainer wrote into
its experiment folder (final step, metrics, MLflow run id; missing or stale is an error). No kfp import here: the
component (components/train/component.py) is a thin wrapper around :func:`run_training`.
"""

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from launchers.images import TRAIN_IMAGE
from launchers.task_config import spec_fields_from_task_config

LAUNCHERS = ("pytorchjob", "trainjob", "local")
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TrainOutcome(NamedTuple):
    """What :func:`run_training` returns."""

    checkpoint_uri: str
    final_metrics: dict[str, float]
    mlflow_run_id: str
    global_step: int


def training_args(
    config: str,
    metadata_uri: str,
    outputs: str,
    cfg_options: Sequence[str] = (),
    tracking_uri: str = "",
    experiment: str = "",
    run_name: str = "",
) -> list[str]:
    """Arguments of ``python -m opensora_core.train``: ``CONFIG --outputs OUT --load latest --cfg-options ...``.

    MLflow tracking is switched on when ``tracking_uri`` or ``experiment`` is given (an empty URI means the
    job's ``MLFLOW_TRACKING_URI``). User ``cfg_options`` come next (so they win over ours), and
    ``dataset.data_path`` last, so an option that replaces the whole ``dataset`` section (``dataset={"_delete_":
    True, ...}``) still trains on the prepared table.
    """
    bad = [o for o in cfg_options if "=" not in o]
    if bad:
        raise ValueError(f"cfg_options {bad}: each must be KEY=VALUE (e.g. lr=1e-4)")
    options: list[str] = []
    if tracking_uri or experiment:
        options.append("tracking.backend=mlflow")
        if tracking_uri:
            options.append(f"tracking.uri={tracking_uri}")
        if experiment:
            options.append(f"tracking.experiment={experiment}")
        if run_name:
            options.append(f"tracking.run_name={run_name}")
    options += list(cfg_options)
    options.append(f"dataset.data_path={metadata_uri}")
    # Always resume: a restarted pod, a KFP retry or a preempted job continues from the newest complete
    # checkpoint under its run folder (a fresh start when there is none) in the same experiment folder.
    options.append("experiment_folder=latest")
    return [config, "--outputs", outputs, "--load", "latest", "--cfg-options", *options]


def job_name(run_id: str, prefix: str = "opensora-train") -> str:
    """An RFC 1035 job name for a pipeline run: ``opensora-train-<run id, lowercase alnum, <= 20 chars>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:20].strip("-")
    if not slug:
        import uuid

        slug = uuid.uuid4().hex[:8]
    return f"{prefix}-{slug}"


def current_namespace(default: str = "default") -> str:
    """The namespace of this pod (service-account mount), else ``default``."""
    try:
        with open(_NAMESPACE_FILE, encoding="utf-8") as f:
            return f.read().strip() or default
    except OSError:
        return default


def read_outcome(outputs: str) -> TrainOutcome:
    """The finished run under ``outputs``: its newest complete checkpoint and the final metrics file the
    trainer wrote into that checkpoint's experiment folder (RuntimeError when either is missing or they
    disagree on the final step)."""
    from opensora_core import checkpoint as ckpt

    ref = ckpt.find_latest_checkpoint(outputs)
    if ref is None:
        raise RuntimeError(f"training finished but no complete checkpoint exists under {outputs}")
    exp_dir = ref.uri.rstrip("/").rsplit("/", 1)[0]
    try:
        summary = ckpt.read_final_metrics(exp_dir)
    except ckpt.CheckpointError as e:
        raise RuntimeError(str(e)) from e
    global_step = int(summary.get("global_step", -1))
    if global_step != ref.global_step:
        raise RuntimeError(
            f"the final metrics in {exp_dir} are for global step {global_step}, but the newest checkpoint "
            f"is {ref.uri}: the metrics file is stale (did training end without writing it?)"
        )
    metrics = {k: float(v) for k, v in (summary.get("metrics") or {}).items()}
    metrics["global_step"] = float(global_step)
    return TrainOutcome(ref.uri, metrics, str(summary.get("mlflow_run_id") or ""), global_step)


def _job_options(
    queue_name: str,
    priority_class: str,
    shm_size: str,
    nccl_env: dict[str, str] | None,
    affinity: dict[str, Any] | None,
    grace_period_s: int,
) -> dict[str, Any]:
    """The ``TrainingJobSpec`` fields of the step's job parameters that are set (validated by the spec)."""
    from launchers.spec import DEFAULT_NCCL_ENV

    out: dict[str, Any] = {}
    if queue_name:
        out["queue_name"] = queue_name
    if priority_class:
        out["priority_class"] = priority_class
    if shm_size:
        out["shm_size"] = shm_size
    if nccl_env:
        out["nccl_env"] = {**DEFAULT_NCCL_ENV, **{str(k): str(v) for k, v in nccl_env.items()}}
    if affinity:
        out["affinity"] = dict(affinity)
    if grace_period_s:
        out["termination_grace_period_s"] = int(grace_period_s)
    return out


def run_training(
    *,
    config: str,
    metadata_uri: str,
    outputs_uri: str,
    launcher: str = "pytorchjob",
    cfg_options: Sequence[str] = (),
    run_id: str = "",
    pipeline_run_name: str = "",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    sp_size: int = 1,
    image: str = "",
    namespace: str = "",
    service_account: str = "",
    tracking_uri: str = "",
    experiment: str = "",
    timeout_hours: float = 168.0,
    cleanup: str = "on_success",
    crd_dir: str = "",
    task_config: Any = None,
    queue_name: str = "",
    priority_class: str = "",
    shm_size: str = "",
    nccl_env: dict[str, str] | None = None,
    affinity: dict[str, Any] | None = None,
    grace_period_s: int = 0,
    log: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train with the chosen launcher and return the newest checkpoint (the train component's body).

    The MLflow run is named ``<pipeline_run_name>-train`` (``<run_id>-train`` without a name).

    ``image``: the training image of the job's pods; empty means this release's (``launchers.images``).
    Cluster launchers only: ``queue_name`` (Kueue LocalQueue), ``priority_class``, ``shm_size`` (/dev/shm
    size), ``nccl_env`` (extra NCCL_* variables over the defaults), ``affinity`` (pod affinity JSON),
    ``grace_period_s`` (terminationGracePeriodSeconds); empty/0 keeps the ``TrainingJobSpec`` default.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
    if not config.strip() or not metadata_uri.strip() or not outputs_uri.strip():
        raise ValueError("config, metadata_uri and outputs_uri must all be set")
    from opensora_core.io import storage

    outputs = storage.join(outputs_uri, run_id) if run_id else outputs_uri
    from opensora_core.io.tracking import step_run_name

    run_name = step_run_name(pipeline_run_name or run_id, "train") or ""
    options = list(cfg_options)
    if launcher == "local" and sp_size > 1:  # the cluster launchers add these themselves
        options = [f"sp_size={sp_size}", "plugin=zero2-seq", *options]
    args = training_args(config, metadata_uri, outputs, options, tracking_uri, experiment, run_name)
    if launcher == "local":
        from launchers.local import run_torchrun

        if num_nodes != 1:
            raise ValueError(f"launcher 'local' runs on one machine; got num_nodes={num_nodes}")
        run_torchrun(args, procs_per_node or gpus_per_node or 1, log=log)
    else:
        from launchers import TrainingJobSpec
        from launchers.runner import launch

        fields = spec_fields_from_task_config(task_config or {})
        for note in fields.pop("skipped", []):
            log(f"[train] not forwarded to the job: {note}")
        fields.setdefault("gpus_per_node", gpus_per_node)
        spec = TrainingJobSpec(
            name=job_name(run_id),
            namespace=namespace or current_namespace(),
            image=image or TRAIN_IMAGE,
            config=config,
            args=args[1:],
            num_nodes=num_nodes,
            procs_per_node=procs_per_node or None,
            sp_size=sp_size,
            service_account=service_account or None,
            **_job_options(queue_name, priority_class, shm_size, nccl_env, affinity, grace_period_s),
            **fields,
        )
        from launchers.policy import LaunchPolicy

        LaunchPolicy.from_env(current_namespace()).check(spec)
        launch(
            spec,
            launcher=launcher,
            crd_dir=crd_dir or None,
            timeout_s=timeout_hours * 3600.0,
            cleanup=cleanup,
            log=log,
        )
    outcome = read_outcome(outputs)
    log(f"[train] checkpoint {outcome.checkpoint_uri} (global step {outcome.global_step})")
    return outcome
