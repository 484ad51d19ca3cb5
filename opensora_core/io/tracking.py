"""Experiment tracking that never blocks or breaks training.

`build_tracker(tracking_cfg)` returns a `Tracker`. `MLflowTracker` talks to an MLflow tracking server through
`MlflowClient` (no global fluent state) from a background thread: every call only appends to an in-memory
queue, the thread sends batches, and when the server is unreachable it keeps the buffer, logs one warning per
outage and retries with exponential backoff. Nothing in training depends on tracking succeeding.

System metrics (``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``, disk and
network, and with NVML ``system/gpu_0_utilization_percentage`` / ``system/gpu_0_memory_usage_megabytes`` ...)
come from MLflow's own monitor (``mlflow.system_metrics``, psutil + nvidia-ml-py), started on the run once it
exists and sampled every ``system_metrics_interval_s`` seconds on its own thread; an outage stops it and the
recovery restarts it, continuing its step count.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opensora_core.config.hints import is_secret_key

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
_BATCH_METRICS = 900  # MLflow accepts 1000 metrics per log_batch
_BATCH_PARAMS = 90  # and 100 params


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def experiment_id(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of MLflow experiment ``name`` through ``client`` (an ``MlflowClient``), created (with
    ``artifact_location``) when missing."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """The id of MLflow experiment ``name``, created (with ``artifact_location``) when missing.

    With a ``sqlite:///`` tracking URI (no server) the artifact location decides where run artifacts go;
    without it MLflow uses ``./mlruns`` of the current directory.
    """
    from mlflow import MlflowClient

    return experiment_id(MlflowClient(tracking_uri=tracking_uri), name, artifact_location)


def step_run_name(pipeline_run: str | None, step: str) -> str | None:
    """The MLflow run name of a pipeline step: ``<pipeline run>-<step>`` (``opensora-train-20261202-train``,
    ``...-eval``), so the runs of one pipeline run sort and read together; None without a pipeline run name
    (MLflow then makes one up)."""
    return f"{pipeline_run}-{step}" if pipeline_run else None


def scrub_uri(value: str) -> str:
    """Drop ``user:password@`` and query strings (presigned signatures) from URL-like values."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username is None and not parts.query:
        return value
    return urlunsplit((parts.scheme, netloc, parts.path, "", parts.fragment))


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Drop every entry whose key looks like a credential (:func:`opensora_core.config.hints.is_secret_key`)."""
    return {k: v for k, v in params.items() if not is_secret_key(k)}


class Tracker:
    """No-op tracker; the interface every tracker implements."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Record run parameters (flattened, credentials removed)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at a global step."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Attach string tags to the run."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file or folder as a run artifact."""

    def log_image(self, image: Any, key: str, step: int) -> None:
        """Record an image (uint8 ``[H, W, 3]`` array or PIL image) as image ``key`` at global step ``step``
        (MLflow's image panel: a step slider per key, comparable across runs)."""

    def flush(self, timeout: float = 10.0) -> bool:
        """Try to send everything buffered; True when the buffer is empty."""
        return True

    def close(self, status: str = "FINISHED", timeout: float = 30.0) -> None:
        """Flush and end the run (status FINISHED, FAILED or KILLED)."""


@dataclass
class _Pending:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: deque = field(default_factory=deque)  # (key, value, timestamp_ms, step)
    artifacts: deque = field(default_factory=deque)  # (local path, artifact_path)
    images: deque = field(default_factory=deque)  # (image, key, step, timestamp_ms)
    end_status: str | None = None


