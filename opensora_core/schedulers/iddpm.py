"""IDDPM scheduler (Open-Sora ``"iddpm"``): training losses and ancestral sampling with classifier-free guidance."""

from __future__ import annotations

from typing import Any

import torch

from opensora_core.schedulers._cfg import guided_kwargs, resolve_null_caption
from opensora_core.schedulers._diffusion import (
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
)
from opensora_core.schedulers._respace import SpacedDiffusion, space_timesteps


def guided_output(model_out: torch.Tensor, cfg_scale: float, cfg_channel: int | None) -> torch.Tensor:
    """Combine a ``[2B, C_out, ...]`` output (cond first, null second) into the guided first half ``[B, C_out, ...]``.

    The first ``cfg_channel`` channels (default ``C_out // 2``, the ε channels) become
    ``uncond + cfg_scale·(cond − uncond)``; the remaining channels (unguided ε channels and the variance
    channels) are the conditional half's own.
    """
    half = model_out.shape[0] // 2
    channels = model_out.shape[1] // 2 if cfg_channel is None else cfg_channel
    if not 0 < channels <= model_out.shape[1]:
        raise ValueError(
            f"cfg_channel={cfg_channel} must be in 1..{model_out.shape[1]} (model output channels)"
        )
    eps, rest = model_out[:, :channels], model_out[:, channels:]
    cond_eps, uncond_eps = eps[:half], eps[half:]
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([half_eps, rest[:half]], dim=1)


