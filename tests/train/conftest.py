"""Fixtures for trainer tests: a tiny synthetic clip set and tiny training configs (8 frames, 16x16, identity VAE)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

# SeaweedFS S3 server fixtures shared with tests/io (s3:// checkpoint tests).
from tests.io.conftest import s3_bucket, s3_server  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = REPO / "configs" / "debug" / "tiny_train.py"

# 8 frames of 16x16 pixels, patch (1, 4, 4) -> 8 x 4 x 4 = 128 tokens; hidden 32, depth 2.
TINY_OVERRIDES: dict[str, object] = {
    "dataset.image_size": (16, 16),
    "dataset.num_frames": 8,
    "model.hidden_size": 32,
    "model.num_heads": 2,
    "model.depth": 2,
    "batch_size": 2,
    "log_every": 1,
    "ckpt_every": 0,
    "max_steps": 4,
    "num_workers": 0,
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for the cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """meta.csv of 16 synthetic 16x16 clips with 10 frames."""
    from opensora_core.data.synthetic import generate

    out = tmp_path_factory.mktemp("tiny_synthetic")
    generate(out, 16, size=16, num_frames=10, seed=0)
    return str(out / "meta.csv")


@pytest.fixture
def tiny_config(tiny_dataset: str, tmp_path: Path) -> Callable[..., object]:
    """``make(**overrides) -> RunConfig`` of the tiny training config writing under ``tmp_path/outputs``."""
    from opensora_core.config import load_config

    def make(**overrides: object) -> object:
        values = {
            **TINY_OVERRIDES,
            "dataset.data_path": tiny_dataset,
            "outputs": str(tmp_path / "outputs"),
        }
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        return load_config(TINY_TRAIN, overrides=values)

    return make


def tiny_cli_overrides(data_path: str, **extra: object) -> list[str]:
    """``--cfg-options`` values of :data:`TINY_OVERRIDES` (plus ``extra``) for a command line."""
    values = {**TINY_OVERRIDES, "dataset.data_path": data_path, **extra}
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in values.items()]


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --nproc_per_node N --master_port P -m opensora_core.train ARGS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "opensora_core.train",
        *args,
    ]


def train_env(**extra: str) -> dict[str, str]:
    """Environment for trainer subprocesses: one thread per rank, repo importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def descendants(pid: int) -> list[int]:
    """All descendant process ids of ``pid`` (from /proc; torchrun puts workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and all its descendants (no cleanup handlers run)."""
    pids = [proc.pid, *descendants(proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
