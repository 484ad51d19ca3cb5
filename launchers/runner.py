"""Run a training job on a cluster: create the custom object, follow its conditions, stream the master pod's
logs, enforce a timeout, surface the failure reason, and delete or keep the job per policy.

``kubernetes`` is imported only when a client is needed; :func:`wait_for_job` is cluster-free (it polls a
callable) so its logic is tested with recorded condition sequences.

Typical use (what the KFP train component does)::

    spec = TrainingJobSpec(name="stdit-run1", image=..., config="configs/opensora/train/16x256x256.py",
                           num_nodes=2, gpus_per_node=8, sp_size=2)
    status = launch(spec, launcher="pytorchjob", crd_dir="/crds", timeout_s=86400)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from launchers.pytorchjob import CONTAINER_NAME, build_pytorchjob
from launchers.spec import TrainingJobSpec
from launchers.status import JobPhase, JobStatus, describe_exit_code, is_preempted, job_status
from launchers.trainjob import build_trainjob

logger = logging.getLogger(__name__)

# kind -> (group, version, plural)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "PyTorchJob": ("kubeflow.org", "v1", "pytorchjobs"),
    "TrainJob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
}
Cleanup = Literal["always", "on_success", "never"]
PREEMPTED_MARK = "preempted, resumable"
MANAGED_BY = ("app.kubernetes.io/managed-by", "opensora-platform")
# How long a replaced (finished) job may take to disappear before the new one is created.
REPLACE_TIMEOUT_S = 300.0


class JobError(RuntimeError):
    """Base class of launcher errors."""


class JobFailedError(JobError):
    """The job ended Failed; ``status`` holds the condition reason/message, ``details`` pod-level causes."""

    def __init__(self, what: str, status: JobStatus, details: list[str] | None = None):
        self.status = status
        self.details = list(details or [])
        self.preempted = any(PREEMPTED_MARK in d for d in self.details)
        extra = "".join(f"\n  - {d}" for d in self.details)
        super().__init__(f"{what} failed: {status.describe()}{extra}")


class JobTimeoutError(JobError, TimeoutError):
    """The job did not reach Succeeded/Failed within the timeout; ``status`` is the last phase seen."""

    def __init__(self, what: str, timeout_s: float, status: JobStatus):
        self.status = status
        super().__init__(
            f"{what} did not finish within {timeout_s:g}s (last phase: {status.describe()}); raise the timeout "
            "or check the pods (kubectl describe / logs)"
        )


def resource_of(manifest: Mapping[str, Any]) -> tuple[str, str, str]:
    """(group, version, plural) of a PyTorchJob or TrainJob manifest."""
    kind = manifest.get("kind")
    if kind not in RESOURCES:
        raise ValueError(f"unsupported kind {kind!r}; expected one of {sorted(RESOURCES)}")
    group, version, plural = RESOURCES[kind]
    if manifest.get("apiVersion") != f"{group}/{version}":
        raise ValueError(f"{kind} must have apiVersion {group}/{version}, got {manifest.get('apiVersion')!r}")
    return group, version, plural


def wait_for_job(
    get_job: Callable[[], Mapping[str, Any] | None],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    what: str = "job",
    on_change: Callable[[JobStatus], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobStatus:
    """Poll ``get_job`` until the job is Succeeded or Failed and return that status.

    ``on_change`` sees every new status. A job object that disappears (``get_job`` returns None) ends as Failed
    with reason ``Deleted``. Raises :class:`JobTimeoutError` after ``timeout_s`` seconds.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    deadline = clock() + timeout_s
    last: JobStatus | None = None
    while True:
        obj = get_job()
        current = (
            job_status(obj)
            if obj is not None
            else JobStatus(JobPhase.FAILED, "Deleted", "the job object was deleted while waiting")
        )
        if current != last:
            if on_change is not None:
                on_change(current)
            last = current
        if current.terminal:
            return current
        remaining = deadline - clock()
        if remaining <= 0:
            raise JobTimeoutError(what, timeout_s, current)
        sleep(min(poll_s, remaining))


