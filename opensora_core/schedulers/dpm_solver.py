"""DPM-Solver++ sampler (Open-Sora ``"dpm-solver"``): multistep, order 2, data prediction, discrete VP schedule.

The numbers follow the DPM-Solver reference setup used by Open-Sora:

- noise schedule: the discrete VP schedule of the same 1000 linear betas; ``log α_n = ½·cumsum(log(1 − β))``
  (float64, then float32) at the continuous times ``t_n = (n+1)/N``; ``log α(t)`` is the piecewise linear
  interpolation (linear extrapolation outside the keypoints). Steps where the half log-SNR falls below -5.1 at
  the end of the schedule are trimmed (none for the linear schedule);
- ``time_uniform`` steps ``linspace(1, 1/N, steps + 1)`` (float32);
- the model is called with ``t_input = (t − 1/N)·1000`` (a float: 999.0 at the first step);
- classifier-free guidance batches ``cat([x, x])`` with ``y = cat([y_null, y])`` (null first) and uses
  ``uncond + s·(cond − uncond)`` on all noise channels (the first half of the output channels);
- DPM-Solver++ uses the data prediction ``x0 = (x − σ_t·ε)/α_t``; multistep order 2 starts with one first-order
  step; ``lower_order_final`` lowers the last steps' order only when ``steps < 10``; the model is not evaluated
  after the final step, so a run costs exactly ``steps`` model evaluations. No noise is drawn: the result is a
  deterministic function of ``z``.
"""

from __future__ import annotations

from typing import Any

import torch

from opensora_core.schedulers._cfg import guided_kwargs, resolve_null_caption
from opensora_core.schedulers._diffusion import get_named_beta_schedule
from opensora_core.utils.text_mask import prepare_text_mask


def interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise linear ``f(x)`` through keypoints ``(xp, yp)`` (1-D, ``xp`` increasing); linear beyond the ends.

    A point equal to a keypoint ``xp[k]`` (k > 0) is evaluated on the segment ``[xp[k-1], xp[k]]``.
    """
    k = xp.shape[0]
    idx = torch.searchsorted(xp, x.contiguous())  # first keypoint >= x
    seg = (idx - 1).clamp(0, k - 2)
    x0, x1 = xp[seg], xp[seg + 1]
    y0, y1 = yp[seg], yp[seg + 1]
    return y0 + (x - x0) * (y1 - y0) / (x1 - x0)


class DiscreteVPSchedule:
    """The discrete-time VP noise schedule viewed in continuous time ``t ∈ [1/N, 1]``."""

    def __init__(self, betas: torch.Tensor, dtype: torch.dtype = torch.float32, clipped_lambda: float = -5.1):
        log_alphas = 0.5 * torch.log(1 - betas).cumsum(dim=0)
        log_sigmas = 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alphas))
        lambdas = log_alphas - log_sigmas
        trim = int(torch.searchsorted(torch.flip(lambdas, [0]), clipped_lambda))
        if trim > 0:
            log_alphas = log_alphas[:-trim]
        self.log_alpha_array = log_alphas.to(dtype)
        self.total_n = int(self.log_alpha_array.shape[0])
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].to(dtype)
        self.T = 1.0
        self._keypoints: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log α_t (``t`` of shape [n]) -> [n]."""
        keypoints = self._keypoints.get(t.device)
        if keypoints is None:  # copied to a device once, not on every call of every solver step
            keypoints = (self.t_array.to(t.device), self.log_alpha_array.to(t.device))
            self._keypoints[t.device] = keypoints
        return interpolate(t.reshape(-1), *keypoints)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """α_t."""
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t = √(1 − α_t²)."""
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR λ_t = log α_t − log σ_t."""
        log_alpha = self.log_alpha(t)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """Continuous time -> the discrete model's float timestep ``(t − 1/N)·1000``."""
        return (t - 1.0 / self.total_n) * 1000.0


