"""Samplers: reference batch order, exact resume (same and different rank counts), SP groups, empty configs."""

from __future__ import annotations

import itertools
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DistributedSampler

from opensora_core.data.bucket import Bucket
from opensora_core.data.sampler import (
    StatefulDistributedSampler,
    VariableVideoBatchSampler,
    data_parallel_coords,
)

CONFIG = {
    "144p": {1: (1.0, 8), 16: (1.0, 4), 32: (0.7, 2)},
    "240p": {1: (0.5, 4), 16: (0.8, 3), 32: (0.5, 2)},
    "360p": {16: (0.6, 2)},
}


def fake_dataset(n: int = 400, seed: int = 0, frame_interval: int = 2) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    sizes = np.array([(144, 256), (240, 426), (360, 640), (256, 256), (100, 100), (480, 480)])
    pick = rng.integers(0, len(sizes), n)
    data = pd.DataFrame(
        {
            "num_frames": rng.choice([1, 20, 33, 40, 70, 120], n),
            "height": sizes[pick, 0],
            "width": sizes[pick, 1],
        }
    )
    return SimpleNamespace(data=data, frame_interval=frame_interval)


def reference_plan(
    dataset: SimpleNamespace, config: dict, seed: int, epoch: int, R: int
) -> list[list[list[str]]]:
    """The reference algorithm (drop_last=True, shuffle=True), written out plainly: batches[step][rank]."""
    bucket = Bucket(config)
    groups: dict = {}
    for i, row in enumerate(dataset.data.itertuples()):
        key = bucket.get_bucket_id(
            row.num_frames,
            row.height,
            row.width,
            dataset.frame_interval,
            seed + epoch + i * bucket.num_bucket,
        )
        if key is not None:
            groups.setdefault(key, []).append(i)
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    counts = {}
    for key, items in groups.items():
        bs = bucket.get_batch_size(key)
        items = items[: len(items) - len(items) % bs]
        perm = torch.randperm(len(items), generator=g).tolist()
        groups[key] = [items[p] for p in perm]
        counts[key] = len(items) // bs
    access = [key for key, c in counts.items() for _ in range(c)]
    access = [access[p] for p in torch.randperm(len(access), generator=g).tolist()]
    access = access[: len(access) - len(access) % R]
    used: dict = {}
    steps = []
    for i in range(len(access) // R):
        step = []
        for key in access[i * R : (i + 1) * R]:
            bs = bucket.get_batch_size(key)
            start = used.get(key, 0)
            used[key] = start + bs
            t, h, w = bucket.get_thw(key)
            step.append([f"{j}-{t}-{h}-{w}" for j in groups[key][start : start + bs]])
        steps.append(step)
    return steps


def run(samplers: list, steps: int | None = None) -> list[list[list[str]]]:
    """Batches [step][rank] of one pass over ``samplers`` (one per rank), optionally only ``steps`` steps."""
    its = [iter(s) for s in samplers]
    out = []
    for step in itertools.count():
        if steps is not None and step >= steps:
            break
        batch = [next(it, None) for it in its]
        if any(b is None for b in batch):
            assert all(b is None for b in batch), "ranks disagree on the number of steps"
            break
        out.append(batch)
    return out


def make(dataset, R: int, **kw) -> list[VariableVideoBatchSampler]:
    return [
        VariableVideoBatchSampler(dataset, CONFIG, num_replicas=R, rank=r, seed=11, **kw) for r in range(R)
    ]


@pytest.mark.parametrize("R", [1, 2, 3])
def test_matches_reference_algorithm(R: int) -> None:
    ds = fake_dataset()
    samplers = make(ds, R, drop_last=True)
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        assert run(samplers) == reference_plan(ds, CONFIG, 11, epoch, R)
    assert samplers[0].get_num_batch() == R * len(reference_plan(ds, CONFIG, 11, 1, R))


def test_batches_are_bucket_pure_and_cover_the_epoch() -> None:
    ds = fake_dataset()
    samplers = make(ds, 2)
    steps = run(samplers)
    assert len(steps) == len(samplers[0]) == samplers[0].get_num_batch() // 2
    seen = set()
    for step in steps:
        for batch in step:
            shapes = {tuple(s.split("-")[1:]) for s in batch}
            assert len(shapes) == 1
            seen.update(int(s.split("-")[0]) for s in batch)
    summary = samplers[0].summary()
    assert len(seen) == summary.num_assigned  # padding repeats, never loses an assigned row
    assert summary.num_assigned + sum(summary.dropped.values()) == len(ds.data)


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("k", [0, 1, 5])
def test_resume_same_rank_count(drop_last: bool, k: int) -> None:
    ds = fake_dataset()
    full = run(make(ds, 2, drop_last=drop_last))
    first = make(ds, 2, drop_last=drop_last)
    run(first, steps=k)
    state = first[0].state_dict(k)
    resumed = make(ds, 2, drop_last=drop_last)
    for s in resumed:
        s.load_state_dict(state)
    probe = make(ds, 2, drop_last=drop_last)[1]
    probe.load_state_dict(state)
    iter(probe)
    assert probe.state_dict(0) == state  # saving again before the first batch keeps the resume point
    assert run(resumed) == full[k:]
    # the next epoch starts from its beginning again
    for s, f in zip(resumed, make(ds, 2, drop_last=drop_last), strict=True):
        s.set_epoch(1)
        f.set_epoch(1)
    assert run(resumed) == run(make_epoch(ds, 2, 1, drop_last))


def make_epoch(ds, R: int, epoch: int, drop_last: bool) -> list[VariableVideoBatchSampler]:
    samplers = make(ds, R, drop_last=drop_last)
    for s in samplers:
        s.set_epoch(epoch)
    return samplers


@pytest.mark.parametrize(("R_old", "R_new", "k"), [(2, 3, 4), (3, 2, 3), (4, 1, 2), (1, 4, 7)])
def test_resume_with_different_rank_count(R_old: int, R_new: int, k: int) -> None:
    ds = fake_dataset()
    full = make(ds, 1, drop_last=True)[0]
    total = len(full._epoch_plan().access)
    global_sequence = [full.micro_batch(j) for j in range(total)]  # rank-count independent
    first = make(ds, R_old, drop_last=True)
    done = run(first, steps=k)
    assert [b for step in done for b in step] == global_sequence[: k * R_old]
    state = first[0].state_dict(k)
    resumed = make(ds, R_new, drop_last=True)
    for s in resumed:
        s.load_state_dict(state)
    rest = [b for step in run(resumed) for b in step]
    expect = global_sequence[k * R_old :]
    assert rest == expect[: len(expect) - len(expect) % R_new]
    # a second save inside the resumed epoch counts steps since the resume point
    again = make(ds, R_new, drop_last=True)
    for s in again:
        s.load_state_dict(state)
    run(again, steps=2)
    state2 = again[0].state_dict(2)
    assert state2["last_micro_batch_access_index"] == k * R_old + 2 * R_new


def test_sequence_parallel_group_gets_identical_batches() -> None:
    ds = fake_dataset()
    world, sp = 4, 2
    coords = [data_parallel_coords(r, world, sp) for r in range(world)]
    assert coords == [(0, 2), (0, 2), (1, 2), (1, 2)]
    per_rank = [
        list(VariableVideoBatchSampler(ds, CONFIG, num_replicas=dp_size, rank=dp_rank, seed=3))
        for dp_rank, dp_size in coords
    ]
    assert per_rank[0] == per_rank[1] and per_rank[2] == per_rank[3]
    assert per_rank[0] != per_rank[2]
    fixed = [list(StatefulDistributedSampler(range(50), num_replicas=s, rank=r)) for r, s in coords]
    assert fixed[0] == fixed[1] and fixed[2] == fixed[3] and fixed[0] != fixed[2]
    with pytest.raises(ValueError):
        data_parallel_coords(0, 6, 4)


def test_padding_keeps_every_step_full() -> None:
    ds = fake_dataset(n=37)
    samplers = make(ds, 3, drop_last=False)
    steps = run(samplers)
    bucket = samplers[0].bucket
    for step in steps:
        for batch in step:
            t, h, w = (int(v) for v in batch[0].split("-")[1:])
            sizes = [bs for res in bucket.resolutions for tt, bs in bucket.bucket_bs[res].items() if tt == t]
            assert batch and len(batch) in sizes


def test_zero_batches_is_a_clear_error_before_training(caplog: pytest.LogCaptureFixture) -> None:
    ds = fake_dataset(n=50)
    sampler = VariableVideoBatchSampler(ds, {"1080p": {16: (1.0, 2)}}, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="yields 0 batches.*too_small=50"):
        sampler.get_num_batch()
    big_batch = VariableVideoBatchSampler(
        ds, {"144p": {1: (1.0, 1000)}}, num_replicas=1, rank=0, drop_last=True
    )
    with pytest.raises(ValueError, match="Lower the batch sizes"):
        list(big_batch)
    with caplog.at_level(logging.INFO, logger="opensora_core.data.sampler"):
        ok = VariableVideoBatchSampler(ds, CONFIG, num_replicas=1, rank=0)
        summary = ok.summary()
    assert "samples in" in caplog.text and "no bucket" in caplog.text
    assert summary.dropped["too_small"] > 0 and summary.num_batches == ok.get_num_batch()


def test_parallel_bucket_build_gives_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("opensora_core.data.bucket.MIN_ROWS_PER_WORKER", 5_000)
    ds = fake_dataset(n=30_000)
    one = VariableVideoBatchSampler(ds, CONFIG, num_replicas=2, rank=1, seed=5)
    two = VariableVideoBatchSampler(ds, CONFIG, num_replicas=2, rank=1, seed=5, num_bucket_build_workers=2)
    assert list(one) == list(two)


@pytest.mark.parametrize("drop_last", [True, False])
def test_stateful_distributed_sampler(drop_last: bool) -> None:
    data = range(103)
    for R in (1, 3):
        ours = [
            list(StatefulDistributedSampler(data, num_replicas=R, rank=r, seed=4, drop_last=drop_last))
            for r in range(R)
        ]
        torch_ = [
            list(DistributedSampler(data, num_replicas=R, rank=r, seed=4, drop_last=drop_last))
            for r in range(R)
        ]
        assert ours == torch_
    bs, k = 4, 3
    full2 = [
        list(StatefulDistributedSampler(data, num_replicas=2, rank=r, seed=4, drop_last=drop_last))
        for r in range(2)
    ]
    s = StatefulDistributedSampler(data, num_replicas=2, rank=0, seed=4, drop_last=drop_last)
    iter(s)
    state = s.state_dict(k, bs)
    resumed = []
    for r in range(2):
        x = StatefulDistributedSampler(data, num_replicas=2, rank=r, seed=4, drop_last=drop_last)
        x.load_state_dict(state)
        resumed.append(list(x))
    assert resumed == [f[k * bs :] for f in full2]
    # a different rank count continues with the same global order
    order = list(StatefulDistributedSampler(data, num_replicas=1, rank=0, seed=4))
    three = []
    for r in range(3):
        x = StatefulDistributedSampler(data, num_replicas=3, rank=r, seed=4, drop_last=True)
        x.load_state_dict(state)
        three.append(list(x))
    interleaved = [i for step in zip(*three, strict=True) for i in step]
    rest = order[k * bs * 2 :]
    assert interleaved == rest[: len(rest) - len(rest) % 3]
    legacy = StatefulDistributedSampler(data, num_replicas=2, rank=1, seed=4, drop_last=drop_last)
    legacy.set_start_index(k * bs)
    assert list(legacy) == full2[1][k * bs :]
