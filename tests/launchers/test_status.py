"""Job phases from recorded condition sequences (PyTorchJob and TrainJob) and the polling wait with timeout."""

from __future__ import annotations

import pytest

from launchers.runner import JobTimeoutError, wait_for_job
from launchers.status import JobPhase, JobStatus, job_status, summarize


def cond(type_: str, status: str, t: str, reason: str = "", message: str = "") -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason or f"PyTorchJob{type_}",
        "message": message,
        "lastUpdateTime": f"2026-01-01T00:{t}Z",
        "lastTransitionTime": f"2026-01-01T00:{t}Z",
    }


CREATED = cond("Created", "True", "00:00", message="PyTorchJob default/run1 is created.")
RUNNING = cond("Running", "True", "00:30", message="PyTorchJob default/run1 is running.")

# What the Training Operator records for: create -> run -> master restarts -> run -> success.
RESTART_THEN_SUCCESS = [
    {"status": {}},
    {"status": {"conditions": [CREATED]}},
    {"status": {"conditions": [CREATED, RUNNING]}},
    {
        "status": {
            "conditions": [
                CREATED,
                cond("Running", "False", "05:00"),
                cond(
                    "Restarting",
                    "True",
                    "05:00",
                    message="PyTorchJob run1 is restarting because 1 Master replica(s) failed.",
                ),
            ]
        }
    },
    {
        "status": {
            "conditions": [
                CREATED,
                cond("Restarting", "False", "06:00"),
                cond("Running", "True", "06:00", message="PyTorchJob default/run1 is running."),
            ]
        }
    },
    {
        "status": {
            "conditions": [
                CREATED,
                cond("Restarting", "False", "06:00"),
                cond("Running", "False", "40:00"),
                cond("Succeeded", "True", "40:00", message="PyTorchJob default/run1 successfully completed."),
            ]
        }
    },
]

FAILURE = [
    {"status": {"conditions": [CREATED]}},
    {"status": {"conditions": [CREATED, RUNNING]}},
    {
        "status": {
            "conditions": [
                CREATED,
                cond("Running", "False", "09:00"),
                cond(
                    "Failed",
                    "True",
                    "09:00",
                    reason="PyTorchJobFailed",
                    message="PyTorchJob default/run1 is failed because 1 Worker replica(s) failed.",
                ),
            ]
        }
    },
]


def test_status_restart_then_success():
    timeline = summarize(RESTART_THEN_SUCCESS)
    assert timeline.phases == (
        JobPhase.PENDING,
        JobPhase.CREATED,
        JobPhase.RUNNING,
        JobPhase.RESTARTING,
        JobPhase.RUNNING,
        JobPhase.SUCCEEDED,
    )
    assert timeline.restarts == 1 and timeline.terminal and timeline.final.succeeded
    assert timeline.final.message == "PyTorchJob default/run1 successfully completed."
    restarting = job_status(RESTART_THEN_SUCCESS[3])
    assert restarting.phase is JobPhase.RESTARTING and "1 Master replica(s) failed" in restarting.message
    assert not restarting.terminal


def test_status_failure_surfaces_reason_and_message():
    timeline = summarize(FAILURE)
    final = timeline.final
    assert timeline.phases == (JobPhase.CREATED, JobPhase.RUNNING, JobPhase.FAILED)
    assert (final.phase, final.reason) == (JobPhase.FAILED, "PyTorchJobFailed")
    assert "1 Worker replica(s) failed" in final.message and final.terminal and not final.succeeded
    assert final.describe() == (
        "Failed (PyTorchJobFailed: PyTorchJob default/run1 is failed because 1 Worker replica(s) failed.)"
    )


