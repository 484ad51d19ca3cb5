"""What a failed checkpoint save does to a run: retry with backoff, then skip (periodic) or fail (final).

A periodic save that still fails after ``save_retries`` extra attempts is *skipped*: training goes on with a
warning, the MLflow metric ``checkpoint_save_failures`` (consecutive count) and the tag
``checkpoint_last_failure``. Only ``max_failed_saves`` consecutive skipped saves stop the run
(:class:`SaveFailuresExceeded`, a :class:`~opensora_core.train.checkpoint.CheckpointError`). The final save at
the end of training is retried ``final_save_retries`` times before it fails the run.

Every attempt is a whole, collective checkpoint save: the checkpoint writer agrees on success across ranks and
raises ``CheckpointError`` on every rank, so every rank retries, waits and skips in lockstep. A failed attempt
never leaves anything where ``latest`` looks (the writer removes its partial folder; ``s3://`` objects without
the ``_COMPLETE`` marker never count), and the previous complete checkpoint stays untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opensora_core.train.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

# Backoff between attempts doubles from ``backoff_s`` up to this cap.
MAX_BACKOFF_S = 300.0


class SaveFailuresExceeded(CheckpointError):
    """``max_failed_saves`` consecutive periodic saves failed; the run stops (the last good checkpoint stays)."""


def save_with_retries(
    save: Callable[[], str],
    *,
    retries: int,
    backoff_s: float,
    what: str = "checkpoint save",
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Call ``save`` until it returns, at most ``1 + retries`` times; re-raise the last ``CheckpointError``.

    Waits ``backoff_s``, ``2 * backoff_s``, ... (capped at :data:`MAX_BACKOFF_S`) between attempts. Errors
    other than ``CheckpointError`` (bugs, not storage) propagate at once.
    """
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return save()
        except CheckpointError as e:
            if attempt == retries:
                raise
            logger.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.1fs",
                what,
                attempt + 1,
                retries + 1,
                e,
                delay,
            )
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)
    raise AssertionError("unreachable")  # the loop returns or raises


@dataclass
class SaveGuard:
    """Applies the save policy of a run to its periodic and final saves (one per rank, all in lockstep)."""

    retries: int
    backoff_s: float
    max_failed_saves: int
    final_retries: int
    tracker: Any = None
    sleep: Callable[[float], None] = time.sleep
    consecutive_failures: int = 0
    total_failures: int = 0
    skipped_steps: list[int] = field(default_factory=list)
    last_save_s: float | None = None  # duration of the last successful attempt (preemption budgets with it)

    def _timed(self, save: Callable[[], str]) -> Callable[[], str]:
        def run() -> str:
            t0 = time.perf_counter()
            uri = save()
            self.last_save_s = time.perf_counter() - t0
            return uri

        return run

    def periodic(self, save: Callable[[], str], step: int) -> str | None:
        """Save with retries; on failure skip it (``None``) unless it is the ``max_failed_saves``-th in a row."""
        try:
            uri = save_with_retries(
                self._timed(save),
                retries=self.retries,
                backoff_s=self.backoff_s,
                what=f"checkpoint at step {step}",
                sleep=self.sleep,
            )
        except CheckpointError as e:
            self.consecutive_failures += 1
            self.total_failures += 1
            self.skipped_steps.append(step)
            self._report(step, e)
            if self.consecutive_failures >= self.max_failed_saves:
                raise SaveFailuresExceeded(
                    f"{self.consecutive_failures} consecutive checkpoint saves failed (max_failed_saves="
                    f"{self.max_failed_saves}), the last at step {step}: {e}. The newest complete checkpoint is "
                    "intact; fix the storage and resume with --load latest."
                ) from e
            logger.warning(
                "checkpoint at step %d skipped after %d attempts (%d consecutive failure(s) of at most %d): %s; "
                "training continues from memory, the previous checkpoint stays the resume point",
                step,
                self.retries + 1,
                self.consecutive_failures,
                self.max_failed_saves,
                e,
            )
            return None
        if self.consecutive_failures:
            logger.info(
                "checkpoint at step %d saved after %d skipped save(s)", step, self.consecutive_failures
            )
            self._metric(step, 0)
        self.consecutive_failures = 0
        return uri

    def final(self, save: Callable[[], str], step: int) -> str:
        """The last save of a run: ``final_retries`` extra attempts, then the error propagates."""
        return save_with_retries(
            self._timed(save),
            retries=self.final_retries,
            backoff_s=self.backoff_s,
            what=f"final checkpoint at step {step}",
            sleep=self.sleep,
        )

    def _metric(self, step: int, value: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics({"checkpoint_save_failures": float(value)}, step=step)

    def _report(self, step: int, error: Exception) -> None:
        self._metric(step, self.consecutive_failures)
        if self.tracker is not None:
            self.tracker.set_tags(
                {
                    "checkpoint_last_failure": f"step {step}: {type(error).__name__}: {str(error)[:300]}",
                    "checkpoint_failed_saves_total": str(self.total_failures),
                }
            )
