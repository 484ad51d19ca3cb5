"""Run a function on N CPU processes joined by a gloo process group (torch.multiprocessing spawn).

``run_world(fn, world_size, *args)`` starts ``world_size`` processes, each with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` set (as torchrun would) and one intra-op thread, initialises the
default group (gloo, or ``backend="nccl"`` on a GPU) through :func:`opensora_core.parallel.dist.init_distributed`,
calls ``fn(env, *args)`` and
collects each rank's return value (through files, so any picklable value works). A failing rank fails the call
with its traceback.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int, fn: Callable[..., Any], world_size: int, port: int, out_dir: str, args: tuple, backend: str
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from opensora_core.parallel.dist import init_distributed

    env = init_distributed(backend=backend, timeout_minutes=2)
    try:
        result = fn(env, *args)
        Path(out_dir, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        env.close()


def run_world(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo") -> list[Any]:
    """``[fn(env_rank0, *args), fn(env_rank1, *args), ...]`` computed on ``world_size`` processes joined by a
    ``backend`` ("gloo" or "nccl") process group."""
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _entry,
            args=(fn, world_size, free_port(), out_dir, args, backend),
            nprocs=world_size,
            join=True,
            start_method="spawn",
        )
        return [pickle.loads(Path(out_dir, f"rank{r}.pkl").read_bytes()) for r in range(world_size)]
