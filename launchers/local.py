"""The `local` launcher of the train step: ``torchrun --standalone`` in the step's own process tree.

Used by the local pipeline run (`make demo`, ``kfp.local``) and on a single machine without Kubernetes: the
same ``python -m opensora_core.train`` command the cluster launchers put in their pods, with ``nproc`` processes
on this machine (CPU: gloo; GPUs: one process per GPU). Output lines are passed to ``log`` as they come, so the
caller can show them and pick up the trainer's metric lines.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence


class LocalTrainingError(RuntimeError):
    """torchrun exited with a non-zero status (the message holds the last output lines)."""


def torchrun_command(
    args: Sequence[str], nproc: int, module: str = "opensora_core.train", python: str | None = None
) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m <module> <args...>``."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *args,
    ]


def run_torchrun(
    args: Sequence[str],
    nproc: int,
    *,
    log: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
    module: str = "opensora_core.train",
) -> None:
    """Run the trainer under torchrun and stream its output to ``log``; raise LocalTrainingError on failure.

    ``env`` adds to this process's environment. On CPU each process gets
    ``cpu_count // nproc`` threads (torchrun would pin them to 1).
    """
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = torchrun_command(args, nproc, module)
    log(f"[local] {' '.join(cmd)}")
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        cmd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                log(line)
            code = proc.wait()
        except BaseException:
            _terminate(proc)
            raise
    if code != 0:
        raise LocalTrainingError(
            f"training exited with status {code} ({' '.join(cmd)}); last output:\n" + "\n".join(tail)
        )


def _terminate(proc: subprocess.Popen) -> None:
    """Stop torchrun and its workers (they share its process group)."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
