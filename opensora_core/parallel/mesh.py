"""The data x sequence parallel mesh: ``build_mesh(env, sp_size) -> Mesh``.

World = dp x sp. Sequence-parallel groups are blocks of contiguous ranks (ranks ``[0 .. sp-1]`` form sp group 0,
as the reference's ``ProcessGroupMesh(dp, sp)`` with SP on the inner axis), so global rank
``r = dp_rank * sp_size + sp_rank``. Data-parallel groups hold the ranks with the same ``sp_rank``. Every rank
creates every group in the same order (``torch.distributed.new_group`` is collective).

``dp_group`` / ``sp_group`` are ``None`` where the axis is trivial or the run is a single process: ``None``
means "the default group" for a data-parallel axis that spans the whole world, and "no communication" for an
axis of size one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from opensora_core.parallel.dist import DistEnv


@dataclass(frozen=True)
class Mesh:
    """Coordinates of this rank on the dp x sp mesh and the process groups of its two axes."""

    dp_size: int
    dp_rank: int
    dp_group: Any
    sp_size: int
    sp_rank: int
    sp_group: Any

    @property
    def world_size(self) -> int:
        """dp_size x sp_size."""
        return self.dp_size * self.sp_size


def mesh_coords(rank: int, world_size: int, sp_size: int) -> tuple[int, int]:
    """``(dp_rank, sp_rank)`` of a global rank (``rank = dp_rank * sp_size + sp_rank``)."""
    if sp_size < 1 or world_size % sp_size:
        raise ValueError(
            f"sp_size={sp_size} does not divide the world size {world_size}: the world is dp x sp, so "
            f"launch a multiple of {sp_size} processes or choose an sp_size that divides {world_size}"
        )
    return rank // sp_size, rank % sp_size


def build_mesh(env: DistEnv, sp_size: int = 1) -> Mesh:
    """Split the world into data-parallel x sequence-parallel groups (see the module docstring)."""
    dp_rank, sp_rank = mesh_coords(env.rank, env.world_size, sp_size)
    dp_size = env.world_size // sp_size
    if not env.is_distributed:
        return Mesh(dp_size=1, dp_rank=0, dp_group=None, sp_size=1, sp_rank=0, sp_group=None)
    dp_group = None  # default group when the dp axis is the whole world
    sp_group = None
    if sp_size > 1:
        for d in range(dp_size):  # contiguous blocks: sp groups
            ranks = list(range(d * sp_size, (d + 1) * sp_size))
            group = dist.new_group(ranks)
            if d == dp_rank:
                sp_group = group
        for s in range(sp_size):  # strided: dp groups
            ranks = list(range(s, env.world_size, sp_size))
            group = dist.new_group(ranks)
            if s == sp_rank:
                dp_group = group
    return Mesh(
        dp_size=dp_size,
        dp_rank=dp_rank,
        dp_group=dp_group,
        sp_size=sp_size,
        sp_rank=sp_rank,
        sp_group=sp_group,
    )
