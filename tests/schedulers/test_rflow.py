"""Rectified flow (Open-Sora 1.2 "rflow"): parity of losses and sampling, RNG order, timestep transform, CFG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opensora_core.schedulers import RFlow, build_scheduler
from opensora_core.schedulers.rflow import timestep_transform
from tests.models.test_stdit3 import B, parity, parity_model, video_info


class Recorder(nn.Module):
    """Wraps a model and records every call's inputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[dict] = []

    def null_caption(self, batch_size: int) -> torch.Tensor:
        return self.inner.null_caption(batch_size)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls.append({"x": x.clone(), "t": t.clone(), **kwargs})
        return self.inner(x, t, **kwargs)


LOSS_CASES = [
    "loss_t",
    "loss_t_mask",
    "loss_transform_uniform",
    "loss_transform_logitnormal_mask",
    "loss_discrete_image",
]


@pytest.mark.parametrize("case", LOSS_CASES)
def test_training_loss_matches_open_sora_1_2_including_drawn_timesteps(case):
    data, meta = parity()
    spec = meta["cases"][case]
    scheduler = RFlow(**spec["scheduler"])
    model = Recorder(parity_model())
    kwargs = dict(y=data["in.y"], mask=data["in.text_mask"], **video_info(*spec["info"]))
    frame_mask = data["in.x_mask"] if spec["frame_mask"] else None
    if frame_mask is not None:
        kwargs["x_mask"] = frame_mask
    if spec["seed"] is not None:
        torch.manual_seed(spec["seed"])  # t (and the noise, when not given) come from the global RNG
    with torch.no_grad():
        terms = scheduler.training_losses(
            model,
            data["in.x0"],
            kwargs,
            noise=data["in.noise"] if spec["noise_given"] else None,
            mask=frame_mask,
            t=data["in.t_fixed"] if spec["t_given"] else None,
        )
    torch.testing.assert_close(model.calls[0]["t"].float(), data[f"out.{case}.t"], atol=1e-4, rtol=0)
    torch.testing.assert_close(terms["t"].float(), data[f"out.{case}.t"], atol=1e-4, rtol=0)
    torch.testing.assert_close(terms["loss"], data[f"out.{case}"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["sample_cfg", "sample_masked"])
def test_five_step_cfg_sample_matches_open_sora_1_2(case):
    data, meta = parity()
    spec = meta["cases"][case]
    scheduler = build_scheduler("rflow", num_sampling_steps=5, cfg_scale=7.0, use_timestep_transform=True)
    model = Recorder(parity_model())
    if spec["seed"] is not None:
        torch.manual_seed(spec["seed"])  # the per-step re-noising draws
    out = scheduler.sample(
        model,
        data["in.z"].clone(),
        data["in.y"],
        mask=data["in.text_mask"],
        frame_mask=data["in.frame_mask"] if spec["frame_mask"] else None,
        **video_info(*spec["info"]),
    )
    torch.testing.assert_close(out, data[f"out.{case}"], atol=1e-4, rtol=0)
    # one batched 2B forward per step: the condition first, the null caption second
    assert scheduler.last_num_model_evals == len(model.calls) == 5
    ts = torch.stack([c["t"][:B] for c in model.calls])
    torch.testing.assert_close(ts, data[f"out.{case}.ts"], atol=1e-4, rtol=0)
    for call in model.calls:
        assert call["x"].shape[0] == 2 * B and call["y"].shape[0] == 2 * B
        torch.testing.assert_close(call["x"][:B], call["x"][B:])
        torch.testing.assert_close(call["y"][B:], model.null_caption(B))


def test_masked_sampling_keeps_frames_until_their_time_and_marks_them_for_the_model():
    data, _ = parity()
    scheduler = RFlow(num_sampling_steps=5, cfg_scale=7.0, use_timestep_transform=False)
    model = Recorder(parity_model())
    frame_mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0]])
    z = data["in.z"].clone()
    out = scheduler.sample(model, z, data["in.y"], frame_mask=frame_mask, **video_info(64, 64, 51, [24, 24]))
    torch.testing.assert_close(out[0, :, 0], z[0, :, 0], atol=0, rtol=0)  # m = 0: never touched
    assert not torch.allclose(out[1, :, 0], z[1, :, 0])  # m = 0.5: edited from t <= 500 on
    x_masks = [c["x_mask"][:B] for c in model.calls]  # t = 1000, 800, 600, 400, 200
    assert [bool(m[1, 0]) for m in x_masks] == [False, False, False, True, True]
    assert all(not bool(m[0, 0]) and bool(m[:, 1:].all()) for m in x_masks)


def test_timestep_transform_values():
    t = torch.tensor([0.0, 250.0, 500.0, 1000.0])
    square_512 = dict(height=torch.full((4,), 512.0), width=torch.full((4,), 512.0))
    image = timestep_transform(t, {**square_512, "num_frames": torch.ones(4)}, num_timesteps=1000)
    torch.testing.assert_close(image, t)  # ratio 1: identity
    video = timestep_transform(t, {**square_512, "num_frames": torch.full((4,), 68.0)}, num_timesteps=1000)
    ratio = 20**0.5  # 68 frames -> 68 // 17 * 5 = 20 latent frames
    s = t / 1000
    torch.testing.assert_close(video, ratio * s / (1 + (ratio - 1) * s) * 1000)
    assert video[0] == 0 and video[-1] == 1000
    with pytest.raises(ValueError, match="num_frames"):
        timestep_transform(t, square_512, num_timesteps=1000)


def test_generator_draws_are_reproducible_and_independent_of_the_global_rng():
    scheduler = RFlow(sample_method="logit-normal", use_timestep_transform=False)

    def velocity_model(x, t, **kwargs):
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)

    x0 = torch.randn(3, 4, 2, 4, 4)
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(
            scheduler.training_losses(velocity_model, x0, {}, generator=torch.Generator().manual_seed(5))
        )
    torch.testing.assert_close(runs[0]["t"], runs[1]["t"], atol=0, rtol=0)
    torch.testing.assert_close(runs[0]["loss"], runs[1]["loss"], atol=0, rtol=0)
    assert bool(((runs[0]["t"] > 0) & (runs[0]["t"] < 1000)).all())


def test_exact_velocity_gives_zero_loss_and_one_euler_step_reaches_the_data():
    x0 = torch.randn(2, 4, 3, 4, 4)
    noise = torch.randn_like(x0)

    def exact(x, t, **kwargs):  # v = x0 - noise, whatever t
        return torch.cat([x0 - noise, torch.full_like(x0, 1e3)], dim=1)

    scheduler = RFlow(num_sampling_steps=1, cfg_scale=3.0)
    terms = scheduler.training_losses(exact, x0, {}, noise=noise, t=torch.tensor([100.0, 900.0]))
    assert float(terms["loss"].abs().max()) < 1e-12
    doubled = lambda x, t, **kw: torch.cat([x0 - noise] * 2, dim=0).repeat(1, 2, 1, 1, 1)  # noqa: E731
    out = scheduler.sample(doubled, noise.clone(), torch.zeros(2, 1, 3, 5), y_null=torch.ones(2, 1, 3, 5))
    torch.testing.assert_close(out, x0)  # linear path: one step of dt = 1 from pure noise


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="sample_method"):
        RFlow(sample_method="beta")
    with pytest.raises(ValueError, match="use_discrete_timesteps"):
        RFlow(use_discrete_timesteps=True, sample_method="logit-normal")
    with pytest.raises(ValueError, match="does not take"):
        build_scheduler("rflow", timestep_respacing="10")
