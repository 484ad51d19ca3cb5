"""Resumable samplers: ``StatefulDistributedSampler`` (fixed-size data) and ``VariableVideoBatchSampler`` (buckets).

Both are built for the DATA-parallel group. With sequence parallelism (dp x sp mesh, global rank
``dp_rank * sp_size + sp_rank`` as in the reference's ``ProcessGroupMesh(dp, sp)``) the trainer passes
``num_replicas=dp_size, rank=dp_rank`` (see :func:`data_parallel_coords`), so every rank of one
sequence-parallel group receives identical batches.

Resuming: ``state_dict(num_steps)`` records how far the epoch got, counted in samples / micro-batches over all
data-parallel ranks. ``num_steps`` is the number of batches this rank has taken from the CURRENT iterator, i.e.
since the epoch started or, in a resumed epoch, since the resume point (pass the per-epoch step counter of the
trainer minus the step it resumed at). After ``load_state_dict`` the sampler continues with exactly the
samples an uninterrupted run would have given from that point on, also with a different number of ranks
(then the later batches are split over the new ranks; only the end-of-epoch padding differs).

Variable batches follow the reference algorithm (``opensora/datasets/sampler.py`` @ v1.1.0):
group rows by bucket (buckets ordered by first occurrence), pad each bucket by repeating its items to a multiple
of its batch size (or drop the remainder with ``drop_last``), shuffle within buckets and then the list of
micro-batch accesses with one ``torch.Generator(seed + epoch)``; micro-batch ``i * R + r`` goes to rank ``r`` at
step ``i`` (ranks may process different buckets in the same step). Deviations (fixes): padding repeats items
cyclically (the reference pads at most once, so a bucket shorter than half a batch lost its samples), the
end-of-epoch padding to a multiple of R repeats whole micro-batches (the reference produced empty batches there),
and a resume with a different R starts at the exact micro-batch (the reference rounded down).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler

from opensora_core.data.bucket import REASON_NAMES, Bucket, BucketKey, BucketSummary
from opensora_core.parallel.mesh import mesh_coords

logger = logging.getLogger(__name__)


def data_parallel_coords(rank: int, world_size: int, sp_size: int = 1) -> tuple[int, int]:
    """``(dp_rank, dp_size)`` of a global rank on the dp x sp mesh (``rank = dp_rank * sp_size + sp_rank``,
    the layout of :func:`opensora_core.parallel.mesh.mesh_coords`)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    dp_rank, _sp_rank = mesh_coords(rank, world_size, sp_size)
    return dp_rank, world_size // sp_size


def _default_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None or rank is None:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
    return int(num_replicas), int(rank)


class StatefulDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (same order for a fresh epoch) that resumes mid-epoch, also across rank counts.

    The epoch's global order is ``torch.randperm(len(dataset), Generator(seed + epoch))``; rank ``r`` takes every
    R-th sample of what is left after ``consumed`` samples (padded cyclically from the start of the epoch, or
    trimmed with ``drop_last``).
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        num_replicas, rank = _default_replicas(num_replicas, rank)
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.consumed = 0  # global samples of this epoch already used (resume point)
        self._iter_start = 0

    def _order(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            return torch.randperm(n, generator=g).tolist()
        return list(range(n))

    def _remaining(self) -> list[int]:
        order = self._order()
        rest = order[min(self.consumed, len(order)) :]
        R = self.num_replicas
        if self.drop_last:
            return rest[: len(rest) - len(rest) % R]
        pad = (R - len(rest) % R) % R
        if pad and order:
            rest = rest + (order * math.ceil(pad / len(order)))[:pad]
        return rest

    def __iter__(self) -> Iterator[int]:
        self._iter_start = self.consumed
        rest = self._remaining()
        self.consumed = 0  # the next epoch starts from its beginning
        return iter(rest[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(self._remaining()) // self.num_replicas

    def set_start_index(self, start_index: int) -> None:
        """Reference API: skip ``start_index`` samples of this rank (= ``step * batch_size``) in this epoch."""
        self.consumed = int(start_index) * self.num_replicas

    def state_dict(self, num_steps: int, batch_size: int) -> dict[str, int]:
        """State after this rank took ``num_steps`` batches of ``batch_size`` from the current iterator."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "consumed": self._iter_start + int(num_steps) * int(batch_size) * self.num_replicas,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at the saved epoch and sample (the rank count may differ from the saving run)."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])


@dataclass
class _EpochPlan:
    """Global micro-batch schedule of one epoch (independent of the rank count)."""

    epoch: int
    seed: int
    keys: list[BucketKey]  # bucket keys in first-occurrence order
    samples: list[np.ndarray]  # row ids per bucket after padding/trimming and shuffling
    access: np.ndarray  # bucket position of each global micro-batch
    offsets: np.ndarray  # start offset of each micro-batch in its bucket's list
    summary: BucketSummary


class VariableVideoBatchSampler(Sampler[list[str]]):
    """Bucketed batch sampler yielding ``["idx-T-H-W", ...]`` micro-batches (see the module docstring).

    ``dataset`` needs ``data`` (a DataFrame with ``num_frames``, ``height``, ``width``) and ``frame_interval``.
    Row ``i`` of epoch ``e`` is assigned with ``bucket.get_bucket_id(T, H, W, frame_interval,
    seed + e + i * num_bucket)`` (vectorised; ``num_bucket_build_workers`` processes).
    """

    def __init__(
        self,
        dataset: Any,
        bucket_config: Mapping[str, Any],
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        verbose: bool = False,
        num_bucket_build_workers: int = 1,
    ) -> None:
        self.dataset = dataset
        self.bucket = Bucket(bucket_config)
        self.num_replicas, self.rank = _default_replicas(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.verbose = verbose
        self.num_bucket_build_workers = max(1, int(num_bucket_build_workers))
        self.epoch = 0
        self.last_micro_batch_access_index = 0  # resume point (global micro-batches) of the next __iter__
        self._iter_start = 0
        self._plan: _EpochPlan | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the keep_prob draws and the shuffles)."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ planning
    def group_by_bucket(self) -> dict[BucketKey, np.ndarray]:
        """Row ids per bucket for the current epoch, buckets in order of first occurrence, rows ascending."""
        return self._group()[0]

    def _group(self) -> tuple[dict[BucketKey, np.ndarray], dict[str, int]]:
        data = self.dataset.data
        n = len(data)
        seeds = np.uint64(self.seed + self.epoch) + np.arange(n, dtype=np.uint64) * np.uint64(
            self.bucket.num_bucket
        )
        assignment = self.bucket.assign(
            data["num_frames"].to_numpy(),
            data["height"].to_numpy(),
            data["width"].to_numpy(),
            int(self.dataset.frame_interval),
            seeds,
            num_workers=self.num_bucket_build_workers,
        )
        codes = self.bucket.codes(assignment)
        rows = np.flatnonzero(codes >= 0)
        groups: dict[BucketKey, np.ndarray] = {}
        if rows.size:
            sel = codes[rows]
            uniq, first = np.unique(sel, return_index=True)
            order = np.argsort(sel, kind="stable")
            bounds = np.searchsorted(sel[order], uniq)
            parts = np.split(rows[order], bounds[1:])
            for i in np.argsort(first, kind="stable"):
                groups[self.bucket.key_of_code(int(uniq[i]))] = parts[i]
        return groups, assignment.reason_counts()

    def _epoch_plan(self) -> _EpochPlan:
        if self._plan is not None and (self._plan.epoch, self._plan.seed) == (self.epoch, self.seed):
            return self._plan
        groups, reasons = self._group()
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        keys: list[BucketKey] = []
        samples: list[np.ndarray] = []
        micro_counts: list[int] = []
        per_bucket: dict[BucketKey, tuple[int, int]] = {}
        for key, rows in groups.items():
            bs = int(self.bucket.get_batch_size(key))
            remainder = len(rows) % bs
            if remainder and not self.drop_last:
                rows = np.resize(rows, len(rows) + bs - remainder)  # cyclic repeat of the first items
            elif remainder:
                rows = rows[: len(rows) - remainder]
            if self.shuffle:
                rows = rows[torch.randperm(len(rows), generator=g).numpy()]
            keys.append(key)
            samples.append(rows)
            micro_counts.append(len(rows) // bs)
            per_bucket[key] = (len(groups[key]), len(rows) // bs)
        access = np.repeat(np.arange(len(keys)), micro_counts) if keys else np.zeros(0, dtype=np.int64)
        if self.shuffle and access.size:
            access = access[torch.randperm(len(access), generator=g).numpy()]
        # offset of micro-batch j in its bucket = (earlier accesses of that bucket) * batch size
        batch_sizes = np.array([int(self.bucket.get_batch_size(k)) for k in keys], dtype=np.int64)
        order = np.argsort(access, kind="stable")
        group_start = np.searchsorted(access[order], access[order], side="left")
        offsets = np.empty(len(access), dtype=np.int64)
        offsets[order] = (np.arange(len(access)) - group_start) * batch_sizes[access[order]]
        dropped = {name: count for name, count in reasons.items() if name != REASON_NAMES[0]}
        summary = BucketSummary(
            num_rows=len(self.dataset.data),
            num_assigned=reasons[REASON_NAMES[0]],
            dropped=dropped,
            buckets=per_bucket,
            num_batches=int(len(access)),
        )
        self._plan = _EpochPlan(self.epoch, self.seed, keys, samples, access, offsets, summary)
        logger.info("epoch %d %s", self.epoch, summary.format())
        if self.verbose:
            for key, (count, batches) in per_bucket.items():
                logger.info("  bucket %s: %d samples, %d batches", key, count, batches)
        self._check_not_empty(self._plan)
        return self._plan

    def _check_not_empty(self, plan: _EpochPlan) -> None:
        total = len(plan.access)
        if total == 0 or (self.drop_last and total < self.num_replicas):
            dropped = ", ".join(f"{k}={v}" for k, v in plan.summary.dropped.items() if v) or "none"
            raise ValueError(
                f"bucket_config yields {total} batches for {self.num_replicas} data-parallel ranks in epoch "
                f"{plan.epoch} ({plan.summary.num_assigned}/{plan.summary.num_rows} rows fit a bucket; "
                f"no bucket: {dropped}). Lower the batch sizes, the frame_interval or the frame keys, add "
                "resolutions that match the data, or raise keep_prob."
            )

    def summary(self) -> BucketSummary:
        """Bucket statistics of the current epoch (built once per epoch, logged; raises if it holds no batch)."""
        return self._epoch_plan().summary

    def get_num_batch(self) -> int:
        """Micro-batches of the whole epoch over all ranks (after padding/trimming to a multiple of R).

        Steps per epoch = ``get_num_batch() // num_replicas``.
        """
        total = len(self._epoch_plan().access)
        R = self.num_replicas
        return (total // R) * R if self.drop_last else math.ceil(total / R) * R

    # ------------------------------------------------------------------ iteration
    def _num_iters(self, start: int) -> int:
        remaining = max(0, len(self._epoch_plan().access) - start)
        R = self.num_replicas
        return remaining // R if self.drop_last else math.ceil(remaining / R)

    def __len__(self) -> int:
        return self._num_iters(self.last_micro_batch_access_index)

    def micro_batch(self, j: int) -> list[str]:
        """Global micro-batch ``j`` of the current epoch (indices past the end wrap around: padding)."""
        plan = self._epoch_plan()
        total = len(plan.access)
        if j >= total:
            j = (j - total) % total
        b = int(plan.access[j])
        key = plan.keys[b]
        bs = int(self.bucket.get_batch_size(key))
        rows = plan.samples[b][plan.offsets[j] : plan.offsets[j] + bs]
        t, h, w = self.bucket.get_thw(key)
        return [f"{int(i)}-{t}-{h}-{w}" for i in rows]

    def __iter__(self) -> Iterator[list[str]]:
        self._epoch_plan()
        start = self.last_micro_batch_access_index
        self._iter_start = start  # captured now, not at the first next(), so state_dict(0) is right too
        self.last_micro_batch_access_index = 0  # the next epoch starts from its beginning
        return self._batches(start, self._num_iters(start))

    def _batches(self, start: int, num_iters: int) -> Iterator[list[str]]:
        R = self.num_replicas
        for i in range(num_iters):
            yield self.micro_batch(start + i * R + self.rank)

    def reset(self) -> None:
        """Forget the resume point (the next iteration starts at the epoch's first micro-batch)."""
        self.last_micro_batch_access_index = 0

    def state_dict(self, num_steps: int) -> dict[str, int]:
        """State after this rank took ``num_steps`` batches from the current iterator (see module docstring)."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "last_micro_batch_access_index": self._iter_start + int(num_steps) * self.num_replicas,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at the saved epoch and micro-batch (the rank count may differ)."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.last_micro_batch_access_index = int(state["last_micro_batch_access_index"])
