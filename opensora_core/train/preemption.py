"""Preemption: SIGTERM -> every rank finishes its step, the job saves (if the grace period allows) and exits.

Kubernetes sends SIGTERM to a pod it preempts, evicts or drains, then SIGKILL after the pod's
``terminationGracePeriodSeconds``. The container runs ``python -m opensora_core.train.supervise torchrun ...``
(:mod:`opensora_core.train.supervise`), which forwards the signal to torchrun, which forwards it to its workers.

In a worker, :class:`PreemptionWatch` turns SIGTERM into a flag. The ranks agree on it inside the training
step's existing all-reduce (the flag rides along with the loss), so all of them stop after the same step even
when only one node was signalled. Then rank 0 decides, for everyone, whether a checkpoint fits into what is left of the
grace period (``OPENSORA_PREEMPT_GRACE_S`` seconds from the signal, default :data:`DEFAULT_GRACE_S`): it does
when no save was measured yet (a cut-short save is harmless: checkpoints are published atomically) or when
1.5x the last measured save time fits. Otherwise the job exits without saving and the previous checkpoint is
the resume point. Either way :class:`Preempted` ends the run; ``__main__`` writes the preemption record (for the
supervisor) and exits with :data:`PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# >= 128: the Training Operator's ExitCode restart policy treats it as retryable; above 128+64, so it is never
# mistaken for "killed by signal N" (128+N).
PREEMPTED_EXIT_CODE = 200
GRACE_ENV = "OPENSORA_PREEMPT_GRACE_S"
RECORD_ENV = "OPENSORA_PREEMPTION_RECORD"
# torchrun's own default wait for workers after forwarding SIGTERM (TORCH_ELASTIC_SHUTDOWN_TIMEOUT).
DEFAULT_GRACE_S = 30.0
# A save is attempted when SAVE_MARGIN x the last measured save time fits into the time left.
SAVE_MARGIN = 1.5


class Preempted(Exception):
    """The run stopped on SIGTERM after ``global_step``; ``checkpoint_dir`` is the resume point (maybe older)."""

    def __init__(self, global_step: int, checkpoint_dir: str | None, saved: bool) -> None:
        how = "saved a checkpoint" if saved else "no time to save; resuming from the previous checkpoint"
        super().__init__(f"preempted after global step {global_step} ({how}: {checkpoint_dir})")
        self.global_step = global_step
        self.checkpoint_dir = checkpoint_dir
        self.saved = saved


def grace_from_env(environ: Any = None) -> float:
    """``OPENSORA_PREEMPT_GRACE_S`` as seconds (default :data:`DEFAULT_GRACE_S`); ValueError names the variable."""
    text = (os.environ if environ is None else environ).get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{GRACE_ENV}={text!r} must be a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{GRACE_ENV}={text!r} must be > 0 seconds")
    return value


class PreemptionWatch:
    """SIGTERM flag of this process and the collective decision to stop (see the module docstring)."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.signalled_at: float | None = None
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """Catch SIGTERM in this process (main thread only; elsewhere the watch stays inert)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._installed = True

    def uninstall(self) -> None:
        """Restore the SIGTERM handler that was there before :meth:`install`."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signalled_at is None:
            self.signalled_at = self.clock()

    def time_left(self) -> float:
        """Seconds of the grace period left (the whole period before any signal)."""
        if self.signalled_at is None:
            return self.grace_s
        return self.grace_s - (self.clock() - self.signalled_at)

    @property
    def signalled(self) -> bool:
        """This rank got SIGTERM. The trainer sums this flag over ranks in its per-step all-reduce, so every
        rank stops after the same step."""
        return self.signalled_at is not None

    def should_save(self, env: Any, last_save_s: float | None) -> bool:
        """Rank 0's verdict for all ranks: does a checkpoint fit into the grace period left?"""
        verdict = None
        if env.rank == 0:
            left = self.time_left()
            verdict = last_save_s is None or SAVE_MARGIN * last_save_s <= left
            logger.warning(
                "preemption: %.1fs of the %.0fs grace period left, last save took %s: %s",
                left,
                self.grace_s,
                "(not measured yet)" if last_save_s is None else f"{last_save_s:.1f}s",
                "saving a checkpoint"
                if verdict
                else "exiting without saving (the previous checkpoint stays)",
            )
        return bool(env.broadcast_object(verdict))


def write_record(preempted: Preempted, environ: Any = None) -> Path | None:
    """Write the preemption record the supervisor looks for (``OPENSORA_PREEMPTION_RECORD``; unset: none)."""
    path = (os.environ if environ is None else environ).get(RECORD_ENV, "").strip()
    if not path:
        return None
    record = {
        "global_step": preempted.global_step,
        "checkpoint": preempted.checkpoint_dir,
        "saved": preempted.saved,
    }
    out = Path(path)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, out)
    return out
