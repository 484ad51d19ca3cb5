"""Typed inputs of a distributed training launch (shared by the PyTorchJob and TrainJob builders).

A :class:`TrainingJobSpec` describes *what* to run (image, `torchrun -m opensora_core.train <config> ...`), *how
wide* (nodes x processes, sequence-parallel size) and *where* (resources, tolerations, node selector, volumes,
queue). Every field is validated up front so that a bad pipeline parameter fails with a message naming the
field, instead of a half-created job in the cluster.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from opensora_core.train.preemption import GRACE_ENV

# RFC 1035 label: what the Training Operator and Trainer require of job names (Services are named after them).
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kubernetes resource.Quantity ("16", "500m", "64Gi", "1e3").
QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
LABEL_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Set by the operators for torchrun (PET_*) or by torchrun for its workers; a user value would fight them.
RESERVED_ENV = frozenset(
    {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE"}
)

DEFAULT_NCCL_ENV = {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Pod label the platform chart's NetworkPolicies accept as an MLflow / S3 client (`networkPolicy.clientLabel`).
CLIENT_LABEL = {"opensora.io/client": "true"}
# User the project images run as (images/README.md): uid/gid 10001, with a read-only root filesystem.
IMAGE_UID = 10001
# Writable folders the images expect on a read-only root: temporary files and caches (HF_HOME, TORCH_HOME, ...).
DEFAULT_WRITABLE_DIRS = ("/tmp", "/cache")
# Preemption budget (docs/training.md "Preemption"): from SIGTERM, the trainer finishes its step, saves a
# checkpoint and exits; the kubelet SIGKILLs the pod after terminationGracePeriodSeconds. The default grace is
# the sum of these estimates for an STDiT-XL/2 job (fp32 weights + EMA + AdamW state ~ 11.6 GB written to S3).
STEP_TIME_ESTIMATE_S = 30
SAVE_TIME_ESTIMATE_S = 180
EXIT_MARGIN_S = 30  # process exit, log flush, MLflow run status
DEFAULT_GRACE_PERIOD_S = STEP_TIME_ESTIMATE_S + SAVE_TIME_ESTIMATE_S + EXIT_MARGIN_S
# The training container's entry point: forwards SIGTERM to torchrun and exits 200 when preempted.
SUPERVISOR = ("python", "-m", "opensora_core.train.supervise")
# The longest suffix the Training Operator appends to a job name for pods/Services ("-worker-<index>").
_REPLICA_SUFFIX = "-worker-"


def _check_label(kind: str, name: str, max_len: int = 63) -> None:
    if len(name) > max_len or not DNS1123_LABEL.match(name):
        raise ValueError(
            f"{kind} {name!r} is not a valid DNS-1123 label: lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most {max_len} characters"
        )


def _check_quantity(field: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if not QUANTITY.match(value) or value.startswith("-"):
        raise ValueError(f"{field}={value!r} is not a Kubernetes quantity (examples: '8', '500m', '64Gi')")
    return value


def _check_labels(field: str, labels: dict[str, str], check_values: bool = True) -> dict[str, str]:
    for key, val in labels.items():
        name = key.rsplit("/", 1)[-1]
        if not LABEL_NAME.match(key) or len(name) > 63 or ("/" in key and len(key.split("/", 1)[0]) > 253):
            raise ValueError(
                f"{field}: {key!r} is not a valid label/annotation key (prefix/name, name <= 63 chars)"
            )
        if check_values and (len(val) > 63 or not LABEL_VALUE.match(val)):
            raise ValueError(
                f"{field}[{key!r}]={val!r} is not a valid label value (<= 63 alphanumerics, '-_.')"
            )
    return labels


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Model):
    """A pod toleration (``operator="Exists"`` matches any value of ``key``)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("tolerations: operator 'Exists' takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("tolerations: an empty key needs operator 'Exists' (tolerate every taint)")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerations: toleration_seconds only applies to effect 'NoExecute'")
        return self

    def to_k8s(self) -> dict:
        out: dict = {"operator": self.operator}
        for src, dst in (("key", "key"), ("value", "value"), ("effect", "effect")):
            if getattr(self, src) is not None:
                out[dst] = getattr(self, src)
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


class SecretKeyEnv(_Model):
    """An environment variable read from one key of a Secret (``optional``: the pod starts without it)."""

    name: str
    secret: str
    key: str
    optional: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(f"secret_env: {v!r} is not a valid environment variable name")
        return v


