"""SpeeDiffusion (Open-Sora v1.1 ``"iddpm-speed"``): IDDPM training with importance-sampled timesteps and P2 weights.

Timestep distribution (as Open-Sora v1.1 / SpeeD):

- ``g = gradient(√(1 − ᾱ))`` over the (respaced) steps (``np.gradient``: central differences, one-sided at the
  ends). The "meaningful steps" boundary is ``τ = argmax(g < 5e-5) + 1`` (first step where the noise level has
  almost stopped growing, plus one).
- Sampling weights ``p_t ∝ tanh(1e6·(g_t − 1e-4)) + 1.5``, i.e. ≈2.5 where ``√(1−ᾱ)`` still grows faster than
  1e-4 per step (early, informative steps) and ≈0.5 on the plateau, normalised to sum 1.
- For a batch of n: draw ``n // 2 + 1`` steps ``t ~ p`` (with replacement) and pair each with its dual
  ``τ − t`` (if ``t < τ``) or ``t − τ`` (otherwise); the batch's steps are ``cat(t, dual)[:n]``. The ``t``
  passed by the caller is ignored.
- The squared ε error is weighted per sample by the P2 weight ``1 / (k + SNR_t)^γ`` with ``k = γ = 1``,
  ``SNR_t = ᾱ_t / (1 − ᾱ_t)`` (so the weight equals ``1 − ᾱ_t``); the vb term is not weighted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from opensora_core.schedulers._diffusion import ModelFn
from opensora_core.schedulers.iddpm import IDDPM


class SpeeDiffusion(IDDPM):
    """IDDPM for training only, with SpeeD timestep sampling and P2 loss weights (see the module docstring).

    Accepts the same arguments as :class:`~opensora_core.schedulers.iddpm.IDDPM`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grad = np.gradient(self.sqrt_one_minus_alphas_cumprod)
        self.meaningful_steps = int(np.argmax(grad < 5e-5)) + 1
        self.p2_gamma = 1.0
        self.p2_k = 1.0
        self.snr = 1.0 / (1.0 - self.alphas_cumprod) - 1.0
        weights = torch.tanh(1e6 * (torch.from_numpy(grad) - 1e-4)) + 1.5  # float64
        self.p = weights / weights.abs().sum()
        self.weights = 1.0 / (self.p2_k + self.snr) ** self.p2_gamma  # float64 [num_timesteps]

    def sample_timesteps(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` timesteps: ``n // 2 + 1`` from ``p`` plus their duals about ``meaningful_steps``."""
        t = torch.multinomial(self.p, n // 2 + 1, replacement=True, generator=generator)
        tau = self.meaningful_steps
        dual = torch.where(t < tau, tau - t, t - tau)
        return torch.cat([t, dual], dim=0)[:n].to(device)

    def training_losses(
        self,
        model: ModelFn,
        x_start: torch.Tensor,
        t: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """IDDPM losses at SpeeD-sampled timesteps with P2-weighted mse (``t`` is ignored; see module docstring).

        The drawn timesteps are returned as ``terms["t"]`` next to ``loss``, ``mse`` and ``vb``.
        """
        t = self.sample_timesteps(x_start.shape[0], x_start.device, generator)
        terms = super().training_losses(
            model, x_start, t, model_kwargs=model_kwargs, noise=noise, mask=mask, weights=self.weights
        )
        terms["t"] = t
        return terms

    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """SpeeDiffusion is training-only; sampling raises."""
        raise RuntimeError(
            "the 'iddpm-speed' scheduler (SpeeDiffusion) is training-only; sample with scheduler type 'iddpm' "
            "or 'dpm-solver' (the trained model is an ordinary IDDPM ε/σ model)"
        )
