"""Pipeline step `train`: launch distributed training and return the checkpoint URI and final metrics.

Launchers (``launcher=``):

- ``pytorchjob`` (default): a ``kubeflow.org/v1`` PyTorchJob (components/train/launchers);
- ``trainjob``: a ``trainer.kubeflow.org/v1alpha1`` TrainJob;
- ``local``: ``torchrun --standalone`` in the step's own process (the local pipeline run, `make demo`).

The step forwards its own Kubernetes settings to the job it creates (KFP TaskConfig passthrough): the GPU
resources set with ``set_accelerator_type/limit`` (not applied to the launcher pod itself), tolerations and
node selectors (idem), env (Secrets as ``secretKeyRef``, never as values) and volumes (also mounted in the
launcher pod, which reads the outputs; use ReadWriteMany claims or object storage).

Every launcher runs ``-m opensora_core.train CONFIG --outputs OUTPUTS/RUN_ID --cfg-options ...
dataset.data_path=META``. Afterwards the step finds the newest complete checkpoint under ``OUTPUTS/RUN_ID`` and parses the
trainer's last ``step=... loss=...`` log line for the final metrics. The ``checkpoint`` artifact holds a small
JSON (URI, step, metrics), never the weights.
"""

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

# Imported from their modules, not as dsl.component: the body below imports this module inside the KFP executor,
# whose kfp.dsl (runtime mode) leaves the compile-time names out.
from kfp.dsl.component_decorator import component
from kfp.dsl.component_task_config import TaskConfigField, TaskConfigPassthrough

RUNTIME_IMAGE = f"ghcr.io/opensora-platform/runtime:{version('opensora-platform')}"
TRAIN_IMAGE = f"ghcr.io/opensora-platform/train:{version('opensora-platform')}"
LAUNCHERS = ("pytorchjob", "trainjob", "local")
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class TrainOutcome(NamedTuple):
    """What :func:`run_training` returns."""

    checkpoint_uri: str
    final_metrics: dict[str, float]
    mlflow_run_id: str
    global_step: int