class Volume(_Model):
    """A volume and where it is mounted in the training container. Exactly one source must be set."""

    name: str
    mount_path: str
    read_only: bool = False
    sub_path: str | None = None
    pvc: str | None = Field(None, description="PersistentVolumeClaim name")
    config_map: str | None = None
    secret: str | None = None
    empty_dir: bool = False
    size_limit: str | None = Field(None, description="emptyDir size limit")
    host_path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Volume:
        _check_label("volumes: name", self.name)
        sources = [s for s in ("pvc", "config_map", "secret", "host_path") if getattr(self, s)]
        sources += ["empty_dir"] if self.empty_dir else []
        if len(sources) != 1:
            raise ValueError(
                f"volumes[{self.name!r}]: set exactly one of pvc, config_map, secret, empty_dir, host_path "
                f"(got {sources or 'none'})"
            )
        if not self.mount_path.startswith("/"):
            raise ValueError(f"volumes[{self.name!r}]: mount_path must be absolute, got {self.mount_path!r}")
        if self.mount_path == "/dev/shm":
            raise ValueError(f"volumes[{self.name!r}]: /dev/shm is managed by shm_size")
        if self.size_limit is not None and not self.empty_dir:
            raise ValueError(f"volumes[{self.name!r}]: size_limit only applies to empty_dir")
        _check_quantity(f"volumes[{self.name!r}].size_limit", self.size_limit)
        return self

    def volume_k8s(self) -> dict:
        if self.pvc:
            src: dict = {
                "persistentVolumeClaim": {
                    "claimName": self.pvc,
                    **({"readOnly": True} if self.read_only else {}),
                }
            }
        elif self.config_map:
            src = {"configMap": {"name": self.config_map}}
        elif self.secret:
            src = {"secret": {"secretName": self.secret}}
        elif self.host_path:
            src = {"hostPath": {"path": self.host_path}}
        else:
            src = {"emptyDir": {"sizeLimit": self.size_limit} if self.size_limit else {}}
        return {"name": self.name, **src}

    def mount_k8s(self) -> dict:
        out: dict = {"name": self.name, "mountPath": self.mount_path}
        if self.read_only:
            out["readOnly"] = True
        if self.sub_path:
            out["subPath"] = self.sub_path
        return out


class ElasticPolicy(_Model):
    """Elastic training (PyTorchJob only): the job runs with ``min_nodes..max_nodes`` Worker pods."""

    min_nodes: int = Field(..., ge=1)
    max_nodes: int = Field(..., ge=1)
    max_restarts: int = Field(3, ge=0)
    rdzv_backend: Literal["c10d", "etcd", "etcd-v2"] = "c10d"

    @model_validator(mode="after")
    def _check(self) -> ElasticPolicy:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"elastic: min_nodes={self.min_nodes} > max_nodes={self.max_nodes}")
        return self


class PodSecurity(_Model):
    """Pod and container security settings (non-root, no privilege escalation, RuntimeDefault seccomp).

    The defaults match the project images: user and group 10001, read-only root filesystem (the job gets
    writable emptyDirs at ``TrainingJobSpec.writable_dirs``).
    """

    run_as_non_root: bool = True
    run_as_user: int | None = Field(IMAGE_UID, ge=0)
    run_as_group: int | None = Field(IMAGE_UID, ge=0)
    fs_group: int | None = Field(IMAGE_UID, ge=0)
    read_only_root_filesystem: bool = True

    def pod_k8s(self) -> dict:
        out: dict = {"runAsNonRoot": self.run_as_non_root, "seccompProfile": {"type": "RuntimeDefault"}}
        for src, dst in (
            ("run_as_user", "runAsUser"),
            ("run_as_group", "runAsGroup"),
            ("fs_group", "fsGroup"),
        ):
            if getattr(self, src) is not None:
                out[dst] = getattr(self, src)
        return out

    def container_k8s(self) -> dict:
        return {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": self.read_only_root_filesystem,
        }


