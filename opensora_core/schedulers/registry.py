"""Diffusion schedulers: each scheduler's typed config, builder and capabilities, declared once.

`SCHEDULERS` maps a `scheduler = dict(type=NAME, ...)` name to its config class, its class (imported on first
build) and its :class:`SchedulerCaps`. `opensora_core.config` builds `RunConfig.scheduler` from this table;
`build_scheduler`, the trainer and the sampler read it. Imports pydantic only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from opensora_core.entry import Entry, lookup
from opensora_core.fields import Bool, NonNegFloat, PosFloat, PosInt, Section

# ------------------------------------------------------------------------------------------- configs

_RESPACING_RE = re.compile(r"^$|^ddim[1-9][0-9]*$|^[1-9][0-9]*(,[1-9][0-9]*)*$")


class IDDPMConfig(Section):
    """IDDPM (1000 linear-beta steps, learned range variance); `iddpm-speed` = SpeeDiffusion (training)."""

    type: Literal["iddpm", "iddpm-speed"]
    num_sampling_steps: PosInt | None = Field(
        None, description="Respaced sampling steps (overrides timestep_respacing); e.g. 100."
    )
    timestep_respacing: str | None = Field(
        None, description='"" or None = all 1000 steps (training); "100" or "10,20" sections; "ddimN".'
    )
    cfg_scale: NonNegFloat = Field(4.0, description="Classifier-free guidance scale (STDiT configs: 7.0).")
    cfg_channel: PosInt | None = Field(
        None, description="Guide only the first N output channels; None = C_out/2. Configs use 3."
    )
    noise_schedule: Literal["linear", "squaredcos_cap_v2"] | None = Field(
        None, description='Beta schedule ("linear").'
    )
    diffusion_steps: PosInt | None = Field(None, description="Training diffusion steps (1000).")
    learn_sigma: Bool | None = Field(None, description="The model predicts the variance range (True).")
    sigma_small: Bool | None = Field(None, description="Fixed small variance when not learned (False).")
    predict_xstart: Bool | None = Field(None, description="The model predicts x0 instead of noise (False).")
    use_kl: Bool | None = Field(None, description="Train with the rescaled KL loss (False).")
    rescale_learned_sigmas: Bool | None = Field(None, description="Rescaled MSE loss (False).")
    preserve_reference: Bool | None = Field(
        None, description="Ours: keep mask-0 reference frames exactly in masked sampling (reference: False)."
    )
    schedule_dtype: Literal["float32", "float64"] | None = Field(
        None,
        description='Dtype the respaced schedule is computed in: "float32" as Open-Sora 1.1+ (default), '
        '"float64" as Open-Sora 1.0.',
    )

    @model_validator(mode="after")
    def _check_steps(self) -> IDDPMConfig:
        total = self.diffusion_steps or 1000
        if self.num_sampling_steps is not None and self.num_sampling_steps > total:
            raise ValueError(
                f"num_sampling_steps ({self.num_sampling_steps}) must be at most the {total} diffusion steps"
            )
        return self

    @field_validator("timestep_respacing")
    @classmethod
    def _check_respacing(cls, v: str | None) -> str | None:
        if v is not None and not _RESPACING_RE.match(v.replace(" ", "")):
            raise ValueError(
                f'timestep_respacing must be "", a step count like "100", comma-separated counts like '
                f'"10,20", or "ddimN"; got {v!r}'
            )
        return v


class DPMSolverConfig(Section):
    """DPM-Solver++ (multistep, order 2) on the same discrete VP schedule; sampling only, no frame mask."""

    type: Literal["dpm-solver"]
    num_sampling_steps: PosInt = Field(20, description="Solver steps.")
    cfg_scale: NonNegFloat = Field(4.0, description="Classifier-free guidance scale.")
    noise_schedule: Literal["linear", "squaredcos_cap_v2"] | None = Field(
        None, description='Beta schedule ("linear").'
    )
    diffusion_steps: PosInt | None = Field(None, description="Diffusion steps of the schedule (1000).")
    order: Literal[1, 2] | None = Field(None, description="Multistep order (2).")
    lower_order_final: Bool | None = Field(None, description="Lower the order of the last steps (True).")


class RFlowConfig(Section):
    """Rectified flow of Open-Sora 1.2 (velocity loss, Euler sampler with CFG, timestep transform)."""

    type: Literal["rflow"]
    num_sampling_steps: PosInt = Field(10, description="Euler sampling steps (1.2 inference: 30).")
    num_timesteps: PosInt = Field(1000, description="Length of the time axis.")
    cfg_scale: NonNegFloat = Field(4.0, description="Classifier-free guidance scale (1.2 inference: 7.0).")
    use_discrete_timesteps: Bool = Field(False, description="Integer timesteps (training: uniform only).")
    use_timestep_transform: Bool = Field(
        False,
        description="Shift timesteps towards noise for larger resolutions and longer videos (1.2: True).",
    )
    sample_method: Literal["uniform", "logit-normal"] = Field(
        "uniform", description="Training timestep distribution (1.2 training: logit-normal)."
    )
    loc: float = Field(0.0, description="Mean of the normal behind logit-normal sampling.")
    scale: PosFloat = Field(1.0, description="Std of the normal behind logit-normal sampling.")
    transform_scale: PosFloat = Field(
        1.0, description="Extra factor of the timestep-transform ratio (training only)."
    )

    @model_validator(mode="after")
    def _check_discrete(self) -> RFlowConfig:
        if self.use_discrete_timesteps and self.sample_method != "uniform":
            raise ValueError("use_discrete_timesteps=True needs sample_method='uniform'")
        return self


# ------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class SchedulerCaps:
    """training: has `training_losses`; sampling: has `sample`; frame_mask: both take a per-frame mask
    (mask_ratios, reference conditioning); loss_generator: `training_losses` draws from a `generator=`;
    draws_timesteps: the trainer passes no `t` and no noise, `training_losses` draws both (rflow: its t
    distribution and resolution-dependent transform, in the reference's order t then noise)."""

    training: bool
    sampling: bool
    frame_mask: bool
    loss_generator: bool = False
    draws_timesteps: bool = False


SCHEDULERS: dict[str, Entry[SchedulerCaps]] = {
    "iddpm": Entry(
        IDDPMConfig,
        "opensora_core.schedulers.iddpm:IDDPM",
        SchedulerCaps(training=True, sampling=True, frame_mask=True),
    ),
    "iddpm-speed": Entry(
        IDDPMConfig,
        "opensora_core.schedulers.speed:SpeeDiffusion",
        SchedulerCaps(training=True, sampling=False, frame_mask=True, loss_generator=True),
    ),
    "dpm-solver": Entry(
        DPMSolverConfig,
        "opensora_core.schedulers.dpm_solver:DPMSolverSampler",
        SchedulerCaps(training=False, sampling=True, frame_mask=False),
    ),
    "rflow": Entry(
        RFlowConfig,
        "opensora_core.schedulers.rflow:RFlow",
        SchedulerCaps(
            training=True, sampling=True, frame_mask=True, loss_generator=True, draws_timesteps=True
        ),
    ),
}


def scheduler_caps(name: str) -> SchedulerCaps:
    """Capabilities of scheduler type `name` (ValueError listing the scheduler types when unknown)."""
    return lookup(SCHEDULERS, name, "scheduler").caps
