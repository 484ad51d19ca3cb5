"""Agreement between ranks: a checkpoint step that fails on one rank fails on every rank."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from opensora_core.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class DistLike(Protocol):
    """What checkpointing needs from a ``DistEnv`` (tests may pass a single-process stand-in)."""

    rank: int
    local_rank: int
    is_distributed: bool

    def barrier(self) -> None:
        """Wait for every rank."""

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", group: Any = None) -> torch.Tensor:
        """In-place all-reduce."""


def agree(env: DistLike, ok: bool) -> bool:
    """True on every rank only if ``ok`` is True on every rank."""
    import torch

    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if env.is_distributed:
        if getattr(env, "backend", None) == "nccl":
            flag = flag.to(getattr(env, "device", torch.device("cpu")))
        env.all_reduce(flag, op="sum")
    return int(flag.item()) == 0


def gather_objects(env: DistLike, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` without a process group)."""
    if not env.is_distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def run_agreed(env: DistLike, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on this rank; raise CheckpointError on every rank if it failed on any rank."""
    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - reported to every rank below
        error = e
        logger.error("rank %d: %s failed: %s: %s", env.rank, what, type(e).__name__, e)
    if not agree(env, error is None):
        if error is not None:
            raise CheckpointError(
                f"{what} failed on rank {env.rank}: {type(error).__name__}: {error}"
            ) from error
        raise CheckpointError(f"{what} failed on another rank (see its log)")
    return result
