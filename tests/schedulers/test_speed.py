"""iddpm-speed (SpeeDiffusion): timestep distribution, P2 weights, training-only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opensora_core.schedulers import IDDPM, SpeeDiffusion, build_scheduler


def test_distribution_and_p2_weights():
    speed = build_scheduler("iddpm-speed", timestep_respacing="")
    assert isinstance(speed, SpeeDiffusion)
    grad = np.gradient(speed.sqrt_one_minus_alphas_cumprod)
    tau = speed.meaningful_steps
    assert 1 <= tau < 1000 and grad[tau - 1] < 5e-5 and (grad[: tau - 1] >= 5e-5).all()
    assert speed.p.sum().item() == pytest.approx(1.0)
    steep, flat = speed.p[0].item(), speed.p[-1].item()
    assert steep / flat == pytest.approx(5.0, rel=1e-3)  # tanh saturates: 2.5 vs 0.5
    # 1 / (1 + SNR) = 1 - alphas_cumprod, up to float32 rounding (the default schedule is float32, as in 1.1)
    np.testing.assert_allclose(speed.weights, 1.0 - speed.alphas_cumprod, rtol=1e-5)
    speed64 = build_scheduler("iddpm-speed", timestep_respacing="", schedule_dtype="float64")
    np.testing.assert_allclose(speed64.weights, 1.0 - speed64.alphas_cumprod, rtol=1e-9)


def test_sampled_timesteps_pair_with_their_duals():
    speed = SpeeDiffusion(timestep_respacing="")
    t = speed.sample_timesteps(7, generator=torch.Generator().manual_seed(0))
    assert t.shape == (7,) and t.dtype == torch.long and ((t >= 0) & (t < 1000)).all()
    tau = speed.meaningful_steps
    base, dual = t[:4], t[4:]
    expected = torch.where(base[:3] < tau, tau - base[:3], base[:3] - tau)
    assert torch.equal(dual, expected)
    draws = speed.sample_timesteps(20000, generator=torch.Generator().manual_seed(1))[:10001]
    steep_share = (draws < 600).float().mean().item()
    assert steep_share == pytest.approx(speed.p[:600].sum().item(), abs=0.02)


def test_training_losses_use_sampled_t_and_weighted_mse():
    speed = SpeeDiffusion(timestep_respacing="")
    plain = IDDPM(timestep_respacing="")
    x0 = torch.randn(4, 4, 2, 4, 4)
    noise = torch.randn_like(x0)
    out = torch.randn(4, 8, 2, 4, 4)
    terms = speed.training_losses(
        lambda x, t: out,
        x0,
        torch.zeros(4, dtype=torch.long),
        noise=noise,
        generator=torch.Generator().manual_seed(3),
    )
    t = terms["t"]
    ref = plain.training_losses(lambda x, tt: out, x0, t, noise=noise)
    w = torch.tensor(speed.weights)[t].float()
    torch.testing.assert_close(terms["mse"], w * ref["mse"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(terms["vb"], ref["vb"])
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])


def test_sampling_is_refused():
    speed = SpeeDiffusion(num_sampling_steps=10)
    with pytest.raises(RuntimeError, match="'iddpm' or 'dpm-solver'"):
        speed.sample(None, torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 1, 2, 3))
