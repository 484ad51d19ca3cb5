"""Timestep respacing: run a diffusion on a subset of the original timesteps (improved-diffusion rules)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from opensora_core.schedulers._diffusion import (
    GaussianDiffusion,
    LossType,
    ModelFn,
    ModelMeanType,
    ModelVarType,
)


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """Pick the original timesteps kept by a respaced diffusion.

    ``section_counts`` is a comma separated string or a list of counts: the ``num_timesteps`` steps are cut
    into that many equal sections (the first ``num_timesteps % len`` sections one step longer) and each
    section of ``size`` steps keeps ``count`` steps at ``round(k · (size-1)/(count-1))`` (the fractional
    index is accumulated by repeated addition and rounded with Python's ``round``, exactly as the reference).
    ``"ddimN"`` keeps ``range(0, num_timesteps, stride)`` for the stride that yields exactly N steps.

    >>> sorted(space_timesteps(1000, "5"))
    [0, 250, 500, 749, 999]
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(
                f"timestep_respacing={section_counts!r}: no integer stride gives {desired} steps"
            )
        try:
            counts = [int(x) for x in section_counts.split(",")]
        except ValueError as err:
            raise ValueError(
                f"timestep_respacing={section_counts!r} must be comma separated integers (e.g. '100') or 'ddimN'"
            ) from err
    else:
        counts = [int(x) for x in section_counts]
    if not counts:
        raise ValueError("timestep_respacing must name at least one section")
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: list[int] = []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 1 or size < count:
            raise ValueError(f"cannot keep {count} steps from a section of {size} steps (timestep_respacing)")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return set(kept)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion over the kept timesteps of a base schedule.

    Respaced betas are ``β_i = 1 − ᾱ_{k_i} / ᾱ_{k_{i-1}}`` over the kept original steps ``k_i``. The model is
    always called with the *original* timestep ``timestep_map[i]`` (int64, no rescaling). The base schedule is
    float64; ``schedule_dtype`` is the precision of the respaced one (Open-Sora >= 1.1 casts the respaced
    betas to float32 and derives the rest from them in float32).
    """

    def __init__(
        self,
        use_timesteps: set[int],
        *,
        betas: np.ndarray,
        model_mean_type: ModelMeanType,
        model_var_type: ModelVarType,
        loss_type: LossType,
        schedule_dtype: str = "float64",
    ) -> None:
        base = GaussianDiffusion(
            betas=betas, model_mean_type=model_mean_type, model_var_type=model_var_type, loss_type=loss_type
        )
        self.use_timesteps = set(use_timesteps)
        self.original_num_steps = base.num_timesteps
        self.timestep_map: list[int] = []
        new_betas = []
        last_alpha_cumprod = 1.0
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
                last_alpha_cumprod = alpha_cumprod
                self.timestep_map.append(i)
        super().__init__(
            betas=np.array(new_betas),
            model_mean_type=model_mean_type,
            model_var_type=model_var_type,
            loss_type=loss_type,
            schedule_dtype=schedule_dtype,
        )

    def map_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced indices -> original timesteps (same dtype and device as ``t``)."""
        key = ("timestep_map", t.device)  # cached per device with the schedule tables
        if key not in self._tables:
            self._tables[key] = torch.tensor(self.timestep_map, device=t.device)
        return self._tables[key][t].to(t.dtype)

    def wrap_model(self, model: ModelFn) -> ModelFn:
        """Return ``model`` taking respaced indices: calls ``model(x, timestep_map[t], **kwargs)``."""

        def wrapped(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
            return model(x, self.map_timesteps(t), **kwargs)

        return wrapped

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
        """As :meth:`GaussianDiffusion.training_losses`, with ``t`` respaced indices; the model sees originals."""
        return super().training_losses(
            self.wrap_model(model),
            x_start,
            t,
            model_kwargs=model_kwargs,
            noise=noise,
            mask=mask,
            weights=weights,
        )
