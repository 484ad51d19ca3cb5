"""Job phase from status conditions: pure functions over PyTorchJob / TrainJob ``status`` snapshots.

PyTorchJob (Training Operator v1) conditions: ``Created``, ``Running``, ``Restarting``, ``Suspended``,
``Succeeded``, ``Failed``. TrainJob (Trainer v2) conditions: ``Suspended``, ``Complete``, ``Failed`` (and
``Created`` in early releases); a TrainJob without a terminal condition counts as running while
``status.jobsStatus`` reports active child jobs. Only conditions with ``status: "True"`` count.

Precedence within one snapshot: Failed > Succeeded/Complete > Suspended > the most recent of
Restarting/Running/Created > Pending (no condition yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from opensora_core.train.preemption import PREEMPTED_EXIT_CODE

# What the training container's exit codes mean (python -m opensora_core.train[.supervise]).
EXIT_CODE_MEANINGS = {
    1: "error (see the log)",
    2: "bad config or arguments",
    3: "aborted after max_bad_steps non-finite steps (checkpoint saved)",
    PREEMPTED_EXIT_CODE: "preempted, resumable (stopped on SIGTERM; resumes from the newest checkpoint)",
    137: "killed (SIGKILL: out of memory, or the grace period ran out)",
    143: "terminated by SIGTERM before the trainer could react",
}


def describe_exit_code(code: int | None) -> str:
    """A short meaning of a training container's exit code (empty when unknown)."""
    return EXIT_CODE_MEANINGS.get(code, "") if code is not None else ""


def is_preempted(code: int | None) -> bool:
    """True for the exit code of a trainer that stopped on SIGTERM and can resume."""
    return code == PREEMPTED_EXIT_CODE


class JobPhase(StrEnum):
    PENDING = "Pending"
    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


_CONDITION_PHASE = {
    "Created": JobPhase.CREATED,
    "Running": JobPhase.RUNNING,
    "Restarting": JobPhase.RESTARTING,
    "Suspended": JobPhase.SUSPENDED,
    "Succeeded": JobPhase.SUCCEEDED,
    "Complete": JobPhase.SUCCEEDED,
    "Failed": JobPhase.FAILED,
}
_PROGRESS = (JobPhase.CREATED, JobPhase.RUNNING, JobPhase.RESTARTING)


@dataclass(frozen=True)
class JobStatus:
    """Phase of a job with the reason and message of the condition that decided it."""

    phase: JobPhase
    reason: str = ""
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.phase.terminal

    @property
    def succeeded(self) -> bool:
        return self.phase is JobPhase.SUCCEEDED

    def describe(self) -> str:
        detail = ": ".join(x for x in (self.reason, self.message) if x)
        return f"{self.phase.value} ({detail})" if detail else self.phase.value


def _split(snapshot: Any) -> tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]]:
    """Accept a job object, its ``status`` mapping, or a bare list of conditions."""
    if snapshot is None:
        return [], {}
    if isinstance(snapshot, Mapping):
        status = (
            snapshot if ("conditions" in snapshot or "jobsStatus" in snapshot) else snapshot.get("status")
        )
        status = status or {}
        return list(status.get("conditions") or []), status
    return list(snapshot), {}


def _is_true(cond: Mapping[str, Any]) -> bool:
    return str(cond.get("status", "")).lower() == "true"


def job_status(snapshot: Any) -> JobStatus:
    """The phase of one snapshot (job object, ``status`` dict, or list of conditions)."""
    conditions, status = _split(snapshot)
    active: dict[JobPhase, tuple[tuple[str, int], Mapping[str, Any]]] = {}
    for index, cond in enumerate(conditions):
        phase = _CONDITION_PHASE.get(str(cond.get("type", "")))
        if phase is None or not _is_true(cond):
            continue
        when = str(cond.get("lastTransitionTime") or cond.get("lastUpdateTime") or "")
        key = (when, index)
        if phase not in active or key >= active[phase][0]:
            active[phase] = (key, cond)

    def make(phase: JobPhase) -> JobStatus:
        cond = active[phase][1]
        return JobStatus(phase, str(cond.get("reason") or ""), str(cond.get("message") or ""))

    for phase in (JobPhase.FAILED, JobPhase.SUCCEEDED, JobPhase.SUSPENDED):
        if phase in active:
            return make(phase)
    progress = [p for p in _PROGRESS if p in active]
    if progress:
        return make(max(progress, key=lambda p: active[p][0]))
    jobs = status.get("jobsStatus") or []
    if any(int(j.get("active", 0) or 0) > 0 or int(j.get("ready", 0) or 0) > 0 for j in jobs):
        return JobStatus(JobPhase.RUNNING, "JobsActive", "child jobs are active")
    return JobStatus(JobPhase.PENDING)


@dataclass(frozen=True)
class JobTimeline:
    """What a sequence of snapshots shows: the latest status, the distinct phases in order, restart count."""

    final: JobStatus
    phases: tuple[JobPhase, ...]
    restarts: int

    @property
    def terminal(self) -> bool:
        return self.final.terminal


def summarize(snapshots: Iterable[Any]) -> JobTimeline:
    """Fold snapshots (oldest first) into a :class:`JobTimeline`; an empty sequence is Pending."""
    final = JobStatus(JobPhase.PENDING)
    phases: list[JobPhase] = []
    restarts = 0
    for snap in snapshots:
        final = job_status(snap)
        if not phases or phases[-1] is not final.phase:
            if final.phase is JobPhase.RESTARTING:
                restarts += 1
            phases.append(final.phase)
    return JobTimeline(final=final, phases=tuple(phases) or (JobPhase.PENDING,), restarts=restarts)
