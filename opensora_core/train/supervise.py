"""``python -m opensora_core.train.supervise torchrun ARGS...``: the training pod's entry point.

torchrun turns every worker failure and every signal into its own exit code 1 (it forwards SIGTERM to its
workers, waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds, SIGKILLs what is left, then exits 1), so the pod could
not say "preempted" by itself. This supervisor runs the command as a child and:

- forwards SIGTERM/SIGINT to it (the pod's PID 1 gets Kubernetes' SIGTERM);
- gives the workers a preemption record path (``OPENSORA_PREEMPTION_RECORD``) and makes torchrun wait for them
  as long as the grace period (``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` defaults to ``OPENSORA_PREEMPT_GRACE_S``);
- exits with :data:`~opensora_core.train.preemption.PREEMPTED_EXIT_CODE` when a worker recorded a preemption,
  else with the child's exit code (128+N when the child died of signal N).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from opensora_core.train.preemption import PREEMPTED_EXIT_CODE, RECORD_ENV, grace_from_env

SHUTDOWN_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``argv`` (the torchrun command) under supervision; return the exit code for the pod."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m opensora_core.train.supervise torchrun [ARGS...]", file=sys.stderr)
        return 2
    try:
        grace = grace_from_env()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="opensora-supervise-") as tmp:
        record = Path(tmp) / "preempted.json"
        env = dict(os.environ)
        env[RECORD_ENV] = str(record)
        env.setdefault(SHUTDOWN_ENV, str(math.ceil(grace)))
        try:
            child = subprocess.Popen(command, env=env)
        except FileNotFoundError as e:
            print(f"error: cannot run {command[0]!r}: {e}", file=sys.stderr)
            return 127

        def forward(signum: int, frame: object) -> None:
            if child.poll() is None:
                child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        code = child.wait()
        if record.is_file():
            info = json.loads(record.read_text())
            print(
                f"[supervise] preempted after global step {info['global_step']}, resumable from "
                f"{info['checkpoint']} ({'saved now' if info['saved'] else 'earlier checkpoint'}); "
                f"exit {PREEMPTED_EXIT_CODE}",
                file=sys.stderr,
                flush=True,
            )
            return PREEMPTED_EXIT_CODE
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