class IDDPM(SpacedDiffusion):
    """Improved-DDPM diffusion as configured by Open-Sora (ε prediction, learned range variance, MSE + vb).

    Args:
        num_sampling_steps: respace to this many steps (sets ``timestep_respacing=str(n)``).
        timestep_respacing: improved-diffusion respacing string; ``None``/``""`` = all ``diffusion_steps``.
        noise_schedule: ``"linear"`` (Open-Sora) or ``"squaredcos_cap_v2"``.
        use_kl: train on the rescaled variational bound only.
        sigma_small: with ``learn_sigma=False``, use β̃_t instead of β_t as the fixed variance.
        predict_xstart: the model predicts x_0 instead of ε.
        learn_sigma: the model outputs ``[ε, v]`` (2C channels) and the variance is learned (LEARNED_RANGE).
        rescale_learned_sigmas: scale the vb term by ``num_timesteps / 1000``.
        diffusion_steps: length of the base schedule.
        cfg_scale: classifier-free guidance scale used by :meth:`sample`.
        cfg_channel: number of leading output channels that are guided (``None`` = ``C_out // 2``; Open-Sora
            configs use 3, a GLIDE leftover that leaves the 4th latent channel unguided).
        preserve_reference: masked sampling default; see :meth:`sample`.
        schedule_dtype: precision of the (respaced) schedule arrays. ``"float32"`` (default) is what Open-Sora
            1.1 and later compute (respaced betas stored as float32, everything derived in float32);
            ``"float64"`` is Open-Sora 1.0 / improved-diffusion. The two differ most at small t (relative
            ~1e-3 in ``sqrt(1 - alphas_cumprod)`` at t = 0).
    """

    def __init__(
        self,
        num_sampling_steps: int | None = None,
        timestep_respacing: str | list[int] | None = None,
        noise_schedule: str = "linear",
        use_kl: bool = False,
        sigma_small: bool = False,
        predict_xstart: bool = False,
        learn_sigma: bool = True,
        rescale_learned_sigmas: bool = False,
        diffusion_steps: int = 1000,
        cfg_scale: float = 4.0,
        cfg_channel: int | None = None,
        preserve_reference: bool = False,
        schedule_dtype: str = "float32",
    ) -> None:
        betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
        if use_kl:
            loss_type = LossType.RESCALED_KL
        elif rescale_learned_sigmas:
            loss_type = LossType.RESCALED_MSE
        else:
            loss_type = LossType.MSE
        if num_sampling_steps is not None:
            if timestep_respacing not in (None, ""):
                raise ValueError(
                    f"give either num_sampling_steps ({num_sampling_steps}) or timestep_respacing "
                    f"({timestep_respacing!r}), not both"
                )
            timestep_respacing = str(num_sampling_steps)
        if timestep_respacing is None or timestep_respacing == "":
            timestep_respacing = [diffusion_steps]
        if learn_sigma:
            var_type = ModelVarType.LEARNED_RANGE
        else:
            var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
        super().__init__(
            space_timesteps(diffusion_steps, timestep_respacing),
            betas=betas,
            model_mean_type=ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON,
            model_var_type=var_type,
            loss_type=loss_type,
            schedule_dtype=schedule_dtype,
        )
        if cfg_channel is not None and cfg_channel < 1:
            raise ValueError(f"cfg_channel must be a positive channel count or None, got {cfg_channel}")
        self.cfg_scale = float(cfg_scale)
        self.cfg_channel = cfg_channel
        self.preserve_reference = preserve_reference
        self.last_num_model_evals = 0

    def _noise(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Gaussian noise for the first half of a doubled batch (drawn for 2B rows, as the reference does)."""
        full = torch.randn(
            (2 * x.shape[0], *x.shape[1:]), generator=generator, dtype=x.dtype, device=x.device
        )
        return full[: x.shape[0]]

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
        preserve_reference: bool | None = None,
        **video_info: Any,
    ) -> torch.Tensor:
        """Ancestral sampling over the respaced steps with classifier-free guidance.

        Each step runs the model once on ``[x, x]`` (2B) with ``y = cat(cond, null)`` (cond first) and the text
        mask, video info and ``x_mask`` doubled; the guided output is turned into p(x_{t-1}|x_t)
        (``clip_denoised=False``). Noise is drawn for the whole 2B batch and its first half used, so with the
        global RNG the draws match the reference sampler.

        Args:
            model: ``model(x, t, y=..., mask=..., x_mask=..., **video_info) -> [2B, 2C, T, H, W]``.
            z: initial noise ``[B, C, T, H, W]`` (frames to keep hold the reference latents when masking).
            y: caption embeddings ``[B, 1, L, D]``.
            mask: text mask ``[B, L]`` (reused for the null caption).
            y_null: null caption embeddings like ``y``; default ``model.null_caption(B)``.
            frame_mask: float ``[B, T]`` in [0, 1]: 1 = generate, 0 = keep ``z``'s frame, in between = edit
                ratio. With ``mask_t = int(m · num_steps)``: at step t frames with ``mask_t == t`` are
                re-noised to level t, the model gets ``x_mask = mask_t > t``, and after the step frames with
                ``mask_t < t`` are reset to their value before the step.
                QUIRK (kept by default for parity with the reference): frames with m = 0 are re-noised at the
                last step (t = 0) and then taken from the model, so kept frames change slightly.
            progress: show a tqdm bar.
            generator: torch.Generator (on ``z``'s device) for all sampler noise (default: the global RNG).
            preserve_reference: fix the quirk: m = 0 frames are never re-noised and stay exactly ``z``'s
                (default: the constructor's ``preserve_reference``).
            **video_info: further model inputs (STDiT2: height, width, num_frames, ar, fps); tensors whose first
                dim is B are doubled.

        Returns:
            latents ``[B, C, T, H, W]``. ``self.last_num_model_evals`` holds the number of model forwards.
        """
        if z.dim() != 5:
            raise ValueError(f"z must be latents [B, C, T, H, W], got shape {tuple(z.shape)}")
        batch = z.shape[0]
        if y.shape[0] != batch:
            raise ValueError(f"y batch {y.shape[0]} != z batch {batch}")
        y_null = resolve_null_caption(model, y, y_null)
        model_kwargs = guided_kwargs(y, y_null, mask, video_info, batch)
        keep_exact = self.preserve_reference if preserve_reference is None else preserve_reference
        mask_t = None
        if frame_mask is not None:
            if frame_mask.shape != (batch, z.shape[2]):
                raise ValueError(
                    f"frame_mask must be [B, T] = {(batch, z.shape[2])}, got {tuple(frame_mask.shape)}"
                )
            mask_t = (frame_mask * self.num_timesteps).to(torch.int)

        self.last_num_model_evals = 0
        x = z
        # per-step inputs made once: respaced steps [N, B] and the model's original timesteps [N, 2B]
        t_steps = torch.arange(self.num_timesteps, device=z.device)[:, None].expand(-1, batch)
        t_model = self.map_timesteps(t_steps.repeat(1, 2))
        steps = list(range(self.num_timesteps))[::-1]
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps)
        for i in steps:
            t = t_steps[i]  # [B]
            step_kwargs = model_kwargs
            x_kept = x
            if mask_t is not None:
                x_noise = self.q_sample(x, t, noise=self._noise(x, generator))
                renoise = mask_t == i  # [B, T]
                if keep_exact:
                    renoise = renoise & (mask_t > 0)
                x = torch.where(renoise[:, None, :, None, None], x_noise, x)
                x_mask = mask_t > i
                step_kwargs = {**model_kwargs, "x_mask": torch.cat([x_mask, x_mask], dim=0)}

            model_out = model(torch.cat([x, x], dim=0), t_model[i], **step_kwargs)
            self.last_num_model_evals += 1
            out = self.p_mean_variance(
                guided_output(model_out, self.cfg_scale, self.cfg_channel), x, t, clip_denoised=False
            )
            noise = self._noise(x, generator)  # drawn at every step (t = 0 too), as the reference
            sample = out["mean"]
            if i > 0:
                sample = torch.exp(0.5 * out["log_variance"]).mul_(noise).add_(sample)
            if mask_t is not None:
                reset = mask_t < i
                if keep_exact:
                    reset = reset | (mask_t == 0)
                sample = torch.where(reset[:, None, :, None, None], x_kept, sample)
            x = sample
        return x
