"""Faults the training loop injects on request, for the tests of bad-step handling and kill/resume.

Environment variables, read once when a trainer is built (unset: no fault, the loop runs as always):

- ``OPENSORA_DEBUG_NAN_STEPS="3,4"``: rank 0's loss is NaN at those global steps (every rank then skips them);
- ``OPENSORA_DEBUG_PAUSE_AFTER_STEP=N``: every rank stops after global step N (and its checkpoint), prints
  ``PAUSED after step N`` and sleeps until it is killed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

NAN_STEPS_ENV = "OPENSORA_DEBUG_NAN_STEPS"
PAUSE_AFTER_STEP_ENV = "OPENSORA_DEBUG_PAUSE_AFTER_STEP"

L = TypeVar("L")


@dataclass(frozen=True)
class Faults:
    """The faults requested for one run: NaN-loss steps and the step to pause after."""

    nan_steps: frozenset[int] = frozenset()
    pause_after_step: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        """Read the two environment variables; a malformed value is a ValueError naming the variable."""
        nan_text = environ.get(NAN_STEPS_ENV, "").strip()
        pause_text = environ.get(PAUSE_AFTER_STEP_ENV, "").strip()
        try:
            nan_steps = frozenset(int(s) for s in nan_text.split(",") if s.strip())
        except ValueError:
            raise ValueError(f"{NAN_STEPS_ENV}={nan_text!r} must be comma-separated step numbers") from None
        try:
            pause = int(pause_text) if pause_text else None
        except ValueError:
            raise ValueError(f"{PAUSE_AFTER_STEP_ENV}={pause_text!r} must be a step number") from None
        return cls(nan_steps, pause)

    def poison_loss(self, loss: L, step: int, rank: int) -> L:
        """``loss * NaN`` on rank 0 at a requested step, else ``loss`` itself (a tensor or a float)."""
        if rank == 0 and step in self.nan_steps:
            return loss * float("nan")  # type: ignore[operator]
        return loss

    def pause_if_due(self, step: int) -> None:
        """At the requested step: flush the logs, print ``PAUSED after step N`` and sleep until killed."""
        if self.pause_after_step is None or step != self.pause_after_step:
            return
        logger.warning("%s: paused after step %d until killed", PAUSE_AFTER_STEP_ENV, step)
        for handler in logging.getLogger().handlers:
            handler.flush()
        print(f"PAUSED after step {step}", flush=True)
        while True:
            time.sleep(3600)
