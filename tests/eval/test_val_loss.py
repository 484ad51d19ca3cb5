"""opensora_core.eval.val_loss: timesteps, the closed form of a zero predictor, determinism, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from opensora_core.eval.val_loss import (
    ValBatch,
    checkpoint_val_loss,
    clip_noise,
    eval_timesteps,
    paired_difference,
    validation_loss,
)
from opensora_core.schedulers import build_scheduler


def test_eval_timesteps_are_evenly_spaced_inside_the_schedule():
    assert eval_timesteps(1000, 9) == [100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert eval_timesteps(50, 4) == [10, 20, 30, 40]
    assert eval_timesteps(1000, 1) == [500]
    with pytest.raises(ValueError, match="num_eval_timesteps"):
        eval_timesteps(1000, 0)


class Zeros(torch.nn.Module):
    def forward(self, x, t, **kwargs):
        return torch.zeros_like(x)


class Linear(torch.nn.Module):
    """x_t -> [eps, v] with fixed random 1x1x1 weights (a learned-sigma output: loss = mse + vb)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 6, 1)

    def forward(self, x, t, **kwargs):
        return self.conv(x)


def _batches(seed: int, sizes=(3, 2)):
    gen = torch.Generator().manual_seed(seed)
    out, n = [], 0
    for b, size in enumerate(sizes):
        keys = [f"clip{n + i}" for i in range(size)]
        n += size
        out.append(ValBatch(keys, f"bucket{b}", torch.randn(size, 3, 2, 4, 4, generator=gen)))
    return out


def test_zero_predictor_loss_is_mean_squared_noise_per_timestep():
    scheduler = build_scheduler("iddpm", learn_sigma=False)  # loss = MSE(eps, prediction)
    timesteps = eval_timesteps(scheduler.num_timesteps, 3)
    result = validation_loss(Zeros(), scheduler, _batches(0), timesteps, seed=7)
    expected = {k: float((clip_noise((3, 2, 4, 4), 7, k) ** 2).mean()) for k in result.per_sample}
    for key, losses in result.per_sample.items():
        assert losses == pytest.approx([expected[key]] * 3, rel=1e-6)  # fixed noise: same at every t
    mean = sum(expected.values()) / 5
    assert result.overall == pytest.approx(mean, rel=1e-6)
    assert all(v == pytest.approx(mean, rel=1e-6) for v in result.per_timestep.values())
    bucket0 = sum(expected[f"clip{i}"] for i in range(3)) / 3
    assert result.per_bucket["bucket0"] == pytest.approx(bucket0, rel=1e-6)
    metrics = result.metrics()
    assert set(metrics) == {
        "val_loss",
        "val_loss/t0250",
        "val_loss/t0500",
        "val_loss/t0750",
        "val_loss/bucket/bucket0",
        "val_loss/bucket/bucket1",
    }
    assert len(result.pairs()) == 15


def test_noise_is_per_clip_so_batching_does_not_matter():
    scheduler = build_scheduler("iddpm")
    model = Linear()
    t = eval_timesteps(scheduler.num_timesteps, 2)
    together = validation_loss(model, scheduler, _batches(1, (5,)), t, seed=3)
    x = _batches(1, (5,))[0]
    apart = [ValBatch([k], "bucket0", x.x[i : i + 1]) for i, k in enumerate(x.keys)]
    split = validation_loss(model, scheduler, apart, t, seed=3)
    assert split.per_sample.keys() == together.per_sample.keys()
    for key in split.per_sample:
        assert split.per_sample[key] == pytest.approx(together.per_sample[key], rel=1e-5)
    other = validation_loss(model, scheduler, _batches(1, (5,)), t, seed=4)
    assert other.overall != together.overall
    with pytest.raises(ValueError, match="appears twice"):
        validation_loss(model, scheduler, [x, x], t)


def test_paired_difference_needs_the_same_keys():
    pair = paired_difference({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 2.0})
    assert pair == {"n": 2.0, "mean_diff": 0.0, "reference_mean": 2.0, "candidate_lower": 0.5}
    with pytest.raises(ValueError, match="same keys"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_checkpoint_val_loss_is_deterministic_and_sees_the_weights(tmp_path):
    from opensora_core.data.synthetic import generate
    from tests.eval.tiny_checkpoint import make_tiny_checkpoint

    generate(tmp_path / "data", 3, size=16, num_frames=8, seed=0)
    ckpt = make_tiny_checkpoint(tmp_path / "run", seed=1)
    table = str(tmp_path / "data" / "meta.csv")
    run = [
        checkpoint_val_loss(
            ckpt / "config.json",
            ckpt / "ema.safetensors",
            table,
            num_eval_timesteps=3,
            batch_size=2,
            device="cpu",
        )
        for _ in range(2)
    ]
    assert run[0].per_sample == run[1].per_sample and run[0].num_samples == 3
    assert list(run[0].per_bucket) == ["16x16x4"] and math.isfinite(run[0].overall)
    assert run[0].timesteps == [250.0, 500.0, 750.0]  # the demo's rectified flow: linspace(0, 1000, 5)[1:-1]
    # A fresh STDiT's final layer is zero (adaLN-zero), so any initialisation scores the same loss ...
    fresh = checkpoint_val_loss(ckpt / "config.json", None, table, num_eval_timesteps=3, device="cpu")
    assert fresh.per_sample == run[0].per_sample
    # ... and weights that predict something score differently: the file's weights are what is measured.
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / "ema.safetensors"))
    state["final_layer.linear.weight"] = torch.full_like(state["final_layer.linear.weight"], 0.05)
    save_file(state, str(ckpt / "ema.safetensors"))
    changed = checkpoint_val_loss(
        ckpt / "config.json", ckpt / "ema.safetensors", table, num_eval_timesteps=3, device="cpu"
    )
    assert changed.overall != pytest.approx(fresh.overall, rel=1e-3)


class TimeAsVelocity(torch.nn.Module):
    """Predicts v = t / 1000 everywhere (so the loss shows which t the scheduler passed)."""

    def forward(self, x, t, **kwargs):
        return (t.float() / 1000).view(-1, 1, 1, 1, 1).expand_as(x).repeat(1, 2, 1, 1, 1)


def test_rflow_timesteps_are_the_references_float_linspace():
    times = eval_timesteps(1000, 10, discrete=False)
    assert (
        len(times) == 10 and times[0] == pytest.approx(1000 / 11) and times[-1] == pytest.approx(10000 / 11)
    )
    assert eval_timesteps(1000, 10) == [round(t) for t in times]  # IDDPM: the same times as indices


def test_rflow_loss_closed_form_at_each_timestep():
    scheduler = build_scheduler("rflow", use_timestep_transform=True)  # t given: no transform
    times = eval_timesteps(scheduler.num_timesteps, 3, discrete=False)
    result = validation_loss(TimeAsVelocity(), scheduler, _batches(2), times, seed=5)
    x = {k: b.x[i] for b in _batches(2) for i, k in enumerate(b.keys)}
    for key, losses in result.per_sample.items():
        target = x[key] - clip_noise((3, 2, 4, 4), 5, key)  # rflow's velocity target x0 - eps
        expected = [float(((t / 1000 - target) ** 2).mean()) for t in times]
        assert losses == pytest.approx(expected, rel=1e-5)
    assert list(result.metrics()) == [
        "val_loss",
        "val_loss/t0250",
        "val_loss/t0500",
        "val_loss/t0750",
        "val_loss/bucket/bucket0",
        "val_loss/bucket/bucket1",
    ]