def test_status_deadline_and_precedence_rules():
    deadline = cond(
        "Failed", "True", "59:00", reason="DeadlineExceeded", message="active longer than deadline"
    )
    # Failed wins over a stale Running=True; condition status False never counts
    assert job_status([CREATED, RUNNING, deadline]).reason == "DeadlineExceeded"
    assert job_status([CREATED, cond("Running", "False", "01:00")]).phase is JobPhase.CREATED
    assert job_status([CREATED, RUNNING, cond("Suspended", "True", "02:00")]).phase is JobPhase.SUSPENDED
    # Restarting and Running both True (mid-update): the most recent transition wins
    both = [CREATED, cond("Running", "True", "03:00"), cond("Restarting", "True", "02:00")]
    assert job_status(both).phase is JobPhase.RUNNING
    assert job_status(None).phase is JobPhase.PENDING and job_status([]).phase is JobPhase.PENDING
    assert job_status({"conditions": [RUNNING]}).phase is JobPhase.RUNNING  # a bare status dict works too
    assert summarize([]).final.phase is JobPhase.PENDING


def test_status_trainjob_conditions_and_jobs_status():
    suspended = {
        "type": "Suspended",
        "status": "True",
        "reason": "Suspended",
        "message": "queued by Kueue",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    resumed = {
        **suspended,
        "status": "False",
        "reason": "Resumed",
        "lastTransitionTime": "2026-01-01T00:01:00Z",
    }
    active = [{"name": "node", "active": 2, "ready": 2, "failed": 0, "succeeded": 0, "suspended": 0}]
    complete = {
        "type": "Complete",
        "status": "True",
        "reason": "JobsCompleted",
        "message": "jobs completed",
        "lastTransitionTime": "2026-01-01T01:00:00Z",
    }
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "DeadlineExceeded",
        "message": "deadline exceeded",
        "lastTransitionTime": "2026-01-01T01:00:00Z",
    }
    snapshots = [
        {"metadata": {"name": "run1"}, "spec": {}},
        {"status": {"conditions": [suspended]}},
        {"status": {"conditions": [resumed], "jobsStatus": active}},
        {"status": {"conditions": [resumed, complete], "jobsStatus": active}},
    ]
    timeline = summarize(snapshots)
    assert timeline.phases == (JobPhase.PENDING, JobPhase.SUSPENDED, JobPhase.RUNNING, JobPhase.SUCCEEDED)
    assert timeline.final.reason == "JobsCompleted"
    fail = job_status({"status": {"conditions": [resumed, failed]}})
    assert (fail.phase, fail.reason, fail.message) == (
        JobPhase.FAILED,
        "DeadlineExceeded",
        "deadline exceeded",
    )


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _feed(snapshots):
    it = iter(snapshots)
    last = {"value": None}

    def get():
        last["value"] = next(it, last["value"])
        return last["value"]

    return get


def test_wait_for_job_returns_terminal_status_and_reports_each_change():
    clock, seen = FakeClock(), []
    final = wait_for_job(
        _feed(RESTART_THEN_SUCCESS),
        timeout_s=600,
        poll_s=10,
        on_change=seen.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert final.phase is JobPhase.SUCCEEDED and clock.now == 50
    assert [s.phase for s in seen] == list(summarize(RESTART_THEN_SUCCESS).phases)
    failed = wait_for_job(_feed(FAILURE), timeout_s=600, poll_s=10, clock=clock, sleep=clock.sleep)
    assert failed.reason == "PyTorchJobFailed"


def test_wait_for_job_times_out_with_last_phase():
    clock = FakeClock()
    with pytest.raises(JobTimeoutError, match=r"did not finish within 60s \(last phase: Running") as exc:
        wait_for_job(
            _feed(FAILURE[:2]),
            timeout_s=60,
            poll_s=25,
            what="PyTorchJob default/run1",
            clock=clock,
            sleep=clock.sleep,
        )
    assert exc.value.status.phase is JobPhase.RUNNING and clock.now == 60
    assert isinstance(exc.value, TimeoutError)
    with pytest.raises(ValueError, match="timeout_s"):
        wait_for_job(_feed([]), timeout_s=0)


def test_wait_for_job_treats_a_deleted_job_as_failed():
    clock = FakeClock()
    status = wait_for_job(lambda: None, timeout_s=60, clock=clock, sleep=clock.sleep)
    assert status == JobStatus(JobPhase.FAILED, "Deleted", "the job object was deleted while waiting")
