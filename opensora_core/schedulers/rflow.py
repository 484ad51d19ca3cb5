"""Rectified flow (Open-Sora 1.2 ``"rflow"``): velocity training loss and the Euler sampler with CFG.

Conventions (as the 1.2 reference, so released weights and seeded runs carry over):

- time ``t`` runs over ``[0, num_timesteps]``; ``t = num_timesteps`` is pure noise. ``add_noise`` gives
  ``x_t = (1 − t/N)·x_0 + (t/N)·ε`` and the model predicts the velocity ``v = x_0 − ε`` in its first
  ``C_out / 2`` channels (the rest, a variance head of pred_sigma models, is ignored);
- the **timestep transform** shifts ``t`` towards noise for larger videos: with ``s = t/N`` and
  ``r = sqrt(H·W / 512²) · sqrt(F') · transform_scale`` it maps ``s ↦ r·s / (1 + (r − 1)·s)``, where
  ``F' = num_frames // 17 · 5`` (the 1.2 VAE's 17 → 5 latent frames; 1 for images). QUIRK kept for parity:
  ``1 < num_frames < 17`` gives ``F' = 0``, hence ``t = 0``;
- training draws ``t`` first (uniform ``rand·N``, logit-normal ``sigmoid(N(loc, scale))·N``, or discrete
  ``randint(0, N)``), applies the transform, then draws the noise (``randn_like``) when not given;
- a frame mask in training (bool ``[B, T]``, False = conditioning frame) keeps those frames clean and leaves
  them out of the loss;
- sampling uses ``num_sampling_steps`` Euler steps from ``t_i = (1 − i/n)·N`` (transformed per sample when
  ``use_timestep_transform``), the last step going to 0; each step runs the model once on ``[z, z]`` with
  ``y = cat(cond, null)`` and uses ``v = v_null + cfg_scale·(v_cond − v_null)``;
- masked sampling takes a float per-frame mask ``m`` in ``[0, 1]`` (0 = keep the given frame, 1 = generate,
  in between = edit strength): a frame joins the generation when ``m·N ≥ t`` — at that step it is re-noised
  from its given value to level t (a fresh ``randn_like`` is drawn every step, used or not) — and frames not
  yet joined are reset to their value before the step and get ``x_mask = False`` (modulated as timestep 0).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from opensora_core.schedulers._cfg import guided_kwargs, resolve_null_caption
from opensora_core.schedulers._diffusion import ModelFn, mean_flat

__all__ = ["RFlow", "timestep_transform"]

SampleMethod = Literal["uniform", "logit-normal"]


def timestep_transform(
    t: torch.Tensor,
    video_info: dict[str, Any],
    base_resolution: float = 512 * 512,
    base_num_frames: int = 1,
    scale: float = 1.0,
    num_timesteps: int = 1,
) -> torch.Tensor:
    """Shift timesteps t [B] (in ``[0, num_timesteps]``) by resolution and length (see the module docstring).

    ``video_info`` holds ``height``, ``width`` (pixels) and ``num_frames`` (pixel frames) as [B] tensors.
    """
    missing = [k for k in ("height", "width", "num_frames") if video_info.get(k) is None]
    if missing:
        raise ValueError(
            f"rflow use_timestep_transform needs video info {', '.join(missing)} ([B] tensors: the model's "
            "height/width/num_frames inputs); pass them or set use_timestep_transform=False"
        )
    height, width = torch.as_tensor(video_info["height"]), torch.as_tensor(video_info["width"])
    num_frames = torch.as_tensor(video_info["num_frames"])
    s = t / num_timesteps
    ratio_space = (height * width / base_resolution).sqrt()
    if num_frames.reshape(-1)[0] == 1:
        latent_frames = torch.ones_like(num_frames)
    else:
        latent_frames = num_frames // 17 * 5  # the 1.2 VAE: 17 frames -> 5 latent frames
    ratio_time = (latent_frames / base_num_frames).sqrt()
    ratio = (ratio_space * ratio_time * scale).to(s.device)
    return ratio * s / (1 + (ratio - 1) * s) * num_timesteps


class RFlow:
    """Rectified flow scheduler of Open-Sora 1.2 (see the module docstring for the exact conventions).

    Args:
        num_sampling_steps: Euler steps (= model evaluations) of :meth:`sample`.
        num_timesteps: length N of the time axis.
        cfg_scale: classifier-free guidance scale.
        use_discrete_timesteps: integer timesteps (training: ``randint``; sampling: rounded).
        use_timestep_transform: shift timesteps by resolution and number of frames.
        sample_method: training timestep distribution, ``"uniform"`` or ``"logit-normal"``.
        loc, scale: mean and std of the normal behind ``"logit-normal"``.
        transform_scale: extra factor of the timestep-transform ratio (training only, as the reference).
    """

    def __init__(
        self,
        num_sampling_steps: int = 10,
        num_timesteps: int = 1000,
        cfg_scale: float = 4.0,
        use_discrete_timesteps: bool = False,
        use_timestep_transform: bool = False,
        sample_method: SampleMethod = "uniform",
        loc: float = 0.0,
        scale: float = 1.0,
        transform_scale: float = 1.0,
    ) -> None:
        if sample_method not in ("uniform", "logit-normal"):
            raise ValueError(f"sample_method must be 'uniform' or 'logit-normal', got {sample_method!r}")
        if use_discrete_timesteps and sample_method != "uniform":
            raise ValueError("use_discrete_timesteps=True needs sample_method='uniform'")
        if num_sampling_steps < 1:
            raise ValueError(f"num_sampling_steps must be >= 1, got {num_sampling_steps}")
        self.num_sampling_steps = int(num_sampling_steps)
        self.num_timesteps = int(num_timesteps)
        self.cfg_scale = float(cfg_scale)
        self.use_discrete_timesteps = use_discrete_timesteps
        self.use_timestep_transform = use_timestep_transform
        self.sample_method = sample_method
        self.loc = float(loc)
        self.scale = float(scale)
        self.transform_scale = float(transform_scale)
        self.last_num_model_evals = 0

    # ------------------------------------------------------------------ noising and training
    def add_noise(self, x_start: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 − t/N)·x_start + (t/N)·noise with t [B] broadcast over [B, C, T, H, W]."""
        keep = 1 - t.float() / self.num_timesteps  # [B]
        keep = keep.view(-1, *([1] * (x_start.dim() - 1)))
        return keep * x_start + (1 - keep) * noise

    def sample_timesteps(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training timesteps [B] from the configured distribution (before the timestep transform).

        With the global RNG the draws are the reference's: the logit-normal one on the CPU, then moved.
        """
        n = self.num_timesteps
        if self.use_discrete_timesteps:
            return torch.randint(0, n, (batch,), device=device, generator=generator)
        if self.sample_method == "uniform":
            return torch.rand((batch,), device=device, generator=generator) * n
        gen_device = generator.device if generator is not None else "cpu"
        normal = torch.normal(
            torch.full((batch, 1), self.loc, device=gen_device),
            torch.full((batch, 1), self.scale, device=gen_device),
            generator=generator,
        )
        # LogisticNormal with one logit: a sigmoid clamped away from 0 and 1
        finfo = torch.finfo(normal.dtype)
        s = torch.sigmoid(normal).clamp(min=finfo.tiny, max=1.0 - finfo.eps)[:, 0]
        return s.to(device) * n

    def training_losses(
        self,
        model: ModelFn,
        x_start: torch.Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample velocity loss ``mean((v_pred − (x_0 − ε))²)``.

        Args:
            model: called as ``model(x_t, t, **model_kwargs)``; the first half of its output channels is v.
            x_start: clean latents [B, C, T, H, W].
            model_kwargs: model inputs (never modified); the timestep transform reads height/width/num_frames.
            noise: ε (drawn after t when None).
            mask: bool [B, T], False = conditioning frame: kept clean and left out of the loss.
            t: float timesteps [B] in [0, num_timesteps] used as given (no transform); drawn when None.
            generator: draw t and ε from it instead of the global RNG.

        Returns:
            ``{"loss": [B], "t": [B]}``.
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if t is None:
            t = self.sample_timesteps(x_start.shape[0], x_start.device, generator)
            if self.use_timestep_transform:
                t = timestep_transform(
                    t, model_kwargs, scale=self.transform_scale, num_timesteps=self.num_timesteps
                )
        if noise is None:
            noise = torch.randn(
                x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype
            )
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start shape {tuple(x_start.shape)}")
        x_t = self.add_noise(x_start, noise, t)
        if mask is not None:
            if x_start.dim() != 5 or mask.shape != (x_start.shape[0], x_start.shape[2]):
                raise ValueError(
                    f"mask must be bool [B, T] for x_start [B, C, T, H, W] = {tuple(x_start.shape)}; "
                    f"got {tuple(mask.shape)}"
                )
            mask = mask.bool()
            x_t0 = self.add_noise(x_start, noise, torch.zeros_like(t))
            x_t = torch.where(mask[:, None, :, None, None], x_t, x_t0)
        velocity = model(x_t, t, **model_kwargs).chunk(2, dim=1)[0]
        loss = mean_flat((velocity - (x_start - noise)).pow(2), mask=mask)
        return {"loss": loss, "t": t}

    # ------------------------------------------------------------------ sampling
    def timesteps(
        self, batch: int, video_info: dict[str, Any], device: torch.device | str
    ) -> list[torch.Tensor]:
        """The ``num_sampling_steps`` start times, each [B] (per-sample after the timestep transform)."""
        n, steps = self.num_timesteps, self.num_sampling_steps
        times: list[float] = [(1.0 - i / steps) * n for i in range(steps)]
        if self.use_discrete_timesteps:
            times = [int(round(t)) for t in times]
        out = [torch.tensor([t] * batch, device=device) for t in times]
        if self.use_timestep_transform:
            out = [timestep_transform(t, video_info, num_timesteps=n) for t in out]
        return out

    @torch.no_grad()
    def sample(
        self,
        model: Any,
        z: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        y_null: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        progress: bool = False,
        *,
        generator: torch.Generator | None = None,
        guidance_scale: float | None = None,
        **video_info: Any,
    ) -> torch.Tensor:
        """Euler integration from noise ``z`` with classifier-free guidance (one 2B forward per step).

        Args:
            model: ``model(x, t, y=..., mask=..., x_mask=..., **video_info) -> [2B, C_out, T, H, W]``.
            z: initial noise [B, C, T, H, W]; with ``frame_mask`` the frames to keep hold their latents.
            y: caption embeddings [B, 1, L, D]; mask: text mask [B, L] (reused for the null caption).
            y_null: null caption like ``y``; default ``model.null_caption(B)``.
            frame_mask: float [B, T] in [0, 1] (see the module docstring).
            progress: show a tqdm bar.
            generator: draw the per-step re-noising noise from it (default: the global RNG).
            guidance_scale: overrides ``cfg_scale`` for this call.
            **video_info: further model inputs (height, width, num_frames, fps, ...); [B] tensors are doubled.

        Returns:
            latents [B, C, T, H, W]; ``self.last_num_model_evals`` holds the number of model forwards.
        """
        if z.dim() != 5:
            raise ValueError(f"z must be latents [B, C, T, H, W], got shape {tuple(z.shape)}")
        batch = z.shape[0]
        if y.shape[0] != batch:
            raise ValueError(f"y batch {y.shape[0]} != z batch {batch}")
        scale = self.cfg_scale if guidance_scale is None else float(guidance_scale)
        y_null = resolve_null_caption(model, y, y_null)
        model_kwargs = guided_kwargs(y, y_null, mask, video_info, batch)
        timesteps = self.timesteps(batch, video_info, z.device)
        mask_t = joined = None
        if frame_mask is not None:
            if frame_mask.shape != (batch, z.shape[2]):
                raise ValueError(
                    f"frame_mask must be [B, T] = {(batch, z.shape[2])}, got {tuple(frame_mask.shape)}"
                )
            mask_t = frame_mask * self.num_timesteps  # [B, T]: the time from which each frame is generated
            joined = frame_mask == 1  # frames that start as noise

        # per-step inputs made once: the model's timesteps [2B] and the Euler step sizes dt/N [B, 1, 1, 1, 1]
        t_model = [torch.cat([t, t], dim=0) for t in timesteps]
        ends = [*timesteps[1:], torch.zeros_like(timesteps[0])]
        dt_steps = [
            ((t - end) / self.num_timesteps).view(-1, 1, 1, 1, 1)
            for t, end in zip(timesteps, ends, strict=True)
        ]
        self.last_num_model_evals = 0
        steps: Any = enumerate(timesteps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, total=len(timesteps))
        for i, t in steps:
            step_kwargs = model_kwargs
            if mask_t is not None:
                x_kept = z.clone()
                fresh = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
                x_noise = self.add_noise(x_kept, fresh, t)
                active = mask_t >= t[:, None]  # [B, T]
                z = torch.where((active & ~joined)[:, None, :, None, None], x_noise, x_kept)
                joined = active
                step_kwargs = {**model_kwargs, "x_mask": torch.cat([active, active], dim=0)}

            out = model(torch.cat([z, z], dim=0), t_model[i], **step_kwargs)
            self.last_num_model_evals += 1
            v_cond, v_null = out.chunk(2, dim=1)[0].chunk(2, dim=0)
            velocity = (v_cond - v_null).mul_(scale).add_(v_null)
            z = z + velocity.mul_(dt_steps[i])
            if mask_t is not None:
                z = torch.where(active[:, None, :, None, None], z, x_kept)
        return z
