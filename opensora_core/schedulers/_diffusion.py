"""Gaussian diffusion maths (GLIDE / ADM / improved-diffusion conventions), private to the schedulers.

Everything that decides numbers follows the improved-diffusion conventions that Open-Sora inherits:

- schedule arrays are numpy arrays computed in ``schedule_dtype``: float64 in improved-diffusion and
  Open-Sora 1.0; Open-Sora >= 1.1 stores the respaced betas as float32 and derives every array from them in
  float32 (which shows most at small t, e.g. ``sqrt(1 - alphas_cumprod)``); a per-sample value is gathered
  and cast to float32 (``extract``), so every coefficient multiplies the data as a float32 tensor;
- ``posterior_log_variance_clipped`` replaces the (zero) first posterior variance by the second one;
- the learned variance (``LEARNED_RANGE``) interpolates in log space between β̃_t (clipped) and β_t;
- the variational bound is reported in bits per dimension (nats / log 2); at t == 0 it is the
  discretized-Gaussian decoder NLL (bins of width 2/255 on [-1, 1], tanh approximation of the normal cdf);
- ``mean_flat`` with a frame mask averages only over frames whose mask is True.

This module holds only maths on tensors; the model is called by ``SpacedDiffusion`` / the samplers.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import numpy as np
import torch

ModelFn = Callable[..., torch.Tensor]

# schedule_dtype values: "float32" is what Open-Sora >= 1.1 computes, "float64" improved-diffusion / Open-Sora 1.0
SCHEDULE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ModelMeanType(enum.Enum):
    """What the first output channels of the model predict."""

    START_X = "start_x"  # x_0
    EPSILON = "epsilon"  # the noise ε


class ModelVarType(enum.Enum):
    """How the reverse-process variance is obtained."""

    FIXED_SMALL = "fixed_small"  # β̃_t (posterior variance)
    FIXED_LARGE = "fixed_large"  # β_t (first entry replaced by β̃_1)
    LEARNED_RANGE = "learned_range"  # model outputs v in [-1, 1]: log σ² = frac·log β_t + (1-frac)·log β̃_t


class LossType(enum.Enum):
    """Training objective."""

    MSE = "mse"  # ε-MSE (+ vb when the variance is learned)
    RESCALED_MSE = "rescaled_mse"  # as MSE, vb scaled by num_timesteps / 1000
    RESCALED_KL = "rescaled_kl"  # variational bound only, scaled by num_timesteps


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Return the float64 beta array of a named schedule.

    ``"linear"``: ``linspace(1e-4·s, 0.02·s, N)`` with ``s = 1000 / N`` (β₀ = 1e-4, β₉₉₉ = 0.02 for N = 1000).
    ``"squaredcos_cap_v2"``: the cosine schedule of improved-diffusion (β capped at 0.999).
    """
    if num_diffusion_timesteps < 1:
        raise ValueError(f"diffusion_steps must be >= 1, got {num_diffusion_timesteps}")
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "squaredcos_cap_v2":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [
            min(
                1 - alpha_bar((i + 1) / num_diffusion_timesteps) / alpha_bar(i / num_diffusion_timesteps),
                0.999,
            )
            for i in range(num_diffusion_timesteps)
        ]
        return np.array(betas, dtype=np.float64)
    raise ValueError(
        f"noise_schedule={schedule_name!r} is not known; use 'linear' (Open-Sora) or 'squaredcos_cap_v2'"
    )


