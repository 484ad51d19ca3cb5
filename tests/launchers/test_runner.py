"""run_job against fake Kubernetes APIs: create, watch, log streaming, failure reasons, cleanup, timeouts."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from kubernetes.client.exceptions import ApiException

from launchers import TrainingJobSpec, build_pytorchjob, build_trainjob
from launchers.runner import (
    JobError,
    JobFailedError,
    JobTimeoutError,
    launch,
    master_pod_selector,
    resource_of,
    run_job,
)

SPEC = TrainingJobSpec(
    name="run1", namespace="ml", image="img:1", config="c.py", num_nodes=2, gpus_per_node=1
)


def _conds(*types: str, failed: tuple[str, str] | None = None) -> dict:
    conds = [
        {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": f"t{i}"}
        for i, t in enumerate(types)
    ]
    if failed:
        conds.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": failed[0],
                "message": failed[1],
                "lastTransitionTime": "t9",
            }
        )
    return {"status": {"conditions": conds}}


class FakeCustomApi:
    def __init__(self, snapshots, create_error=None, hold_running_until: threading.Event | None = None):
        self.snapshots, self.create_error, self.hold = list(snapshots), create_error, hold_running_until
        self.created, self.deleted, self.i = [], [], 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        if self.create_error is not None:
            raise self.create_error
        self.created.append((group, version, namespace, plural, body["metadata"]["name"]))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        last = len(self.snapshots) - 1
        if self.hold is not None and self.i >= last and not self.hold.wait(5):
            return self.snapshots[last - 1]  # keep reporting the previous phase until the hold is released
        snap = self.snapshots[min(self.i, last)]
        self.i += 1
        return snap

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body=None):
        self.deleted.append((plural, namespace, name))


class FakeLog:
    def __init__(self, chunks):
        self.chunks = chunks
        self.released = False

    def stream(self, amt):
        yield from self.chunks

    def release_conn(self):
        self.released = True


def _pod(
    name: str, container: str, running: bool = True, terminated=None, last_terminated=None, phase="Running"
):
    state = SimpleNamespace(running=SimpleNamespace() if running else None, terminated=terminated)
    cs = SimpleNamespace(
        name=container, state=state, last_state=SimpleNamespace(terminated=last_terminated), restart_count=0
    )
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, uid=f"uid-{name}"),
        status=SimpleNamespace(container_statuses=[cs], phase=phase, conditions=None),
    )


class FakeCoreApi:
    def __init__(self, pods, log_chunks=()):
        self.pods, self.log_chunks, self.selectors, self.logs_read = pods, list(log_chunks), [], []

    def list_namespaced_pod(self, namespace, label_selector):
        self.selectors.append(label_selector)
        return SimpleNamespace(items=self.pods)

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        self.logs_read.append((name, container))
        return FakeLog(self.log_chunks)


def test_run_job_success_streams_master_logs_and_cleans_up():
    lines: list[str] = []
    seen_logs = threading.Event()

    def sink(line: str) -> None:
        lines.append(line)
        if line == "step 2 loss 0.4":
            seen_logs.set()

    custom = FakeCustomApi(
        [_conds("Created"), _conds("Created", "Running"), _conds("Created", "Succeeded")],
        hold_running_until=seen_logs,
    )
    core = FakeCoreApi([_pod("run1-master-0", "pytorch")], [b"step 1 loss 0.5\nstep 2 ", b"loss 0.4\n"])
    status = run_job(
        build_pytorchjob(SPEC), timeout_s=30, poll_s=0.01, log=sink, custom_api=custom, core_api=core
    )
    assert status.succeeded
    assert custom.created == [("kubeflow.org", "v1", "ml", "pytorchjobs", "run1")]
    assert custom.deleted == [("pytorchjobs", "ml", "run1")]
    assert "step 1 loss 0.5" in lines and "step 2 loss 0.4" in lines
    assert core.logs_read == [("run1-master-0", "pytorch")]
    assert "training.kubeflow.org/replica-type=master" in core.selectors[0]
    assert any("Succeeded" in line for line in lines)


def test_run_job_failure_reports_reason_and_pod_causes_and_keeps_the_job():
    oom = SimpleNamespace(exit_code=137, reason="OOMKilled", message=None)
    custom = FakeCustomApi(
        [_conds("Created", "Running", failed=("PyTorchJobFailed", "1 Worker replica(s) failed."))]
    )
    core = FakeCoreApi([_pod("run1-worker-0", "pytorch", running=False, terminated=oom, phase="Failed")])
    with pytest.raises(JobFailedError) as exc:
        run_job(
            build_pytorchjob(SPEC),
            timeout_s=30,
            poll_s=0.01,
            log=lambda s: None,
            custom_api=custom,
            core_api=core,
            stream_logs=False,
        )
    err = exc.value
    assert err.status.reason == "PyTorchJobFailed" and "1 Worker replica(s) failed." in str(err)
    assert err.details == ["pod run1-worker-0 container pytorch: OOMKilled (exit 137)"]
    assert custom.deleted == []  # cleanup="on_success" keeps failed jobs for inspection
    custom2 = FakeCustomApi(custom.snapshots)
    with pytest.raises(JobFailedError):
        run_job(
            build_pytorchjob(SPEC),
            timeout_s=30,
            poll_s=0.01,
            log=lambda s: None,
            custom_api=custom2,
            core_api=core,
            stream_logs=False,
            cleanup="always",
        )
    assert custom2.deleted == [("pytorchjobs", "ml", "run1")]


def test_run_job_timeout_deletes_the_job_and_api_errors_get_hints():
    custom = FakeCustomApi([_conds("Created", "Running")])
    start = time.monotonic()
    with pytest.raises(JobTimeoutError, match="did not finish within 0.2s"):
        run_job(
            build_pytorchjob(SPEC),
            timeout_s=0.2,
            poll_s=0.05,
            log=lambda s: None,
            custom_api=custom,
            core_api=FakeCoreApi([]),
            stream_logs=False,
        )
    assert time.monotonic() - start < 5 and custom.deleted == [("pytorchjobs", "ml", "run1")]
    for status, needle in ((404, "is the operator"), (403, "forbidden")):
        failing = FakeCustomApi([], create_error=ApiException(status=status, reason="x"))
        with pytest.raises(JobError, match=needle):
            run_job(
                build_pytorchjob(SPEC),
                timeout_s=1,
                log=lambda s: None,
                custom_api=failing,
                core_api=FakeCoreApi([]),
            )


def test_resource_and_selectors_for_both_launchers(crds):
    tj = build_trainjob(SPEC)
    assert resource_of(tj) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
    selector, container = master_pod_selector(tj)
    assert "jobset.sigs.k8s.io/jobset-name=run1" in selector and container == "node"
    assert "replica-type=master" in master_pod_selector(build_pytorchjob(SPEC))[0]
    elastic = TrainingJobSpec(**{**SPEC.model_dump(), "elastic": {"min_nodes": 1, "max_nodes": 2}})
    assert "replica-type=worker" in master_pod_selector(build_pytorchjob(elastic))[0]
    with pytest.raises(ValueError, match="unsupported kind"):
        resource_of({"kind": "TFJob"})
    custom = FakeCustomApi([_conds("Complete")])
    status = launch(
        SPEC,
        launcher="trainjob",
        crd_dir=crds,
        timeout_s=5,
        poll_s=0.01,
        log=lambda s: None,
        custom_api=custom,
        core_api=FakeCoreApi([]),
        stream_logs=False,
    )
    assert status.succeeded and custom.created[0][3] == "trainjobs"


class ExistingJobApi(FakeCustomApi):
    """A job named like ours already exists (``existing``); it disappears ``gone_after`` gets after deletion."""

    def __init__(self, existing, snapshots, gone_after: int = 2):
        super().__init__(snapshots)
        self.existing, self.gone_after, self.create_calls = existing, gone_after, 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.create_calls += 1
        if self.existing is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        super().create_namespaced_custom_object(group, version, namespace, plural, body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if self.deleted and self.existing is not None:
            self.gone_after -= 1
            if self.gone_after <= 0:
                self.existing = None
                raise ApiException(status=404, reason="NotFound")
        if self.existing is not None:
            return self.existing
        return super().get_namespaced_custom_object(group, version, namespace, plural, name)


def _existing(*conds: str, failed=None, ours: bool = True) -> dict:
    labels = {"app.kubernetes.io/managed-by": "opensora-platform"} if ours else {"app": "other"}
    return {"metadata": {"name": "run1", "labels": labels}, **_conds(*conds, failed=failed)}


def _run(custom) -> tuple[object, list[str]]:
    lines: list[str] = []
    status = run_job(
        build_pytorchjob(SPEC),
        timeout_s=5,
        poll_s=0.01,
        log=lines.append,
        custom_api=custom,
        core_api=FakeCoreApi([]),
        stream_logs=False,
        cleanup="never",
    )
    return status, lines


def test_retried_step_adopts_the_running_job():
    running = _existing("Created", "Running")
    custom = ExistingJobApi(running, [])
    custom.snapshots = [running, _existing("Created", "Succeeded")]

    def get(group, version, namespace, plural, name):  # the adopted job runs on, then succeeds
        snap = custom.snapshots[min(custom.i, 1)]
        custom.i += 1
        return snap

    custom.get_namespaced_custom_object = get
    status, lines = _run(custom)
    assert status.succeeded
    assert custom.created == [] and custom.deleted == [] and custom.create_calls == 1
    assert any("adopting it" in line for line in lines)


def test_rerun_replaces_a_failed_job_deliberately():
    failed = _existing("Created", "Running", failed=("PyTorchJobFailed", "x"))
    custom = ExistingJobApi(failed, [_conds("Created", "Running"), _conds("Created", "Succeeded")])
    status, lines = _run(custom)
    assert status.succeeded
    assert custom.deleted == [("pytorchjobs", "ml", "run1")]
    assert (
        custom.created == [("kubeflow.org", "v1", "ml", "pytorchjobs", "run1")] and custom.create_calls == 2
    )
    assert any("deleting it and creating it again" in line for line in lines)


def test_a_same_named_job_of_someone_else_is_never_touched():
    custom = ExistingJobApi(_existing("Created", "Running", ours=False), [])
    with pytest.raises(JobError, match="not created by opensora-platform"):
        _run(custom)
    assert custom.deleted == [] and custom.created == []


def test_preempted_pods_are_reported_as_resumable():
    from launchers.runner import pod_failure_details

    preempted = SimpleNamespace(exit_code=200, reason="Error", message=None)
    core = FakeCoreApi([_pod("run1-master-0", "pytorch", last_terminated=preempted)])
    details = pod_failure_details(core, "ml", "sel")
    assert details == [
        "pod run1-master-0 container pytorch: Error (exit 200): preempted, resumable (stopped on SIGTERM; "
        "resumes from the newest checkpoint)"
    ]
    custom = FakeCustomApi([_conds("Created", "Running", failed=("PyTorchJobFailed", "backoff limit"))])
    with pytest.raises(JobFailedError) as exc:
        run_job(
            build_pytorchjob(SPEC),
            timeout_s=5,
            poll_s=0.01,
            log=lambda s: None,
            custom_api=custom,
            core_api=core,
            stream_logs=False,
        )
    assert exc.value.preempted