class TrainingJobSpec(_Model):
    """Everything needed to launch ``torchrun -m opensora_core.train <config> ...`` on Kubernetes.

    The world size is ``num_nodes * procs_per_node``; ``sp_size`` (sequence parallelism) must divide it.
    ``procs_per_node`` defaults to ``gpus_per_node`` (or 1 for CPU-only jobs).
    """

    name: str = Field(..., description="job name: RFC 1035 label, also used for pods and Services")
    namespace: str = "default"
    image: str
    config: str = Field(..., description="Open-Sora style config file (path inside the image, or a URI)")
    args: list[str] = Field(default_factory=list, description="extra CLI args of the training module")
    module: str = "opensora_core.train"
    command: list[str] | None = Field(None, description="full container command; replaces torchrun -m ...")

    num_nodes: int = Field(1, ge=1, le=1024)
    gpus_per_node: int = Field(8, ge=0, le=64)
    procs_per_node: int | None = Field(None, ge=1, le=256)
    sp_size: int = Field(1, ge=1)
    set_parallel_options: bool = Field(
        True, description="pass sp_size/plugin to the trainer via --cfg-options"
    )

    cpu: str | None = None
    memory: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    shm_size: str | None = Field("16Gi", description="size of the /dev/shm memory emptyDir; None: no mount")

    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[SecretKeyEnv] = Field(default_factory=list)
    env_from_secrets: list[str] = Field(default_factory=list)
    env_from_config_maps: list[str] = Field(default_factory=list)
    nccl_env: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NCCL_ENV))
    volumes: list[Volume] = Field(default_factory=list)
    writable_dirs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_WRITABLE_DIRS),
        description="emptyDirs mounted at these paths unless a volume already mounts there (read-only root)",
    )

    termination_grace_period_s: int = Field(
        DEFAULT_GRACE_PERIOD_S,
        ge=EXIT_MARGIN_S + 1,
        le=86400,
        description="pod terminationGracePeriodSeconds: time from SIGTERM (preemption) to SIGKILL; must cover "
        "one step plus one checkpoint save plus EXIT_MARGIN_S",
    )
    affinity: dict[str, Any] | None = Field(
        None, description="pod affinity (nodeAffinity/podAffinity/podAntiAffinity), Kubernetes JSON"
    )
    restart_policy: Literal["OnFailure", "Never", "ExitCode", "Always"] = "OnFailure"
    backoff_limit: int = Field(3, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)
    ttl_seconds_after_finished: int | None = Field(None, ge=0)
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"
    elastic: ElasticPolicy | None = None

    queue_name: str | None = Field(None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name)")
    priority_class: str | None = None
    service_account: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    pod_labels: dict[str, str] = Field(
        default_factory=lambda: dict(CLIENT_LABEL),
        description="labels of the training pods only (default: the chart's NetworkPolicy client label)",
    )
    annotations: dict[str, str] = Field(default_factory=dict)
    security: PodSecurity = Field(default_factory=PodSecurity)
    master_port: int = Field(23456, ge=1, le=65535)

    # TrainJob (Kubeflow Trainer v2) only
    runtime_ref: str = Field("torch-distributed", description="ClusterTrainingRuntime name")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    runtime_job_name: str = Field("node", description="replicated job of the runtime that runs the trainer")
    runtime_container: str = Field("node", description="trainer container name in the runtime")

    # ------------------------------------------------------------------------------------ validators

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 63 or not DNS1035_LABEL.match(v):
            raise ValueError(
                f"job name {v!r} is not a valid DNS-1035 label: lowercase letters, digits and '-', starting with a "
                "letter, ending with a letter or digit, at most 63 characters (e.g. 'stdit-stage1-run3')"
            )
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        _check_label("namespace", v)
        return v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} must be a non-empty image reference without spaces")
        return v

    @field_validator("config", "module")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or not v[0]):
            raise ValueError("command must be a non-empty list whose first item is the executable")
        return v

    @field_validator("cpu", "memory", "shm_size")
    @classmethod
    def _quantity(cls, v: str | None, info) -> str | None:
        return _check_quantity(info.field_name, v)

    @field_validator("env", "nccl_env")
    @classmethod
    def _env(cls, v: dict[str, str], info) -> dict[str, str]:
        for key in v:
            if not ENV_NAME.match(key):
                raise ValueError(f"{info.field_name}: {key!r} is not a valid environment variable name")
            if key in RESERVED_ENV or key.startswith("PET_"):
                raise ValueError(
                    f"{info.field_name}: {key!r} is set by the training operator/torchrun; remove it "
                    "(use num_nodes/gpus_per_node/procs_per_node/master_port instead)"
                )
        return v

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        allowed = {"nodeAffinity", "podAffinity", "podAntiAffinity"}
        if v is not None and set(v) - allowed:
            raise ValueError(f"affinity: unknown keys {sorted(set(v) - allowed)}; allowed: {sorted(allowed)}")
        return v

    @field_validator("writable_dirs")
    @classmethod
    def _writable_dirs(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.startswith("/") or path.rstrip("/") in ("", "/dev/shm"):
                raise ValueError(
                    f"writable_dirs: {path!r} must be an absolute path other than / and /dev/shm"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"writable_dirs: paths must be unique, got {v}")
        return v

    @field_validator("node_selector", "labels", "pod_labels")
    @classmethod
    def _labels(cls, v: dict[str, str], info) -> dict[str, str]:
        return _check_labels(info.field_name, v)

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels("annotations", v, check_values=False)

    @field_validator("env_from_secrets", "env_from_config_maps", "image_pull_secrets")
    @classmethod
    def _object_names(cls, v: list[str], info) -> list[str]:
        for name in v:
            if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                raise ValueError(
                    f"{info.field_name}: {name!r} is not a valid object name (DNS-1123 subdomain)"
                )
        return v

    @field_validator("queue_name")
    @classmethod
    def _queue(cls, v: str | None) -> str | None:
        if v is not None:
            _check_label("queue_name", v)
        return v

    @field_validator("priority_class", "service_account", "runtime_ref")
    @classmethod
    def _optional_object_name(cls, v: str | None, info) -> str | None:
        if v is not None and (len(v) > 253 or not DNS1123_SUBDOMAIN.match(v)):
            raise ValueError(f"{info.field_name}={v!r} is not a valid object name (DNS-1123 subdomain)")
        return v

    @model_validator(mode="after")
    def _check_layout(self) -> TrainingJobSpec:
        world = self.num_nodes * self.nprocs_per_node
        if world % self.sp_size:
            divisors = [d for d in range(1, world + 1) if world % d == 0]
            raise ValueError(
                f"sp_size={self.sp_size} must divide the total number of processes num_nodes*procs_per_node = "
                f"{self.num_nodes}*{self.nprocs_per_node} = {world}; choose one of {divisors}"
            )
        if (
            self.procs_per_node is not None
            and self.gpus_per_node
            and self.procs_per_node != self.gpus_per_node
        ):
            raise ValueError(
                f"procs_per_node={self.procs_per_node} differs from gpus_per_node={self.gpus_per_node}; "
                "one process drives one GPU, so leave procs_per_node unset for GPU jobs"
            )
        longest = f"{self.name}{_REPLICA_SUFFIX}{max(self.num_nodes - 1, 0)}"
        if len(longest) > 63:
            raise ValueError(
                f"job name {self.name!r} is too long for {self.num_nodes} nodes: pod/Service name {longest!r} "
                f"exceeds 63 characters; shorten the name to at most {63 - len(longest) + len(self.name)} characters"
            )
        if self.elastic is not None and not (
            self.elastic.min_nodes <= self.num_nodes <= self.elastic.max_nodes
        ):
            raise ValueError(
                f"elastic: num_nodes={self.num_nodes} must lie within min_nodes..max_nodes = "
                f"{self.elastic.min_nodes}..{self.elastic.max_nodes}"
            )
        if self.security.read_only_root_filesystem and not any(
            v.mount_path == "/tmp" for v in self._all_volumes()
        ):
            raise ValueError(
                "security.read_only_root_filesystem needs a writable /tmp: keep /tmp in writable_dirs or add an "
                "empty_dir volume at /tmp"
            )
        names = [v.name for v in self.volumes]
        if "dshm" in names or len(set(names)) != len(names):
            raise ValueError(
                f"volumes: names must be unique and not 'dshm' (reserved for /dev/shm), got {names}"
            )
        all_names = [v.name for v in self._all_volumes()]
        if len(set(all_names)) != len(all_names):
            raise ValueError(
                f"volumes: names {sorted(set(names) & set(all_names[len(names) :]))} are reserved for the "
                "writable_dirs emptyDirs; rename the volume"
            )
        return self

    # ---------------------------------------------------------------------------------- derived values

    @property
    def nprocs_per_node(self) -> int:
        """Processes per node: ``procs_per_node`` if set, else one per GPU (1 for CPU-only jobs)."""
        if self.procs_per_node is not None:
            return self.procs_per_node
        return self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.nprocs_per_node

    def training_args(self) -> list[str]:
        """``<config> [args...]`` plus ``--cfg-options sp_size=N [plugin=zero2-seq]`` when enabled."""
        out = [self.config, *self.args]
        if self.set_parallel_options and self.sp_size > 1:
            out += ["--cfg-options", f"sp_size={self.sp_size}", "plugin=zero2-seq"]
        return out

    def container_command(self) -> list[str]:
        """The training container's command: ``torchrun -m <module> <config> ...`` unless ``command`` is set."""
        if self.command is not None:
            return list(self.command)
        return [*SUPERVISOR, "torchrun", "-m", self.module, *self.training_args()]

    def container_env(self) -> list[dict]:
        """Environment of the training container (plain values first, then Secret references)."""
        merged = {
            "PYTHONUNBUFFERED": "1",
            GRACE_ENV: str(self.termination_grace_period_s - EXIT_MARGIN_S),
            **self.nccl_env,
            **self.env,
        }
        env: list[dict] = [{"name": k, "value": str(v)} for k, v in merged.items()]
        env += [
            {
                "name": s.name,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": s.secret,
                        "key": s.key,
                        **({"optional": True} if s.optional else {}),
                    }
                },
            }
            for s in self.secret_env
        ]
        names = [e["name"] for e in env]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment variables defined twice (env/nccl_env/secret_env): {dupes}")
        return env

    def env_from(self) -> list[dict]:
        return [{"secretRef": {"name": n}} for n in self.env_from_secrets] + [
            {"configMapRef": {"name": n}} for n in self.env_from_config_maps
        ]

    def resources(self) -> dict:
        """Container resources: GPUs as limits (= requests), cpu/memory as requests and limits."""
        limits: dict[str, str | int] = {}
        requests: dict[str, str | int] = {}
        if self.gpus_per_node:
            limits[self.gpu_resource] = self.gpus_per_node
            requests[self.gpu_resource] = self.gpus_per_node
        for key in ("cpu", "memory"):
            value = getattr(self, key)
            if value is not None:
                limits[key] = value
                requests[key] = value
        out: dict = {}
        if limits:
            out["limits"] = limits
        if requests:
            out["requests"] = requests
        return out

    def _all_volumes(self) -> list[Volume]:
        """``volumes`` plus an emptyDir ``scratch-<path>`` for every writable dir no volume mounts."""
        taken = {v.mount_path.rstrip("/") for v in self.volumes}
        scratch = [
            Volume(
                name="scratch-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root")[:55],
                mount_path=path,
                empty_dir=True,
            )
            for path in self.writable_dirs
            if path.rstrip("/") not in taken
        ]
        return [*self.volumes, *scratch]

    def pod_volumes(self) -> list[dict]:
        vols = (
            [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": self.shm_size}}]
            if self.shm_size
            else []
        )
        return vols + [v.volume_k8s() for v in self._all_volumes()]

    def volume_mounts(self) -> list[dict]:
        mounts = [{"name": "dshm", "mountPath": "/dev/shm"}] if self.shm_size else []
        return mounts + [v.mount_k8s() for v in self._all_volumes()]

    def pod_k8s(self, container: dict) -> dict:
        """A pod spec running ``container``, with the pod-level settings both job kinds share.

        Adds the pod security context, volumes, tolerations, node selector, service account, priority class and
        image pull secrets (each only when set).
        """
        pod: dict = {
            "containers": [container],
            "securityContext": self.security.pod_k8s(),
            "terminationGracePeriodSeconds": self.termination_grace_period_s,
        }
        volumes = self.pod_volumes()
        if volumes:
            pod["volumes"] = volumes
        if self.tolerations:
            pod["tolerations"] = [t.to_k8s() for t in self.tolerations]
        if self.node_selector:
            pod["nodeSelector"] = dict(self.node_selector)
        if self.affinity:
            pod["affinity"] = dict(self.affinity)
        if self.service_account:
            pod["serviceAccountName"] = self.service_account
        if self.priority_class:
            pod["priorityClassName"] = self.priority_class
        if self.image_pull_secrets:
            pod["imagePullSecrets"] = [{"name": n} for n in self.image_pull_secrets]
        return pod

    def job_metadata(self) -> dict:
        """Metadata of the job object: name, namespace, labels and (when set) annotations."""
        metadata: dict = {"name": self.name, "namespace": self.namespace, "labels": self.metadata_labels()}
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return metadata

    def template_labels(self) -> dict[str, str]:
        """Labels of the training pods: the job's labels (without the Kueue queue) plus ``pod_labels``."""
        job = {k: v for k, v in self.metadata_labels().items() if not k.startswith("kueue.x-k8s.io/")}
        return {**job, **self.pod_labels}

    def metadata_labels(self) -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": "opensora-train",
            "app.kubernetes.io/managed-by": "opensora-platform",
            **self.labels,
        }
        if self.queue_name:
            labels[QUEUE_LABEL] = self.queue_name
        return labels