# ------------------------------------------------------------------------------ TaskConfig -> job spec
def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def spec_fields_from_task_config(
    task_config: Any, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``TrainingJobSpec`` fields from a KFP ``TaskConfig`` (or a dict with the same keys).

    - resources: GPU limits -> ``gpus_per_node`` (and ``gpu_resource``), cpu/memory -> ``cpu``/``memory``;
    - tolerations, node selector: as they are;
    - env: plain values -> ``env``; Secret references -> ``secret_env``; ConfigMap/field references are
      resolved from ``environ`` (this pod's environment, where Kubernetes already put their values);
    - volumes + mounts: PVC, ConfigMap, Secret, emptyDir and hostPath volumes with their mount (the launcher
      manages ``/dev/shm``; other volume kinds are skipped with a note in ``"skipped"``).

    Absent fields are left out, so the pipeline parameters apply.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    skipped: list[str] = []

    resources = _get(task_config, "resources") or {}
    limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    for gpu in GPU_RESOURCES:
        if gpu in limits:
            out["gpus_per_node"] = int(str(limits[gpu]))
            out["gpu_resource"] = gpu
            break
    for key in ("cpu", "memory"):
        if key in limits:
            out[key] = str(limits[key])

    tolerations = _get(task_config, "tolerations")
    if tolerations:
        out["tolerations"] = [
            {
                "key": t.get("key"),
                "operator": t.get("operator") or "Equal",
                "value": t.get("value"),
                "effect": t.get("effect"),
                "toleration_seconds": t.get("tolerationSeconds"),
            }
            for t in tolerations
        ]
    selector = _get(task_config, "node_selector")
    if selector:
        out["node_selector"] = {str(k): str(v) for k, v in selector.items()}

    env, secret_env = {}, []
    for item in _get(task_config, "env") or []:
        name = item.get("name")
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            entry = {"name": name, "secret": ref["name"], "key": ref["key"]}
            if ref.get("optional"):  # e.g. the MLflow login Secret, absent when MLflow auth is off
                entry["optional"] = True
            secret_env.append(entry)
        elif source:
            if name in environ:
                env[name] = environ[name]
            else:
                skipped.append(f"env {name} (valueFrom {sorted(source)} not resolvable here)")
        elif "value" in item:
            env[name] = str(item["value"])
    if env:
        out["env"] = env
    if secret_env:
        out["secret_env"] = secret_env

    mounts = {m["name"]: m for m in _get(task_config, "volume_mounts") or []}
    volumes = []
    for vol in _get(task_config, "volumes") or []:
        name = vol.get("name")
        mount = mounts.get(name)
        if mount is None:
            skipped.append(f"volume {name} (not mounted)")
            continue
        if mount.get("mountPath") == "/dev/shm" or name == "dshm":
            skipped.append(f"volume {name} (/dev/shm is sized by the launcher's shm_size)")
            continue
        spec: dict[str, Any] = {
            "name": name,
            "mount_path": mount["mountPath"],
            "read_only": bool(mount.get("readOnly", False)),
            "sub_path": mount.get("subPath") or None,
        }
        if "persistentVolumeClaim" in vol:
            spec["pvc"] = vol["persistentVolumeClaim"]["claimName"]
        elif "configMap" in vol:
            spec["config_map"] = vol["configMap"]["name"]
        elif "secret" in vol:
            spec["secret"] = vol["secret"]["secretName"]
        elif "emptyDir" in vol:
            spec["empty_dir"] = True
            spec["size_limit"] = (vol["emptyDir"] or {}).get("sizeLimit")
        elif "hostPath" in vol:
            spec["host_path"] = vol["hostPath"]["path"]
        else:
            skipped.append(f"volume {name} (kind {sorted(k for k in vol if k != 'name')} not supported)")
            continue
        volumes.append(spec)
    if volumes:
        out["volumes"] = volumes
    if skipped:
        out["skipped"] = skipped
    return out


# ------------------------------------------------------------------------------------------ helpers
def training_args(
    config: str,
    metadata_uri: str,
    outputs: str,
    cfg_options: Sequence[str] = (),
    tracking_uri: str = "",
    experiment: str = "",
    run_name: str = "",
) -> list[str]:
    """Arguments of ``python -m opensora_core.train``: ``CONFIG --outputs OUT --cfg-options ...``.

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
    return [config, "--outputs", outputs, "--cfg-options", *options]


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


@dataclass
class MetricsTap:
    """A log sink that forwards lines and keeps the metrics of the last trainer ``step=...`` line."""

    forward: Callable[[str], None] = print
    metrics: dict[str, float] = field(default_factory=dict)

    def __call__(self, line: str) -> None:
        self.forward(line)
        if "step=" not in line or "loss=" not in line:
            return
        from opensora_core.train.reporting import METRIC_NAMES, parse_log_line

        values = parse_log_line(line[line.index("step=") :])
        parsed: dict[str, float] = {}
        for key, value in values.items():
            name = "global_step" if key == "step" else METRIC_NAMES.get(key)
            if name is None:
                continue
            try:
                parsed[name] = float(str(value).rstrip("s"))
            except ValueError:
                continue
        if "global_step" in parsed:
            self.metrics = parsed


def locate_checkpoint(outputs: str) -> tuple[str, dict[str, Any]]:
    """The newest complete checkpoint under ``outputs`` and its running states (RuntimeError when none)."""
    import json

    from opensora_core.io import storage
    from opensora_core.train.checkpoint import RUNNING_STATES_FILE, find_latest_checkpoint

    ref = find_latest_checkpoint(outputs)
    if ref is None:
        raise RuntimeError(f"training finished but no complete checkpoint exists under {outputs}")
    states_uri = storage.join(ref.uri, RUNNING_STATES_FILE)
    states = json.loads(storage.read_bytes(states_uri)) if storage.exists(states_uri) else {}
    return ref.uri, states


def run_training(
    *,
    config: str,
    metadata_uri: str,
    outputs_uri: str,
    launcher: str = "pytorchjob",
    cfg_options: Sequence[str] = (),
    run_id: str = "",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    sp_size: int = 1,
    image: str = TRAIN_IMAGE,
    namespace: str = "",
    service_account: str = "",
    tracking_uri: str = "",
    experiment: str = "",
    timeout_hours: float = 168.0,
    cleanup: str = "on_success",
    crd_dir: str = "",
    task_config: Any = None,
    log: Callable[[str], None] = print,
) -> TrainOutcome:
    """Train with the chosen launcher and return the newest checkpoint (the train component's body)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {list(LAUNCHERS)}, got {launcher!r}")
    if not config.strip() or not metadata_uri.strip() or not outputs_uri.strip():
        raise ValueError("config, metadata_uri and outputs_uri must all be set")
    from opensora_core.io import storage

    outputs = storage.join(outputs_uri, run_id) if run_id else outputs_uri
    run_name = f"train-{run_id}" if run_id else ""
    options = list(cfg_options)
    if launcher == "local" and sp_size > 1:  # the cluster launchers add these themselves
        options = [f"sp_size={sp_size}", "plugin=zero2-seq", *options]
    args = training_args(config, metadata_uri, outputs, options, tracking_uri, experiment, run_name)
    tap = MetricsTap(log)
    if launcher == "local":
        from launchers.local import run_torchrun

        if num_nodes != 1:
            raise ValueError(f"launcher 'local' runs on one machine; got num_nodes={num_nodes}")
        run_torchrun(args, procs_per_node or gpus_per_node or 1, log=tap)
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
            image=image,
            config=config,
            args=args[1:],
            num_nodes=num_nodes,
            procs_per_node=procs_per_node or None,
            sp_size=sp_size,
            service_account=service_account or None,
            **fields,
        )
        launch(
            spec,
            launcher=launcher,
            crd_dir=crd_dir or None,
            timeout_s=timeout_hours * 3600.0,
            cleanup=cleanup,
            log=tap,
        )
    checkpoint_uri, states = locate_checkpoint(outputs)
    metrics = dict(tap.metrics)
    global_step = int(states.get("global_step", metrics.get("global_step", 0)))
    metrics["global_step"] = float(global_step)
    log(f"[train] checkpoint {checkpoint_uri} (global step {global_step})")
    return TrainOutcome(checkpoint_uri, metrics, str(states.get("mlflow_run_id") or ""), global_step)


# ------------------------------------------------------------------------------------------ component
@component(
    base_image=RUNTIME_IMAGE,
    packages_to_install=[],
    install_kfp_package=False,
    task_config_passthroughs=[
        TaskConfigField.RESOURCES,
        TaskConfigField.KUBERNETES_TOLERATIONS,
        TaskConfigField.KUBERNETES_NODE_SELECTOR,
        TaskConfigPassthrough(field=TaskConfigField.ENV, apply_to_task=True),
        TaskConfigPassthrough(field=TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
    ],
)
def train(
    config: str,
    metadata_uri: str,
    outputs_uri: str,
    checkpoint: Output[Model],
    task_config: dsl.TaskConfig,
    cfg_options: list = None,
    launcher: str = "pytorchjob",
    run_id: str = "",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    sp_size: int = 1,
    image: str = "ghcr.io/opensora-platform/train:0.1.0",
    namespace: str = "",
    service_account: str = "",
    tracking_uri: str = "",
    experiment: str = "",
    timeout_hours: float = 168.0,
    cleanup: str = "on_success",
) -> NamedTuple(
    "TrainOutputs",
    [("checkpoint_uri", str), ("final_metrics", dict), ("mlflow_run_id", str), ("global_step", int)],
):
    """Train ``config`` on ``metadata_uri``; checkpoints go to ``{outputs_uri}/{run_id}`` (local or s3://).

    ``launcher``: pytorchjob | trainjob | local. ``image`` is the training image of the job's pods;
    ``procs_per_node`` (0 = one per GPU) sets processes for CPU jobs and the local launcher.
    """
    import json

    from components.train.component import run_training

    outcome = run_training(
        config=config,
        metadata_uri=metadata_uri,
        outputs_uri=outputs_uri,
        launcher=launcher,
        cfg_options=list(cfg_options or []),
        run_id=run_id,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        procs_per_node=procs_per_node,
        sp_size=sp_size,
        image=image,
        namespace=namespace,
        service_account=service_account,
        tracking_uri=tracking_uri,
        experiment=experiment,
        timeout_hours=timeout_hours,
        cleanup=cleanup,
        task_config=task_config,
    )
    with open(checkpoint.path, "w", encoding="utf-8") as f:
        json.dump(outcome._asdict(), f, indent=2)
    checkpoint.metadata.update(
        {"checkpoint_uri": outcome.checkpoint_uri, "global_step": outcome.global_step, "config": config}
    )
    return outcome