class MLflowTracker(Tracker):
    """Buffered, retrying MLflow tracker (see module docstring).

    `run_id` resumes an existing run (training resume continues the same MLflow run); otherwise a run is created
    in `experiment` on first contact with the server. `request_timeout` bounds each HTTP call.
    `system_metrics_interval_s`: seconds between MLflow system-metrics samples (0: none).
    """

    def __init__(
        self,
        uri: str | None = None,
        experiment: str = "opensora",
        run_name: str | None = None,
        run_id: str | None = None,
        request_timeout: float = 5.0,
        max_backoff: float = 30.0,
        system_metrics_interval_s: float = 15.0,
    ) -> None:
        # Each HTTP call fails fast; the retry policy is ours (buffer + backoff), not MLflow's 7 retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, request_timeout))))
        from mlflow.tracking import MlflowClient

        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "file:./mlruns"
        self.experiment = experiment
        self.run_name = run_name
        self.run_id = run_id
        self._resumed = run_id is not None
        self._system_interval = float(system_metrics_interval_s)
        self._monitor: Any = None
        self._monitor_lock = threading.Lock()
        self._closing = False  # set by close(): no monitor starts after it
        self._client = MlflowClient(tracking_uri=self.uri)
        self._pending = _Pending()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._retry_now = threading.Event()  # flush()/close() cut a backoff wait short
        self._backoff = 0.0
        self._max_backoff = max_backoff
        self._outage = False
        self.failures = 0
        self._thread = threading.Thread(target=self._loop, name="mlflow-tracker", daemon=True)
        self._thread.start()
        self._wake.set()  # create/resume the run right away

    # ---- public API: enqueue only -------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        flat = redact(flatten(params))
        with self._lock:
            for k, v in flat.items():
                self._pending.params[k] = str(v)[:_MAX_PARAM_LEN]
        self._kick()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        with self._lock:
            for k, v in metrics.items():
                if v is None:
                    continue
                self._pending.metrics.append((k, float(v), ts, int(step)))
        self._kick()

    def set_tags(self, tags: dict[str, str]) -> None:
        with self._lock:
            self._pending.tags.update({k: str(v) for k, v in redact(tags).items()})
        self._kick()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with self._lock:
            self._pending.artifacts.append((str(path), artifact_path))
        self._kick()

    def log_image(self, image: Any, key: str, step: int) -> None:
        with self._lock:
            self._pending.images.append((image, key, int(step), int(time.time() * 1000)))
        self._kick()

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        self._retry_now.set()
        self._kick()
        while time.monotonic() < deadline:
            if self._empty() and self._idle.is_set() and self.run_id is not None:
                return True
            time.sleep(0.05)
        return self._empty() and self.run_id is not None

    def close(self, status: str = "FINISHED", timeout: float = 30.0) -> None:
        with self._lock:
            self._pending.end_status = status
        with self._monitor_lock:
            self._closing = True
        self._stop_system_metrics()  # its last samples go out before the run ends
        ok = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        self._retry_now.set()
        self._thread.join(timeout=5)
        if not ok:
            log.warning(
                "MLflow at %s unreachable at close: %d metric points not sent (training output is unaffected)",
                self.uri,
                len(self._pending.metrics),
            )

    @property
    def buffered(self) -> int:
        """Number of metric points waiting to be sent."""
        return len(self._pending.metrics)

    # ---- background sender ------------------------------------------------------------------------
    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def _empty(self) -> bool:
        p = self._pending
        return not (p.params or p.tags or p.metrics or p.artifacts or p.images or p.end_status)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._send_all()
                if self._outage:
                    log.warning("MLflow at %s reachable again; buffered metrics sent", self.uri)
                self._outage = False
                self._backoff = 0.0
            except Exception as e:  # noqa: BLE001 - any tracking failure is non-fatal
                self.failures += 1
                if not self._outage:
                    log.warning(
                        "MLflow at %s unreachable (%s); training continues, metrics are buffered and retried",
                        self.uri,
                        type(e).__name__,
                    )
                self._outage = True
                self._backoff = min(self._max_backoff, max(0.5, self._backoff * 2))
                self._retry_now.wait(self._backoff)
                self._retry_now.clear()
                self._wake.set()
                continue
            if self._empty():
                self._idle.set()

    def _ensure_run(self) -> None:
        if self.run_id is None:
            run = self._client.create_run(
                experiment_id(self._client, self.experiment), run_name=self.run_name
            )
            self.run_id = run.info.run_id
        self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        """Start MLflow's system-metrics monitor on the run (again after an outage stopped it)."""
        if self._system_interval <= 0:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        with self._monitor_lock:
            if self._closing or self._monitor_alive():
                return
            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=self._system_interval,
                resume_logging=self._resumed or self._monitor is not None,  # continue the system/ step count
                tracking_uri=self.uri,
            )
            self._monitor.start()

    def _monitor_alive(self) -> bool:
        # MLflow's monitor keeps its thread in `_process` (None once finished or never started); it also
        # returns on its own when the server is unreachable, which is when it needs a restart.
        thread = getattr(self._monitor, "_process", None)
        return thread is not None and thread.is_alive()

    def _stop_system_metrics(self) -> None:
        with self._monitor_lock:
            if self._monitor is not None:
                self._monitor.finish()

    def _send_all(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self._ensure_run()
        with self._lock:
            params = dict(self._pending.params)
            tags = dict(self._pending.tags)
        items = list(params.items())
        for i in range(0, len(items), _BATCH_PARAMS):
            chunk = items[i : i + _BATCH_PARAMS]
            self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk])
            with self._lock:
                for k, _ in chunk:
                    self._pending.params.pop(k, None)
        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            with self._lock:
                for k in tags:
                    self._pending.tags.pop(k, None)
        while True:
            with self._lock:
                batch = list(self._pending.metrics)[:_BATCH_METRICS]
            if not batch:
                break
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, ts, s) for k, v, ts, s in batch])
            with self._lock:
                for _ in batch:
                    self._pending.metrics.popleft()
        while True:
            with self._lock:
                if not self._pending.artifacts:
                    break
                path, artifact_path = self._pending.artifacts[0]
            if Path(path).is_dir():
                self._client.log_artifacts(self.run_id, path, artifact_path)
            elif Path(path).exists():
                self._client.log_artifact(self.run_id, path, artifact_path)
            else:
                log.warning("artifact %s vanished before upload; skipped", path)
            with self._lock:
                self._pending.artifacts.popleft()
        while True:
            with self._lock:
                if not self._pending.images:
                    break
                image, key, step, ts = self._pending.images[0]
            self._client.log_image(self.run_id, image, key=key, step=step, timestamp=ts)
            with self._lock:
                self._pending.images.popleft()
        with self._lock:
            status = self._pending.end_status
        if status:
            self._client.set_terminated(self.run_id, status=status)
            with self._lock:
                self._pending.end_status = None


def build_tracker(cfg: dict[str, Any] | None, run_id: str | None = None) -> Tracker:
    """Build a tracker from a `tracking = dict(backend=..., uri=..., experiment=..., run_name=...)` config.

    backend "mlflow" -> MLflowTracker (uri falls back to $MLFLOW_TRACKING_URI); None / "none" -> no-op Tracker.
    """
    cfg = dict(cfg or {})
    backend = cfg.pop("backend", "none") or "none"
    if backend == "none":
        return Tracker()
    if backend == "mlflow":
        allowed = {"uri", "experiment", "run_name", "request_timeout", "system_metrics_interval_s"}
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f"tracking: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return MLflowTracker(run_id=run_id, **cfg)
    raise ValueError(f"tracking.backend={backend!r} is not supported; use 'mlflow' or 'none'")
