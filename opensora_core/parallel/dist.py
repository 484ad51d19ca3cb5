"""Process-group setup: ``init_distributed() -> DistEnv`` from torchrun / PyTorchJob environment variables.

``torchrun`` (and the Kubeflow PyTorchJob / TrainJob launchers, whose ``PET_*`` variables torchrun consumes)
exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. With ``WORLD_SIZE > 1``
the default process group is created (``nccl`` on CUDA, ``gloo`` on CPU); without those variables, or with a
world of one, the run is a single process and no process group is needed. Nothing is kept in module state:
the returned :class:`DistEnv` is passed explicitly.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_DEFAULT_TIMEOUT_MIN = 30


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


@dataclass
class DistEnv:
    """Where this process sits in the job: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_distributed: bool
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the process that logs, tracks and writes shared files)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.is_distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index or 0])
            else:
                dist.barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """``obj`` of rank ``src`` on every rank (picklable objects; identity in a single process)."""
        if not self.is_distributed:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects; ``[obj]`` in a single
        process)."""
        if not self.is_distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", group: Any = None) -> torch.Tensor:
        """In-place all-reduce (``sum`` | ``max`` | ``min``) over ``group`` (default: the world); returns it."""
        if self.is_distributed:
            ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
            if op not in ops:
                raise ValueError(f"all_reduce op must be one of {sorted(ops)}, got {op!r}")
            dist.all_reduce(tensor, op=ops[op], group=group)
        return tensor

    def close(self) -> None:
        """Destroy the process group this object created (safe to call twice)."""
        if self.owns_group and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


def init_distributed(
    backend: str | None = None,
    timeout_minutes: float | None = None,
    env: Mapping[str, str] | None = None,
) -> DistEnv:
    """Join the job described by torchrun's environment variables (single process when they are absent).

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default nccl when CUDA is available, else gloo.
        timeout_minutes: collective timeout (default ``$OPENSORA_DIST_TIMEOUT_MIN`` or 30).
        env: variables to read instead of ``os.environ`` (tests).

    An already initialised default process group (e.g. created by the caller) is reused and left open by
    :meth:`DistEnv.close`.
    """
    env = os.environ if env is None else env
    world_size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank} WORLD_SIZE={world_size}")
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "launch at most one process per GPU (torchrun --nproc_per_node <= number of GPUs)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    if dist.is_available() and dist.is_initialized():
        return DistEnv(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            device=device,
            is_distributed=dist.get_world_size() > 1,
            backend=dist.get_backend(),
            owns_group=False,
        )
    if world_size == 1:
        return DistEnv(0, 1, 0 if not cuda else local_rank, device, False)

    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; launch with torchrun "
            "(python -m torch.distributed.run --nproc_per_node N ...) or set the rendezvous variables"
        )
    backend = backend or ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise RuntimeError("backend 'nccl' needs CUDA; use 'gloo' on CPU")
    minutes = timeout_minutes
    if minutes is None:
        minutes = float(env.get("OPENSORA_DIST_TIMEOUT_MIN", _DEFAULT_TIMEOUT_MIN))
    init_kwargs: dict[str, Any] = {
        "backend": backend,
        # env:// lets torchrun's agent store serve the rendezvous (TORCHELASTIC_USE_AGENT_STORE)
        "init_method": "env://" if env is os.environ else f"tcp://{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
        "rank": rank,
        "world_size": world_size,
        "timeout": datetime.timedelta(minutes=minutes),
    }
    if backend == "nccl":
        init_kwargs["device_id"] = device
    dist.init_process_group(**init_kwargs)
    logger.info("joined process group: rank %d/%d (%s, %s)", rank, world_size, backend, device)
    return DistEnv(rank, world_size, local_rank, device, True, backend, owns_group=True)