class DPMSolverSampler:
    """Multistep DPM-Solver++ (order 2) with classifier-free guidance.

    Args:
        num_sampling_steps: number of solver steps = number of model evaluations.
        cfg_scale: guidance scale (1.0 runs the conditional model alone on a B batch, as the reference).
        noise_schedule: beta schedule name of the trained model.
        diffusion_steps: number of training timesteps.
        order: multistep order (1 = DDIM-like, 2 = Open-Sora's choice).
        lower_order_final: use lower orders for the final steps (effective only when steps < 10).
    """

    def __init__(
        self,
        num_sampling_steps: int = 20,
        cfg_scale: float = 4.0,
        noise_schedule: str = "linear",
        diffusion_steps: int = 1000,
        order: int = 2,
        lower_order_final: bool = True,
    ) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2 for the multistep DPM-Solver++, got {order}")
        if num_sampling_steps is None or num_sampling_steps < order:
            raise ValueError(f"num_sampling_steps must be >= order ({order}), got {num_sampling_steps}")
        self.num_sampling_steps = int(num_sampling_steps)
        self.cfg_scale = float(cfg_scale)
        self.order = order
        self.lower_order_final = lower_order_final
        betas = torch.tensor(get_named_beta_schedule(noise_schedule, diffusion_steps))  # float64
        self.schedule = DiscreteVPSchedule(betas)
        self.last_num_model_evals = 0

    def timesteps(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``steps + 1`` solver times from T = 1 down to 1/N (float32)."""
        t_0 = 1.0 / self.schedule.total_n
        return torch.linspace(self.schedule.T, t_0, self.num_sampling_steps + 1).to(device)

    # ------------------------------------------------------------------ solver updates
    def _coefficients(self) -> dict[str, list[float]]:
        """Every per-step number of the solver, from the schedule once per video (float32 maths, as a scalar
        schedule lookup per step would give; vectorised over the ``steps + 1`` times), as host floats.

        Per time k: ``sigma`` / ``alpha`` (the data prediction at k). Per step k -> k + 1 (index k):
        ``ratio`` = σ_{k+1}/σ_k, ``a_phi`` = α_{k+1}·expm1(−h_k) with h_k = λ_{k+1} − λ_k, ``half_a_phi`` =
        0.5·a_phi, and for the second order ``inv_r0`` = 1 / (h_{k−1} / h_k) (index 0 unused).
        """
        ns = self.schedule
        times = self.timesteps()
        lam, sigma, alpha = ns.lambda_(times), ns.sigma(times), ns.alpha(times)
        h = lam[1:] - lam[:-1]  # [steps]
        a_phi = alpha[1:] * torch.expm1(-h)
        inv_r0 = torch.cat([torch.ones(1), 1.0 / (h[:-1] / h[1:])])
        return {
            "sigma": sigma.tolist(),
            "alpha": alpha.tolist(),
            "ratio": (sigma[1:] / sigma[:-1]).tolist(),
            "a_phi": a_phi.tolist(),
            "half_a_phi": (0.5 * a_phi).tolist(),
            "inv_r0": inv_r0.tolist(),
            "model_time": ns.model_time(times).tolist(),
        }

    @staticmethod
    def _first_order(x: torch.Tensor, ratio: float, a_phi: float, x0_s: torch.Tensor) -> torch.Tensor:
        """DPM-Solver++-1 (DDIM) from time s to t given the data prediction at s:
        ``(σ_t/σ_s)·x − α_t·expm1(−h)·x0_s``."""
        return (ratio * x).sub_(a_phi * x0_s)

    @staticmethod
    def _second_order(
        x: torch.Tensor,
        x0_prev: list[torch.Tensor],
        ratio: float,
        a_phi: float,
        half_a_phi: float,
        inv_r0: float,
    ) -> torch.Tensor:
        """Multistep DPM-Solver++(2M) using the last two data predictions m1, m0:
        ``(σ_t/σ_0)·x − α_t·φ₁·m0 − ½·α_t·φ₁·(m0 − m1)/r0``."""
        m1, m0 = x0_prev[-2], x0_prev[-1]
        d1 = (m0 - m1).mul_(inv_r0)
        return (ratio * x).sub_(a_phi * m0).sub_(d1.mul_(half_a_phi))

    # ------------------------------------------------------------------ sampling
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
        **video_info: Any,
    ) -> torch.Tensor:
        """Solve the probability-flow ODE from ``z`` (at t = 1) to t = 1/N.

        Args:
            model: ``model(x, t, y=..., mask=..., **video_info)`` returning ``[·, C_out, ...]``; its first
                ``C`` channels (``C = z.shape[1]``) are the noise prediction.
            z: initial noise ``[B, C, T, H, W]``.
            y: caption embeddings ``[B, 1, L, D]``; ``mask`` the text mask ``[B, L]`` (reused for the null).
            y_null: null caption embeddings like ``y``; default ``model.null_caption(B)``.
            frame_mask: not supported (the reference has no masked DPM-Solver); must be None.
            progress: show a tqdm bar.
            **video_info: further model inputs; tensors whose first dim is B are doubled with the batch.

        Returns:
            latents ``[B, C, T, H, W]``; ``self.last_num_model_evals == num_sampling_steps``.

        Everything but the model forward is set up once: the model inputs (``guided_kwargs``), the per-step
        coefficients (host floats) and the model timesteps; a step is the forward plus a few elementwise ops.
        """
        if frame_mask is not None:
            raise ValueError(
                "frame_mask is not supported by dpm-solver; use the 'iddpm' scheduler for masked sampling"
            )
        if z.dim() < 2:
            raise ValueError(f"z must be latents [B, C, ...], got shape {tuple(z.shape)}")
        batch, channels = z.shape[:2]
        if y.shape[0] != batch:
            raise ValueError(f"y batch {y.shape[0]} != z batch {batch}")
        guided = self.cfg_scale != 1.0
        if guided:
            y_null = resolve_null_caption(model, y, y_null)
            model_kwargs = guided_kwargs(y_null, y, mask, video_info, batch)  # null FIRST here
        else:
            text_mask = None if mask is None else prepare_text_mask(mask, batch, mask.shape[-1])
            model_kwargs = {**video_info, "y": y, **({"mask": text_mask} if mask is not None else {})}
        coef = self._coefficients()
        rows = 2 * batch if guided else batch
        model_times = torch.tensor(coef["model_time"], device=z.device)[:, None].expand(-1, rows).contiguous()
        self.last_num_model_evals = 0

        def data_prediction(x: torch.Tensor, k: int) -> torch.Tensor:
            """x0 = (x − σ_k·ε)/α_k at time k, ε guided."""
            if guided:
                out = model(torch.cat([x, x]), model_times[k], **model_kwargs)
                eps_uncond, eps_cond = out[:, :channels].chunk(2)
                eps = (eps_cond - eps_uncond).mul_(self.cfg_scale).add_(eps_uncond)
            else:
                eps = model(x, model_times[k], **model_kwargs)[:, :channels]
            self.last_num_model_evals += 1
            return (x - coef["sigma"][k] * eps).div_(coef["alpha"][k])

        steps = self.num_sampling_steps
        x = z
        x0_prev = [data_prediction(x, 0)]
        # warm-up: lower-order steps until `order` model values exist
        for step in range(1, self.order):
            x = self._first_order(x, coef["ratio"][step - 1], coef["a_phi"][step - 1], x0_prev[-1])
            x0_prev.append(data_prediction(x, step))
        indices = range(self.order, steps + 1)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices)
        for step in indices:
            k = step - 1  # the step from time k to time step
            step_order = (
                min(self.order, steps + 1 - step) if self.lower_order_final and steps < 10 else self.order
            )
            if step_order == 1:
                x = self._first_order(x, coef["ratio"][k], coef["a_phi"][k], x0_prev[-1])
            else:
                x = self._second_order(
                    x, x0_prev, coef["ratio"][k], coef["a_phi"][k], coef["half_a_phi"][k], coef["inv_r0"][k]
                )
            if step < steps:  # no model evaluation after the final step
                x0_prev = [*x0_prev[1:], data_prediction(x, step)]
        return x
