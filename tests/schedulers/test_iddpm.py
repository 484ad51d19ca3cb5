"""IDDPM: schedule, respacing, training losses and CFG / masked sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from opensora_core.schedulers import IDDPM, build_scheduler
from opensora_core.schedulers._diffusion import discretized_gaussian_log_likelihood, mean_flat
from opensora_core.schedulers._respace import space_timesteps
from opensora_core.schedulers.iddpm import guided_output

B, C, T, H, W = 2, 4, 4, 8, 8


class TinyDenoiser(nn.Module):
    """Frame-local toy model: pointwise conv of x plus a timestep bias -> [B, 2C, T, H, W]."""

    def __init__(self, channels: int = C) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Conv3d(channels, 2 * channels, kernel_size=1)
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls.append({"x": x.clone(), "t": t.clone(), **kwargs})
        out = self.proj(x) + (t.float() / 1000.0).view(-1, 1, 1, 1, 1)
        eps, v = out.chunk(2, dim=1)
        return torch.cat([eps, torch.tanh(v)], dim=1)


class CaptionModel(nn.Module):
    """Sampling toy: ε = mean of y per sample (so cond / null outputs are known), v = 0; records every call."""

    def __init__(self, null_value: float = -1.0) -> None:
        super().__init__()
        self.null_value = null_value
        self.calls: list[dict] = []

    def null_caption(self, batch_size: int) -> torch.Tensor:
        return torch.full((batch_size, 1, 3, 5), self.null_value)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls.append({"x": x.clone(), "t": t.clone(), "y": y.clone(), **kwargs})
        level = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1, 1)
        eps = 0.1 * x + level
        return torch.cat([eps, torch.zeros_like(x)], dim=1)


def _latents(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, T, H, W, generator=g)


# ---------------------------------------------------------------------------- schedule and respacing
def test_linear_betas_endpoints_and_dtype():
    d = build_scheduler("iddpm", timestep_respacing="", schedule_dtype="float64")  # Open-Sora 1.0
    assert d.num_timesteps == 1000 and d.betas.dtype == np.float64
    assert d.betas[0] == pytest.approx(1e-4, rel=1e-9) and d.betas[-1] == pytest.approx(0.02, rel=1e-9)
    assert np.allclose(np.diff(d.betas), (0.02 - 1e-4) / 999)
    assert d.timestep_map == list(range(1000))
    # default: Open-Sora >= 1.1 keeps the respaced schedule in float32 and derives it in float32
    d32 = build_scheduler("iddpm", timestep_respacing="")
    assert d32.schedule_dtype == "float32" and d32.betas.dtype == d32.sqrt_recipm1_alphas_cumprod.dtype == np.float32
    np.testing.assert_array_equal(d32.betas, d.betas.astype(np.float32))
    # float32 cancellation in 1 - alphas_cumprod: 0.00999... instead of 0.01 at t = 0
    assert d.sqrt_one_minus_alphas_cumprod[0] == pytest.approx(0.01, rel=1e-12)
    assert abs(d32.sqrt_one_minus_alphas_cumprod[0] / 0.01 - 1) > 1e-5
    with pytest.raises(ValueError, match="schedule_dtype"):
        IDDPM(schedule_dtype="float16")


def test_space_timesteps_reference_cases():
    assert space_timesteps(1000, "5") == {0, 250, 500, 749, 999}
    assert space_timesteps(1000, "ddim10") == set(range(0, 1000, 100))
    assert space_timesteps(1000, [1000]) == set(range(1000))
    two = space_timesteps(1000, "2,3")  # sections of 500 steps: {0, 499} and {500, 750, 999}
    assert two == {0, 499, 500, 750, 999}
    assert len(space_timesteps(1000, "100")) == 100
    with pytest.raises(ValueError, match="cannot keep"):
        space_timesteps(10, "11")
    with pytest.raises(ValueError, match="comma separated"):
        space_timesteps(1000, "fast")


def test_respaced_schedule_matches_original_alphas_cumprod():
    for dtype, rtol in [("float64", 1e-12), ("float32", 1e-5)]:
        full = IDDPM(timestep_respacing="", schedule_dtype=dtype)
        spaced = IDDPM(num_sampling_steps=5, schedule_dtype=dtype)
        assert spaced.timestep_map == [0, 250, 500, 749, 999]
        np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[spaced.timestep_map], rtol=rtol)
        assert spaced.betas[0] == full.betas[0]
    with pytest.raises(ValueError, match="not both"):
        IDDPM(num_sampling_steps=5, timestep_respacing="10")


def test_build_scheduler_names_and_errors():
    assert isinstance(build_scheduler("iddpm", num_sampling_steps=10, cfg_scale=7.0, cfg_channel=3), IDDPM)
    with pytest.raises(ValueError, match=r"valid types: \['dpm-solver', 'iddpm', 'iddpm-speed', 'rflow'\]"):
        build_scheduler("ddpm")
    with pytest.raises(ValueError, match="does not take"):
        build_scheduler("iddpm", num_steps=10)
    with pytest.raises(ValueError, match="noise_schedule"):
        build_scheduler("iddpm", noise_schedule="sigmoid")


def test_q_sample_statistics():
    d = IDDPM(timestep_respacing="")
    x0 = torch.full((20000,), 0.7)
    for step in (0, 300, 999):
        t = torch.full((20000,), step)
        xt = d.q_sample(x0, t, noise=torch.randn(20000, generator=torch.Generator().manual_seed(step)))
        ac = d.alphas_cumprod[step]
        assert xt.mean().item() == pytest.approx(0.7 * math.sqrt(ac), abs=0.03)
        assert xt.std().item() == pytest.approx(math.sqrt(1 - ac), rel=0.03)


# ---------------------------------------------------------------------------- training losses
def _reference_terms(d: IDDPM, out: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """Independent float64 computation of the loss terms (ε-MSE, KL / decoder NLL in bits/dim)."""
    out, x0, noise = out.double(), x0.double(), noise.double()
    eps, v = out.chunk(2, dim=1)
    ac = torch.tensor(d.alphas_cumprod)[t].view(-1, 1, 1, 1, 1)
    ac_prev = torch.tensor(d.alphas_cumprod_prev)[t].view(-1, 1, 1, 1, 1)
    beta = torch.tensor(d.betas)[t].view(-1, 1, 1, 1, 1)
    xt = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
    post_var = torch.tensor(d.posterior_variance)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))[t].view(-1, 1, 1, 1, 1)

    def post_mean(x_start):
        return (beta * ac_prev.sqrt() * x_start + (1 - ac_prev) * (1 - beta).sqrt() * xt) / (1 - ac)

    x0_hat = (xt - (1 - ac).sqrt() * eps) / ac.sqrt()
    frac = (v + 1) / 2
    logvar = frac * torch.log(beta) + (1 - frac) * post_logvar
    mu_true, mu = post_mean(x0), post_mean(x0_hat)
    kl = 0.5 * (
        -1 + logvar - post_logvar + torch.exp(post_logvar - logvar) + (mu_true - mu) ** 2 * torch.exp(-logvar)
    )

    def cdf(z):
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))

    inv_std = torch.exp(-0.5 * logvar)
    upper, lower = cdf(inv_std * (x0 - mu + 1 / 255)), cdf(inv_std * (x0 - mu - 1 / 255))
    logp = torch.where(
        x0 < -0.999,
        torch.log(upper.clamp(min=1e-12)),
        torch.where(
            x0 > 0.999, torch.log((1 - lower).clamp(min=1e-12)), torch.log((upper - lower).clamp(min=1e-12))
        ),
    )
    dims = (1, 2, 3, 4)
    vb = torch.where(t == 0, (-logp).mean(dims), kl.mean(dims)) / math.log(2)
    return ((noise - eps) ** 2).mean(dims), vb


def test_training_losses_match_independent_maths_and_decoder_nll_at_t0():
    d = build_scheduler("iddpm", timestep_respacing="")
    model = TinyDenoiser()
    x0 = _latents(1).clamp(-1.2, 1.2)
    noise = _latents(2)
    t = torch.tensor([0, 637])
    with torch.no_grad():
        terms = d.training_losses(model, x0, t, noise=noise)
        out = model(d.q_sample(x0, t, noise=noise), t)
    assert set(terms) == {"loss", "mse", "vb"} and all(v.shape == (B,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    mse_ref, vb_ref = _reference_terms(d, out, x0, noise, t)
    torch.testing.assert_close(terms["mse"].double(), mse_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["vb"].double(), vb_ref, rtol=1e-4, atol=1e-6)
    # t == 0: vb is the discretized-Gaussian decoder NLL of x0 under p(x_0 | x_1) in bits/dim
    pmv = d.p_mean_variance(out, d.q_sample(x0, t, noise=noise), t)
    nll0 = -discretized_gaussian_log_likelihood(x0, pmv["mean"], 0.5 * pmv["log_variance"])
    assert terms["vb"][0].item() == pytest.approx((mean_flat(nll0)[0] / math.log(2)).item(), rel=1e-6)


def test_model_called_with_original_timesteps_and_kwargs_untouched():
    d = IDDPM(timestep_respacing="10")
    model = TinyDenoiser()
    kwargs = {"y": torch.zeros(B, 1, 3, 5)}
    d.training_losses(model, _latents(), torch.tensor([0, 9]), model_kwargs=kwargs)
    assert model.calls[0]["t"].tolist() == [0, 999]
    assert set(model.calls[0]) == {"x", "t", "y"} and set(kwargs) == {"y"}


def test_frame_mask_renoises_at_t0_and_excludes_frames_from_the_loss():
    d = IDDPM(timestep_respacing="")
    model = TinyDenoiser()
    x0, noise = _latents(1), _latents(2)
    t = torch.tensor([500, 20])
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    terms = d.training_losses(model, x0, t, noise=noise, mask=mask)
    x_t = model.calls[-1]["x"]
    x_t0 = d.q_sample(x0, torch.zeros_like(t), noise=noise)
    torch.testing.assert_close(x_t[0, :, 0], x_t0[0, :, 0])
    torch.testing.assert_close(x_t[1, :, 2:], x_t0[1, :, 2:])
    torch.testing.assert_close(x_t[0, :, 1:], d.q_sample(x0, t, noise=noise)[0, :, 1:])
    # changing the target (noise) and data of masked frames does not change any term (frame-local model)
    noise2, x02 = noise.clone(), x0.clone()
    noise2[0, :, 0] += 3.0
    noise2[1, :, 2:] -= 2.0
    x02[0, :, 0] *= -1
    terms2 = d.training_losses(model, x02, t, noise=noise2, mask=mask)
    for key in ("loss", "mse", "vb"):
        torch.testing.assert_close(terms[key], terms2[key])
    # ... while the same change without a mask does
    assert not torch.allclose(
        d.training_losses(model, x0, t, noise=noise)["mse"],
        d.training_losses(model, x0, t, noise=noise2)["mse"],
    )


def test_masked_mean_flat_averages_only_kept_frames():
    x = torch.arange(2 * 1 * 3 * 1 * 2, dtype=torch.float32).view(2, 1, 3, 1, 2)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    expected = torch.stack([x[0, :, [0, 2]].mean(), x[1, :, 2].mean()])
    torch.testing.assert_close(mean_flat(x, mask), expected)
    with pytest.raises(ValueError, match="frame mask"):
        mean_flat(x, mask[:, :2])


def test_vb_detaches_the_mean_but_trains_the_variance():
    d = IDDPM(timestep_respacing="")
    raw = torch.randn(B, 2 * C, T, H, W, requires_grad=True)
    terms = d.training_losses(lambda x, t: raw, _latents(), torch.tensor([10, 400]), noise=_latents(3))
    (grad,) = torch.autograd.grad(terms["vb"].sum(), raw)
    assert grad[:, :C].abs().max().item() == 0.0
    assert grad[:, C:].abs().max().item() > 0.0
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), raw)
    assert grad_mse[:, :C].abs().max().item() > 0.0 and grad_mse[:, C:].abs().max().item() == 0.0


def test_fixed_variance_and_rescaled_variants():
    x0, noise, t = _latents(), _latents(2), torch.tensor([3, 800])
    fixed = IDDPM(timestep_respacing="", learn_sigma=False)
    terms = fixed.training_losses(lambda x, tt: torch.zeros_like(x), x0, t, noise=noise)
    torch.testing.assert_close(terms["vb"], torch.zeros(B))
    torch.testing.assert_close(terms["loss"], (noise**2).mean(dim=(1, 2, 3, 4)))
    out = torch.randn(B, 2 * C, T, H, W)
    base = IDDPM(timestep_respacing="").training_losses(lambda x, tt: out, x0, t, noise=noise)
    rescaled = IDDPM(timestep_respacing="", rescale_learned_sigmas=True).training_losses(
        lambda x, tt: out, x0, t, noise=noise
    )
    torch.testing.assert_close(rescaled["vb"], base["vb"])  # num_timesteps / 1000 == 1
    kl = IDDPM(timestep_respacing="", use_kl=True).training_losses(lambda x, tt: out, x0, t, noise=noise)
    torch.testing.assert_close(kl["loss"], base["vb"] * 1000)
    with pytest.raises(ValueError, match=r"\[B, 2C"):
        IDDPM(timestep_respacing="").training_losses(lambda x, tt: x, x0, t)


# ---------------------------------------------------------------------------- sampling
def test_guided_output_cfg_math_and_cfg_channel():
    cond = torch.randn(B, 2 * C, T, H, W)
    uncond = torch.randn(B, 2 * C, T, H, W)
    out = torch.cat([cond, uncond])
    default = guided_output(out, 7.0, None)  # C_out // 2 = 4 guided channels
    torch.testing.assert_close(default[:, :C], uncond[:, :C] + 7.0 * (cond[:, :C] - uncond[:, :C]))
    torch.testing.assert_close(default[:, C:], cond[:, C:])
    three = guided_output(out, 7.0, 3)  # Open-Sora configs: the 4th latent channel stays unguided
    torch.testing.assert_close(three[:, :3], uncond[:, :3] + 7.0 * (cond[:, :3] - uncond[:, :3]))
    torch.testing.assert_close(three[:, 3:], cond[:, 3:])
    with pytest.raises(ValueError, match="cfg_channel"):
        guided_output(out, 7.0, 9)


def test_sample_batches_cond_then_null_with_one_forward_per_step():
    sampler = build_scheduler("iddpm", num_sampling_steps=5, cfg_scale=7.0)
    model = CaptionModel(null_value=-1.0)
    y = torch.full((B, 1, 3, 5), 2.0)
    text_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    fps = torch.tensor([8.0, 24.0])
    z = _latents()
    res = sampler.sample(model, z, y, mask=text_mask, fps=fps, generator=torch.Generator().manual_seed(0))
    assert res.shape == z.shape and sampler.last_num_model_evals == 5 == len(model.calls)
    assert [c["t"].tolist() for c in model.calls] == [[t] * 2 * B for t in (999, 749, 500, 250, 0)]
    first = model.calls[0]
    assert first["x"].shape[0] == 2 * B and torch.equal(first["x"][:B], first["x"][B:])
    assert torch.equal(first["y"][:B], y) and torch.equal(first["y"][B:], model.null_caption(B))
    assert torch.equal(first["mask"].key_mask, torch.cat([text_mask, text_mask]).bool())  # prepared once
    assert all(c["mask"] is first["mask"] for c in model.calls)  # one TextMask for every step
    assert torch.equal(first["fps"], torch.cat([fps, fps])) and "x_mask" not in first


def test_sample_step_uses_guided_eps_and_first_half_of_a_2b_noise_draw():
    sampler = IDDPM(num_sampling_steps=2, cfg_scale=3.0)
    model = CaptionModel(null_value=-1.0)
    y = torch.full((B, 1, 3, 5), 0.5)
    z = _latents()
    torch.manual_seed(123)
    sampler.sample(model, z, y)
    x_after_first = model.calls[1]["x"][:B]
    torch.manual_seed(123)
    noise = torch.randn(2 * B, C, T, H, W)[:B]
    t = torch.full((B,), 1)  # respaced index of original step 999
    eps = -1.0 + 3.0 * (0.5 - -1.0) + 0.1 * z  # uncond + s·(cond − uncond)
    x0_hat = sampler.predict_xstart_from_eps(z, t, eps)
    mean, _, _ = sampler.q_posterior_mean_variance(x0_hat, z, t)
    log_var = 0.5 * np.log(sampler.betas[1]) + 0.5 * sampler.posterior_log_variance_clipped[1]  # v = 0
    torch.testing.assert_close(x_after_first, mean + math.exp(0.5 * log_var) * noise)


def test_sample_is_deterministic_given_a_generator():
    sampler = IDDPM(num_sampling_steps=4)
    model = CaptionModel()
    y = torch.randn(B, 1, 3, 5)
    a = sampler.sample(model, _latents(), y, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(model, _latents(), y, generator=torch.Generator().manual_seed(7))
    c = sampler.sample(model, _latents(), y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="y_null"):
        sampler.sample(lambda x, t, **k: x, _latents(), y)


def test_masked_sampling_follows_the_reference_schedule_and_quirk():
    steps = 10
    frame_mask = torch.tensor([[0.0, 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    y = torch.randn(B, 1, 3, 5)
    z = _latents()
    quirk_model = CaptionModel()
    quirk = IDDPM(num_sampling_steps=steps).sample(
        quirk_model, z, y, frame_mask=frame_mask, generator=torch.Generator().manual_seed(0)
    )
    # x_mask = mask_t > t with mask_t = int(m · steps): m=0 never, m=0.5 for t < 5, m=1 always (both halves)
    for call, t in zip(quirk_model.calls, range(steps - 1, -1, -1), strict=True):
        x_mask = call["x_mask"]
        assert torch.equal(x_mask[:B], x_mask[B:])
        assert x_mask[0].tolist() == [False, t < 5, True, True]
        assert x_mask[1].tolist() == [True, True, True, False]
    # frames with m = 0.5 keep z until step 5 (re-noised there), m = 0 frames keep z until the last step
    inputs = [c["x"][:B] for c in quirk_model.calls]
    for step_idx, t in enumerate(range(steps - 1, -1, -1)):
        if t > 5:
            torch.testing.assert_close(inputs[step_idx][0, :, 1], z[0, :, 1])
        if t > 0:
            torch.testing.assert_close(inputs[step_idx][0, :, 0], z[0, :, 0])
            torch.testing.assert_close(inputs[step_idx][1, :, 3], z[1, :, 3])
    assert not torch.allclose(inputs[-1][0, :, 0], z[0, :, 0])  # QUIRK: re-noised at t = 0 ...
    delta = (quirk[0, :, 0] - z[0, :, 0]).abs().max().item()
    assert 0 < delta < 0.2  # ... and taken from the model afterwards
    fixed_model = CaptionModel()
    fixed = IDDPM(num_sampling_steps=steps, preserve_reference=True).sample(
        fixed_model, z, y, frame_mask=frame_mask, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(fixed[0, :, 0], z[0, :, 0]) and torch.equal(fixed[1, :, 3], z[1, :, 3])
    assert all(torch.equal(c["x"][0, :, 0], z[0, :, 0]) for c in fixed_model.calls)
    with pytest.raises(ValueError, match="frame_mask"):
        IDDPM(num_sampling_steps=steps).sample(CaptionModel(), z, y, frame_mask=frame_mask[:, :2])


@pytest.mark.parametrize("name", ["iddpm", "dpm-solver"])
def test_tiny_stdit_integration(name):
    models = pytest.importorskip("opensora_core.models")
    try:
        model = models.build_model(
            "STDiT-XL/2",
            depth=1,
            hidden_size=64,
            num_heads=4,
            input_size=(2, 8, 8),
            caption_channels=32,
            model_max_length=6,
        )
    except Exception as err:  # the model family may not be available in this checkout yet
        pytest.skip(f"tiny STDiT not buildable: {err}")
    model.eval()
    z = torch.randn(1, 4, 2, 8, 8)
    y = torch.randn(1, 1, 6, 32)
    mask = torch.ones(1, 6, dtype=torch.long)
    y_null = model.null_caption(1) if hasattr(model, "null_caption") else torch.zeros_like(y)
    kwargs = {"num_sampling_steps": 3, "cfg_scale": 4.0}
    if name == "iddpm":
        kwargs["cfg_channel"] = 3
    sampler = build_scheduler(name, **kwargs)
    out = sampler.sample(model, z, y, mask=mask, y_null=y_null)
    assert out.shape == z.shape and torch.isfinite(out).all() and sampler.last_num_model_evals == 3
    d = build_scheduler("iddpm", timestep_respacing="")
    terms = d.training_losses(
        model,
        z,
        torch.tensor([5]),
        model_kwargs={"y": y, "mask": mask, "x_mask": torch.tensor([[False, True]])},
        mask=torch.tensor([[False, True]]),
    )
    assert torch.isfinite(terms["loss"]).all()


def test_schedule_dtype_is_a_config_field():
    """`scheduler = dict(type="iddpm", schedule_dtype="float64")` in a config reaches the sampler and trainer."""
    from opensora_core.config.schema import RunConfig
    from opensora_core.sample.pipeline import build_sampling_scheduler

    base = {
        "model": {"type": "STDiT-XL/2"},
        "vae": {"type": "identity"},
        "text_encoder": {"type": "t5", "from_pretrained": "debug/tiny-t5"},
    }
    cfg64 = RunConfig.model_validate({**base, "scheduler": {"type": "iddpm", "schedule_dtype": "float64"}})
    cfg32 = RunConfig.model_validate({**base, "scheduler": {"type": "iddpm"}})
    assert build_sampling_scheduler(cfg64).betas.dtype == np.float64
    assert build_sampling_scheduler(cfg32).betas.dtype == np.float32
    with pytest.raises(ValueError, match="schedule_dtype"):
        RunConfig.model_validate({**base, "scheduler": {"type": "iddpm", "schedule_dtype": "float16"}})