def extract(arr: np.ndarray | torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """Gather ``arr[timesteps]`` and return it as float32 shaped ``[B, 1, ..., 1]`` (``ndim`` dims).

    ``arr`` is a schedule array (float64 / float32 numpy) or the float32 tensor of one on the timesteps'
    device (:meth:`GaussianDiffusion.table`: the same values, without a host-to-device copy per call).
    """
    if isinstance(arr, torch.Tensor):
        values = arr[timesteps]
    else:
        values = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    return values.reshape(values.shape + (1,) * (ndim - values.dim()))


def mean_flat(tensor: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all non-batch dims; with ``mask`` (bool ``[B, T]``) only over frames where it is True.

    With a mask the tensor must be ``[B, C, T, H, W]``; the result is
    ``sum over (T where mask, C, H, W) / (mask.sum(1) · C·H·W)`` (frames summed first, as the reference).
    """
    if mask is None:
        return tensor.mean(dim=list(range(1, tensor.dim())))
    if tensor.dim() != 5 or mask.dim() != 2 or tensor.shape[2] != mask.shape[1]:
        raise ValueError(
            f"mean_flat with a frame mask needs tensor [B, C, T, H, W] and mask [B, T]; "
            f"got {tuple(tensor.shape)} and {tuple(mask.shape)}"
        )
    b, _, t = tensor.shape[:3]
    per_frame = tensor.transpose(1, 2).reshape(b, t, -1)  # [B, T, C*H*W]
    denom = mask.sum(dim=1) * per_frame.shape[-1]
    return (per_frame * mask.unsqueeze(2)).sum(dim=1).sum(dim=1) / denom


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) ‖ N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + ((mean1 - mean2) ** 2) * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Standard normal cdf via the tanh approximation 0.5·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """Log-likelihood (nats) of ``x`` in [-1, 1] under a Gaussian discretized into bins of width 2/255.

    The outermost bins extend to ±∞ (x < -0.999 uses the lower tail, x > 0.999 the upper tail);
    probabilities are clamped at 1e-12 before the log.
    """
    if not x.shape == means.shape == log_scales.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}"
        )
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


class GaussianDiffusion:
    """Schedule arrays (float64) and the closed-form maths of a discrete Gaussian diffusion.

    Args:
        betas: 1-D array of betas, one per (possibly respaced) step.
        model_mean_type: what the model's first C output channels predict.
        model_var_type: how the reverse variance is obtained (LEARNED_RANGE: C more output channels).
        loss_type: training objective.
        schedule_dtype: precision every schedule array is computed in (``"float64"`` or ``"float32"``).
    """

    def __init__(
        self,
        *,
        betas: np.ndarray,
        model_mean_type: ModelMeanType,
        model_var_type: ModelVarType,
        loss_type: LossType,
        schedule_dtype: str = "float64",
    ) -> None:
        if schedule_dtype not in SCHEDULE_DTYPES:
            raise ValueError(
                f"schedule_dtype must be one of {sorted(SCHEDULE_DTYPES)}, got {schedule_dtype!r}"
            )
        b = torch.from_numpy(np.asarray(betas, dtype=np.float64)).to(SCHEDULE_DTYPES[schedule_dtype])
        if b.dim() != 1 or not ((b > 0).all() and (b <= 1).all()):
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.schedule_dtype = schedule_dtype
        self.num_timesteps = int(b.shape[0])

        one = torch.ones(1, dtype=b.dtype)
        alphas = 1.0 - b
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = torch.cat([one, ac[:-1]])
        # q(x_{t-1} | x_t, x_0); the log variance is clipped because β̃_0 = 0
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        fixed_large = torch.cat([post_var[1:2] if self.num_timesteps > 1 else b[:1], b[1:]])
        arrays = {
            "betas": b,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "alphas_cumprod_next": torch.cat([ac[1:], 0 * one]),
            # q(x_t | x_0)
            "sqrt_alphas_cumprod": torch.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - ac),
            "log_one_minus_alphas_cumprod": torch.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / ac - 1),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": (
                torch.log(torch.cat([post_var[1:2], post_var[1:]])) if self.num_timesteps > 1 else b[:0]
            ),
            "posterior_mean_coef1": b * torch.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),
            "log_betas": torch.log(b),
            "fixed_large_variance": fixed_large,
            "fixed_large_log_variance": torch.log(fixed_large),
        }
        for name, values in arrays.items():
            setattr(self, name, values.numpy())
        self._tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    def table(self, name: str, device: torch.device) -> torch.Tensor:
        """The schedule array ``name`` as a float32 tensor on ``device``, copied there once and cached (what
        :func:`extract` would gather from the numpy array on every call)."""
        key = (name, device)
        if key not in self._tables:
            self._tables[key] = torch.from_numpy(getattr(self, name)).to(device).float()
        return self._tables[key]

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(
        self, x_start: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log variance of q(x_t | x_0)."""
        nd = x_start.dim()
        mean = extract(self.table("sqrt_alphas_cumprod", t.device), t, nd) * x_start
        variance = extract(1.0 - self.alphas_cumprod, t, nd).expand_as(x_start)
        log_variance = extract(self.table("log_one_minus_alphas_cumprod", t.device), t, nd).expand_as(x_start)
        return mean, variance, log_variance

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε (``noise`` = ε, drawn when None)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        if noise.shape != x_start.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x_start shape {tuple(x_start.shape)}")
        nd = x_start.dim()
        return (
            extract(self.table("sqrt_alphas_cumprod", t.device), t, nd) * x_start
            + extract(self.table("sqrt_one_minus_alphas_cumprod", t.device), t, nd) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log variance of the posterior q(x_{t-1} | x_t, x_0)."""
        if x_start.shape != x_t.shape:
            raise ValueError(f"x_start {tuple(x_start.shape)} and x_t {tuple(x_t.shape)} differ in shape")
        nd = x_t.dim()
        mean = (
            extract(self.table("posterior_mean_coef1", t.device), t, nd) * x_start
            + extract(self.table("posterior_mean_coef2", t.device), t, nd) * x_t
        )
        variance = extract(self.table("posterior_variance", t.device), t, nd).expand_as(x_t)
        log_variance = extract(self.table("posterior_log_variance_clipped", t.device), t, nd).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------ reverse process
    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂."""
        nd = x_t.dim()
        return (
            extract(self.table("sqrt_recip_alphas_cumprod", t.device), t, nd) * x_t
            - extract(self.table("sqrt_recipm1_alphas_cumprod", t.device), t, nd) * eps
        )

    def p_mean_variance(
        self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False
    ) -> dict[str, torch.Tensor]:
        """Turn a raw model output at (x, t) into p(x_{t-1} | x_t): mean, variance, log variance, x̂_0.

        ``model_output`` is ``[B, 2C, ...]`` for LEARNED_RANGE (``[ε̂ or x̂_0, v]``) and ``[B, C, ...]`` otherwise.
        """
        b, c = x.shape[:2]
        nd = x.dim()
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        if self.model_var_type == ModelVarType.LEARNED_RANGE:
            if model_output.shape != (b, 2 * c, *x.shape[2:]):
                raise ValueError(
                    f"model output {tuple(model_output.shape)} must be [B, 2C, ...] = {(b, 2 * c, *x.shape[2:])} "
                    "with learn_sigma=True (pred_sigma)"
                )
            model_output, var_values = torch.split(model_output, c, dim=1)
            min_log = extract(self.table("posterior_log_variance_clipped", t.device), t, nd)
            max_log = extract(self.table("log_betas", t.device), t, nd)
            frac = (var_values + 1) / 2  # v in [-1, 1] -> [β̃_t, β_t]
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            if model_output.shape != x.shape:
                raise ValueError(
                    f"model output {tuple(model_output.shape)} must equal x {tuple(x.shape)} with learn_sigma=False"
                )
            if self.model_var_type == ModelVarType.FIXED_LARGE:
                var_name, log_name = "fixed_large_variance", "fixed_large_log_variance"
            else:
                var_name, log_name = "posterior_variance", "posterior_log_variance_clipped"
            variance = extract(self.table(var_name, t.device), t, nd).expand_as(x)
            log_variance = extract(self.table(log_name, t.device), t, nd).expand_as(x)

        if self.model_mean_type == ModelMeanType.START_X:
            pred_xstart = model_output
        else:
            pred_xstart = self.predict_xstart_from_eps(x, t, model_output)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart}

    # ------------------------------------------------------------------ losses
    def vb_terms_bpd(
        self,
        model_output: torch.Tensor,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clip_denoised: bool = False,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One variational-bound term in bits/dim: KL(q(x_{t-1}|x_t,x_0) ‖ p) for t > 0, decoder NLL at t == 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = mean_flat(kl, mask=mask) / np.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x_start, means=out["mean"], log_scales=0.5 * out["log_variance"]
        )
        decoder_nll = mean_flat(decoder_nll, mask=mask) / np.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(
        self,
        model: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        weights: np.ndarray | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample training losses at timesteps ``t`` (indices into this diffusion's schedule).

        Args:
            model: called as ``model(x_t, t, **model_kwargs)``.
            x_start: clean latents ``[B, C, T, H, W]`` (any ``[B, C, ...]`` without ``mask``).
            t: ``[B]`` integer timesteps.
            model_kwargs: extra model inputs (never modified here).
            noise: ε (drawn with ``torch.randn_like`` when None).
            mask: bool ``[B, T]``, False = conditioning frame: its x_t is ``q_sample(x_0, 0, ε)`` and it is
                left out of the mse / vb means.
            weights: optional float64 per-timestep weights multiplying the squared error (SpeeDiffusion).

        Returns:
            ``{"loss", "mse", "vb"}`` per-sample ``[B]`` tensors; ``loss = mse + vb`` for MSE losses
            (``vb`` is zero without a learned variance); for RESCALED_KL ``loss = vb · num_timesteps`` and
            ``mse`` is reported for monitoring only.
        """
        model_kwargs = {} if model_kwargs is None else model_kwargs
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise=noise)
        if mask is not None:
            if mask.dim() != 2 or x_start.dim() != 5 or mask.shape != (x_start.shape[0], x_start.shape[2]):
                raise ValueError(
                    f"mask must be bool [B, T] = {(x_start.shape[0], x_start.shape[2]) if x_start.dim() == 5 else '?'} "
                    f"for x_start [B, C, T, H, W]; got mask {tuple(mask.shape)}, x_start {tuple(x_start.shape)}"
                )
            mask = mask.bool()
            x_t0 = self.q_sample(x_start, torch.zeros_like(t), noise=noise)
            x_t = torch.where(mask[:, None, :, None, None], x_t, x_t0)

        model_output = model(x_t, t, **model_kwargs)
        b, c = x_t.shape[:2]
        learned = self.model_var_type == ModelVarType.LEARNED_RANGE
        if learned and model_output.shape != (b, 2 * c, *x_t.shape[2:]):
            raise ValueError(
                f"model output {tuple(model_output.shape)} must be [B, 2C, ...] with learn_sigma=True"
            )
        target = x_start if self.model_mean_type == ModelMeanType.START_X else noise

        if self.loss_type == LossType.RESCALED_KL:
            # pure variational bound: gradients reach mean and variance
            vb = self.vb_terms_bpd(model_output, x_start, x_t, t, clip_denoised=False, mask=mask)["output"]
            prediction = model_output[:, :c].detach()
            mse = mean_flat((target - prediction) ** 2, mask=mask)  # monitoring only
            return {"loss": vb * self.num_timesteps, "mse": mse, "vb": vb}

        if learned:
            model_output, var_values = torch.split(model_output, c, dim=1)
            # the variance learns from the bound; the bound must not move the mean prediction
            frozen_out = torch.cat([model_output.detach(), var_values], dim=1)
            vb = self.vb_terms_bpd(frozen_out, x_start, x_t, t, clip_denoised=False, mask=mask)["output"]
            if self.loss_type == LossType.RESCALED_MSE:
                vb = vb * (self.num_timesteps / 1000.0)
        else:
            vb = torch.zeros(b, device=x_t.device, dtype=torch.float32)

        if model_output.shape != target.shape:
            raise ValueError(f"model prediction {tuple(model_output.shape)} != target {tuple(target.shape)}")
        sq_err = (target - model_output) ** 2
        if weights is not None:
            sq_err = extract(weights, t, sq_err.dim()) * sq_err
        mse = mean_flat(sq_err, mask=mask)
        return {"loss": mse + vb, "mse": mse, "vb": vb}
