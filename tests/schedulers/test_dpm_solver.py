"""DPM-Solver++ sampler: evaluation count, model times, CFG batching, determinism and ODE accuracy."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from opensora_core.schedulers import DPMSolverSampler, build_scheduler

B, C, T, H, W = 2, 4, 2, 4, 4


class ExactGaussianModel(nn.Module):
    """Returns the exact ε for data x0 ~ N(mu, s²) (elementwise), with mu chosen by the caption.

    Output [·, 2C, ...]: exact ε in the first C channels, garbage in the variance channels (must be ignored).
    """

    def __init__(self, sampler: DPMSolverSampler, data_std: float = 0.0) -> None:
        super().__init__()
        self.schedule = sampler.schedule
        self.data_std = data_std
        self.calls: list[dict] = []

    def null_caption(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, 1, 3, 5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls.append({"x": x.clone(), "t": t.clone(), "y": y.clone(), **kwargs})
        t_cont = (t.double() / 1000.0 + 1.0 / 1000).float()
        alpha = self.schedule.alpha(t_cont).double().view(-1, 1, 1, 1, 1)
        sigma = self.schedule.sigma(t_cont).double().view(-1, 1, 1, 1, 1)
        mu = y.double().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1, 1)
        s2 = self.data_std**2
        # E[x0 | x] for a Gaussian prior, then ε = (x − α·E[x0|x]) / σ
        x0 = mu + alpha * s2 / (alpha**2 * s2 + sigma**2) * (x.double() - alpha * mu)
        eps = ((x.double() - alpha * x0) / sigma).float()
        return torch.cat([eps, torch.full_like(eps, 1e3)], dim=1)


def _z(seed: int = 0) -> torch.Tensor:
    return torch.randn(B, C, T, H, W, generator=torch.Generator().manual_seed(seed))


def _analytic(sampler: DPMSolverSampler, z: torch.Tensor, mu: float, std: float) -> torch.Tensor:
    """Exact probability-flow ODE solution for Gaussian data: x_t = α_t·mu + √(α_t²s² + σ_t²)·ε̃."""
    ns = sampler.schedule
    t1, t0 = torch.tensor([1.0]), torch.tensor([1.0 / 1000])
    a1, s1 = ns.alpha(t1).double(), ns.sigma(t1).double()
    a0, s0 = ns.alpha(t0).double(), ns.sigma(t0).double()
    white = (z.double() - a1 * mu) / torch.sqrt(a1**2 * std**2 + s1**2)
    return a0 * mu + torch.sqrt(a0**2 * std**2 + s0**2) * white


def test_exact_number_of_evaluations_and_float_model_times():
    sampler = build_scheduler("dpm-solver", num_sampling_steps=20, cfg_scale=4.0)
    model = ExactGaussianModel(sampler)
    sampler.sample(model, _z(), torch.ones(B, 1, 3, 5))
    assert sampler.last_num_model_evals == 20 == len(model.calls)
    times = torch.stack([c["t"] for c in model.calls])  # [20, 2B]
    assert times.dtype == torch.float32 and times.shape == (20, 2 * B)
    assert times[0, 0].item() == 999.0
    expected = (torch.linspace(1.0, 1.0 / 1000, 21)[:20] - 1.0 / 1000) * 1000.0
    torch.testing.assert_close(times[:, 0], expected)
    assert (times == times[:, :1]).all()
    assert times[-1, 0].item() == pytest.approx(999.0 / 20, abs=1e-3)  # last evaluation one step before t_0


@pytest.mark.parametrize("steps", [1, 2, 5, 9, 10, 13])
def test_evaluation_count_equals_steps(steps):
    order = 1 if steps == 1 else 2
    sampler = DPMSolverSampler(num_sampling_steps=steps, order=order)
    sampler.sample(ExactGaussianModel(sampler), _z(), torch.ones(B, 1, 3, 5))
    assert sampler.last_num_model_evals == steps


def test_cfg_batch_is_null_first_with_doubled_mask_and_video_info():
    sampler = DPMSolverSampler(num_sampling_steps=3, cfg_scale=4.0)
    model = ExactGaussianModel(sampler)
    y = torch.full((B, 1, 3, 5), 2.0)
    y_null = torch.full((B, 1, 3, 5), -3.0)
    text_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    height = torch.tensor([64.0, 64.0])
    sampler.sample(model, _z(), y, mask=text_mask, y_null=y_null, height=height)
    call = model.calls[0]
    assert torch.equal(call["y"][:B], y_null) and torch.equal(call["y"][B:], y)
    assert torch.equal(call["mask"].key_mask, torch.cat([text_mask, text_mask]).bool())  # prepared once
    assert torch.equal(call["height"], torch.cat([height, height]))
    assert torch.equal(call["x"][:B], call["x"][B:])


def test_cfg_scale_one_runs_the_conditional_model_alone():
    sampler = DPMSolverSampler(num_sampling_steps=4, cfg_scale=1.0)
    model = ExactGaussianModel(sampler)
    sampler.sample(model, _z(), torch.ones(B, 1, 3, 5))
    assert len(model.calls) == 4 and model.calls[0]["x"].shape[0] == B


def test_deterministic_given_z():
    sampler = DPMSolverSampler(num_sampling_steps=6)
    y = torch.randn(B, 1, 3, 5)
    a = sampler.sample(ExactGaussianModel(sampler, 0.5), _z(3), y)
    b = sampler.sample(ExactGaussianModel(sampler, 0.5), _z(3), y)
    assert torch.equal(a, b)


def test_exact_eps_for_constant_data_returns_the_constant():
    # with x0 ≡ c the data prediction is exact at every step, so DPM-Solver++ solves the ODE exactly
    sampler = DPMSolverSampler(num_sampling_steps=20, cfg_scale=4.0)
    c = 0.6
    y = torch.full((B, 1, 3, 5), c)
    y_null = torch.full((B, 1, 3, 5), c)
    z = _z(1)
    out = sampler.sample(ExactGaussianModel(sampler), z, y, y_null=y_null)
    torch.testing.assert_close(out.double(), _analytic(sampler, z, c, 0.0), atol=1e-4, rtol=1e-4)
    assert (out - c).abs().max().item() < 0.05  # σ at t = 1/1000 is 0.01


def test_guidance_extrapolates_between_null_and_cond():
    # cond model exact for c1, null exact for c2: guided ε is exact for c2 + s·(c1 − c2)
    sampler = DPMSolverSampler(num_sampling_steps=10, cfg_scale=3.0)
    c1, c2 = 0.4, 0.1
    z = _z(2)
    out = sampler.sample(
        ExactGaussianModel(sampler), z, torch.full((B, 1, 3, 5), c1), y_null=torch.full((B, 1, 3, 5), c2)
    )
    torch.testing.assert_close(
        out.double(), _analytic(sampler, z, c2 + 3.0 * (c1 - c2), 0.0), atol=1e-4, rtol=1e-4
    )


def test_converges_to_the_analytic_ode_solution_for_gaussian_data():
    mu, std = 0.3, 0.5
    errors = {}
    for steps in (5, 20, 50, 200):
        sampler = DPMSolverSampler(num_sampling_steps=steps, cfg_scale=1.0)
        z = _z(4)
        out = sampler.sample(ExactGaussianModel(sampler, std), z, torch.full((B, 1, 3, 5), mu))
        errors[steps] = (out.double() - _analytic(sampler, z, mu, std)).abs().max().item()
    assert errors[200] < errors[50] < errors[20] < errors[5]
    assert errors[50] < 0.1 and errors[200] < 1e-2  # second order: ~16x smaller error for 4x the steps


def test_lower_order_final_only_below_ten_steps(monkeypatch):
    def count_orders(steps: int) -> tuple[int, int]:
        sampler = DPMSolverSampler(num_sampling_steps=steps)
        counts = {"first": 0, "second": 0}
        first, second = sampler._first_order, sampler._second_order

        def first_spy(*args):
            counts["first"] += 1
            return first(*args)

        def second_spy(*args):
            counts["second"] += 1
            return second(*args)

        monkeypatch.setattr(sampler, "_first_order", first_spy)
        monkeypatch.setattr(sampler, "_second_order", second_spy)
        sampler.sample(ExactGaussianModel(sampler), _z(), torch.ones(B, 1, 3, 5))
        return counts["first"], counts["second"]

    assert count_orders(5) == (2, 3)  # warm-up + final step first order
    assert count_orders(12) == (1, 11)  # only the warm-up


def test_errors_for_mask_and_bad_settings():
    sampler = DPMSolverSampler(num_sampling_steps=3)
    with pytest.raises(ValueError, match="iddpm"):
        sampler.sample(ExactGaussianModel(sampler), _z(), torch.ones(B, 1, 3, 5), frame_mask=torch.ones(B, T))
    with pytest.raises(ValueError, match="order"):
        DPMSolverSampler(order=3)
    with pytest.raises(ValueError, match="num_sampling_steps"):
        DPMSolverSampler(num_sampling_steps=1, order=2)
    with pytest.raises(ValueError, match="does not take"):
        build_scheduler("dpm-solver", cfg_channel=3)


def test_schedule_matches_the_discrete_betas():
    sampler = DPMSolverSampler()
    ns = sampler.schedule
    assert ns.total_n == 1000  # the -5.1 log-SNR trim removes nothing for the linear schedule
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    log_alpha = 0.5 * torch.log(1 - betas).cumsum(0)
    t = torch.tensor([1.0 / 1000, 0.5, 1.0])
    torch.testing.assert_close(ns.log_alpha(t), log_alpha[[0, 499, 999]].float())
    mid = ns.log_alpha(torch.tensor([0.0015]))  # halfway between the first two keypoints
    assert mid.item() == pytest.approx(0.5 * (log_alpha[0] + log_alpha[1]).item(), rel=1e-5)
    assert math.isclose(ns.model_time(torch.tensor([1.0])).item(), 999.0)


def test_sampling_benchmark_smoke():
    pytest.importorskip("opensora_core.models.stdit")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sampling.py"
    spec = importlib.util.spec_from_file_location("sampling_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records = bench.main(["--tiny", "--threads", "0"])  # 0: leave the process thread count alone
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {
        "sampling_seconds_per_video_dpm2_vs_iddpm5",
        "sampling_model_evals_per_video",
        "sampler_overhead_ms_per_step_dpm_vs_iddpm",
    }
    for record in records:
        assert {"name", "ours", "baseline", "ratio", "unit", "machine"} <= set(record)
    evals = by_name["sampling_model_evals_per_video"]
    assert (evals["ours"], evals["baseline"]) == (2, 5)
    timed = by_name["sampling_seconds_per_video_dpm2_vs_iddpm5"]
    assert timed["ours"] > 0 and len(timed["rounds"]) == 1 and len(timed["loadavg"]["before"]) == 3