def load_api_client(kubeconfig: str | None = None, context: str | None = None):
    """A ``kubernetes.client.ApiClient``: in-cluster credentials inside a pod, else the kubeconfig."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    return client.ApiClient(cfg)


def master_pod_selector(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(label selector of the pod whose logs are streamed, its training container name)."""
    name = manifest["metadata"]["name"]
    if manifest["kind"] == "PyTorchJob":
        replicas = manifest["spec"]["pytorchReplicaSpecs"]
        rtype = "master" if "Master" in replicas else "worker"
        return (
            f"training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type={rtype},"
            "training.kubeflow.org/replica-index=0",
            CONTAINER_NAME,
        )
    patches = manifest["spec"].get("runtimePatches") or [{}]
    jobs = patches[0].get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get(
        "replicatedJobs"
    ) or [{}]
    job = jobs[0].get("name", "node")
    containers = (
        jobs[0].get("template", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    )
    container = (containers or [{"name": "node"}])[0]["name"]
    return (
        f"jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name={job},"
        "batch.kubernetes.io/job-completion-index=0",
        container,
    )


def job_pods_selector(manifest: Mapping[str, Any]) -> str:
    """Label selector of every pod of the job."""
    name = manifest["metadata"]["name"]
    if manifest["kind"] == "PyTorchJob":
        return f"training.kubeflow.org/job-name={name}"
    return f"jobset.sigs.k8s.io/jobset-name={name}"


class _LogStreamer:
    """Follows the logs of the first pod matching a selector in a daemon thread, across container restarts."""

    def __init__(self, core: Any, namespace: str, selector: str, container: str, sink: Callable[[str], None]):
        self.core, self.namespace, self.selector, self.container, self.sink = (
            core,
            namespace,
            selector,
            container,
            sink,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="job-log-streamer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _current(self) -> tuple[str, str] | None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            for cs in pod.status.container_statuses or []:
                if cs.name == self.container and (cs.state.running or cs.state.terminated):
                    return pod.metadata.name, f"{pod.metadata.uid}/{cs.restart_count}"
        return None

    def _run(self) -> None:
        followed: set[str] = set()
        while not self._stop.is_set():
            try:
                current = self._current()
                if current is None or current[1] in followed:
                    self._stop.wait(2.0)
                    continue
                pod, instance = current
                followed.add(instance)
                self.sink(f"[logs] following {self.namespace}/{pod} ({self.container})")
                resp = self.core.read_namespaced_pod_log(
                    pod, self.namespace, container=self.container, follow=True, _preload_content=False
                )
                try:
                    pending = b""
                    for chunk in resp.stream(4096):
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            self.sink(line.decode("utf-8", errors="replace"))
                        if self._stop.is_set():
                            break
                    if pending:
                        self.sink(pending.decode("utf-8", errors="replace"))
                finally:
                    resp.release_conn()
            except Exception as exc:  # log streaming is best effort; the job status decides the outcome
                logger.debug("log streaming: %s", exc)
                self._stop.wait(2.0)


def pod_failure_details(core: Any, namespace: str, selector: str, limit: int = 10) -> list[str]:
    """Why containers of the job's pods ended badly (reason, exit code, message), for error reports."""
    details: list[str] = []
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    except Exception as exc:
        return [f"could not list pods ({type(exc).__name__})"]
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        for cs in pod.status.container_statuses or []:
            for state in (
                cs.state.terminated if cs.state else None,
                cs.last_state.terminated if cs.last_state else None,
            ):
                if state is not None and (state.exit_code or 0) != 0:
                    meaning = describe_exit_code(state.exit_code) if is_preempted(state.exit_code) else ""
                    msg = f"pod {pod.metadata.name} container {cs.name}: {state.reason or 'Error'} (exit {state.exit_code})"
                    if meaning:
                        msg += f": {meaning}"
                    if state.message:
                        msg += f": {state.message.strip()[:500]}"
                    details.append(msg)
                    break
        if pod.status.phase == "Pending" and pod.status.conditions:
            for cond in pod.status.conditions:
                if cond.type == "PodScheduled" and cond.status == "False":
                    details.append(f"pod {pod.metadata.name} unschedulable: {cond.message}")
    return details[:limit]


def _api_error(exc: Exception, what: str, plural: str, namespace: str, name: str) -> Exception:
    status = getattr(exc, "status", None)
    if status == 409:
        return JobError(
            f"{what} already exists; delete it (kubectl delete {plural} -n {namespace} {name}) or use a new name"
        )
    if status == 404:
        return JobError(
            f"cannot create {what}: the {plural} API is not served; is the operator (CRD) installed?"
        )
    if status == 403:
        return JobError(
            f"cannot create {what}: forbidden; grant the service account create/get/delete on {plural}"
        )
    if status == 422:
        body = getattr(exc, "body", "") or ""
        return JobError(f"the API server rejected {what}: {str(body)[:2000]}")
    return exc


def _create_or_adopt(
    custom_api: Any,
    manifest: Mapping[str, Any],
    get_job: Callable[[], Mapping[str, Any] | None],
    delete: Callable[[], None],
    *,
    log: Callable[[str], None],
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Create the job; if one of that name exists (a re-run or KFP retry of the same pipeline run), adopt it
    while it runs, or delete and recreate it once it has ended (the new job resumes from the run's checkpoints).

    A same-named job this platform did not create (no ``app.kubernetes.io/managed-by: opensora-platform``
    label) is never touched: that raises :class:`JobError`.
    """
    group, version, plural = resource_of(manifest)
    namespace = manifest["metadata"].get("namespace", "default")
    name = manifest["metadata"]["name"]
    what = f"{manifest['kind']} {namespace}/{name}"

    def create() -> bool:
        try:
            custom_api.create_namespaced_custom_object(group, version, namespace, plural, dict(manifest))
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return False
            raise _api_error(exc, what, plural, namespace, name) from exc
        log(f"[launcher] created {what}")
        return True

    if create():
        return
    existing = get_job()
    if existing is None:  # deleted in between
        if create():
            return
        raise JobError(f"{what} keeps reappearing while being created; check who else creates it")
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if labels.get(MANAGED_BY[0]) != MANAGED_BY[1]:
        raise JobError(
            f"{what} already exists and was not created by opensora-platform (no label "
            f"{MANAGED_BY[0]}={MANAGED_BY[1]}); delete it (kubectl delete {plural} -n {namespace} {name}) or "
            "use another run id"
        )
    status = job_status(existing)
    if not status.terminal:
        log(
            f"[launcher] {what} already exists ({status.describe()}): adopting it instead of creating a new one"
        )
        return
    log(
        f"[launcher] {what} already exists and ended {status.describe()}: deleting it and creating it again "
        "(the new job resumes from the newest checkpoint of this run)"
    )
    delete()
    deadline = clock() + REPLACE_TIMEOUT_S
    while get_job() is not None:
        if clock() > deadline:
            raise JobError(f"{what} was deleted but still exists after {REPLACE_TIMEOUT_S:g}s (finalizers?)")
        sleep(poll_s)
    if not create():
        raise JobError(f"{what} reappeared while being replaced; check who else creates it")


def run_job(
    manifest: Mapping[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    cleanup: Cleanup = "on_success",
    delete_on_timeout: bool = True,
    stream_logs: bool = True,
    log: Callable[[str], None] = print,
    api_client: Any = None,
    custom_api: Any = None,
    core_api: Any = None,
) -> JobStatus:
    """Create the job, wait for Succeeded/Failed, stream the master's logs, and clean up per ``cleanup``.

    A job of the same name is adopted while it runs and replaced once it has ended (:func:`_create_or_adopt`),
    so re-running or retrying the step for the same pipeline run never fails on "already exists".
    Returns the Succeeded status. Raises :class:`JobFailedError` (with the condition reason/message and the
    pods' termination reasons), :class:`JobTimeoutError`, or :class:`JobError` for API errors with a hint.
    ``cleanup``: ``"on_success"`` keeps failed jobs for inspection, ``"always"`` deletes every outcome,
    ``"never"`` keeps all. ``custom_api``/``core_api`` replace the kubernetes API objects (tests).
    """
    group, version, plural = resource_of(manifest)
    namespace = manifest["metadata"].get("namespace", "default")
    name = manifest["metadata"]["name"]
    what = f"{manifest['kind']} {namespace}/{name}"
    if custom_api is None or core_api is None:
        from kubernetes import client

        api_client = api_client or load_api_client()
        custom_api = custom_api or client.CustomObjectsApi(api_client)
        core_api = core_api or client.CoreV1Api(api_client)

    def get_job() -> Mapping[str, Any] | None:
        try:
            return custom_api.get_namespaced_custom_object(group, version, namespace, plural, name)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    def delete() -> None:
        try:
            custom_api.delete_namespaced_custom_object(
                group, version, namespace, plural, name, body={"propagationPolicy": "Background"}
            )
            log(f"[launcher] deleted {what}")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                log(f"[launcher] could not delete {what}: {type(exc).__name__}: {exc}")

    _create_or_adopt(custom_api, manifest, get_job, delete, log=log, poll_s=poll_s)

    selector, container = master_pod_selector(manifest)
    streamer = _LogStreamer(core_api, namespace, selector, container, log) if stream_logs else None

    def on_change(status: JobStatus) -> None:
        log(f"[launcher] {what}: {status.describe()}")
        if status.phase is JobPhase.RESTARTING:  # say why (e.g. "preempted, resumable")
            for detail in pod_failure_details(core_api, namespace, job_pods_selector(manifest)):
                log(f"[launcher]   {detail}")
        if streamer is not None and status.phase in (JobPhase.RUNNING, JobPhase.RESTARTING):
            streamer.start()

    try:
        final = wait_for_job(get_job, timeout_s=timeout_s, poll_s=poll_s, what=what, on_change=on_change)
    except JobTimeoutError:
        if delete_on_timeout:
            delete()
        raise
    finally:
        if streamer is not None:
            streamer.stop()

    if final.phase is JobPhase.FAILED:
        details = pod_failure_details(core_api, namespace, job_pods_selector(manifest))
        if cleanup == "always":
            delete()
        raise JobFailedError(what, final, details)
    if cleanup in ("always", "on_success"):
        delete()
    return final


def build_manifest(spec: TrainingJobSpec, launcher: Literal["pytorchjob", "trainjob"] = "pytorchjob") -> dict:
    """The manifest of ``spec`` for the chosen launcher."""
    builders = {"pytorchjob": build_pytorchjob, "trainjob": build_trainjob}
    if launcher not in builders:
        raise ValueError(f"launcher must be one of {sorted(builders)}, got {launcher!r}")
    return builders[launcher](spec)


def launch(
    spec: TrainingJobSpec,
    *,
    launcher: Literal["pytorchjob", "trainjob"] = "pytorchjob",
    crd_dir: str | Path | None = None,
    **run_kwargs: Any,
) -> JobStatus:
    """Build the manifest, validate it against the CRDs in ``crd_dir`` (when given), then :func:`run_job`."""
    manifest = build_manifest(spec, launcher)
    if crd_dir is not None:
        from launchers.validate import check_manifest

        check_manifest(manifest, crd_dir)
    return run_job(manifest, **run_kwargs)
