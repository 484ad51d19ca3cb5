"""Diffusion schedulers: ``build_scheduler(name, **kwargs)`` for the names of ``schedulers.registry.SCHEDULERS``.

Importing this package is cheap (the config package reads ``schedulers.registry``); the torch-backed scheduler
classes load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opensora_core.entry import lookup
from opensora_core.schedulers.registry import SCHEDULERS

if TYPE_CHECKING:
    from opensora_core.schedulers.dpm_solver import DPMSolverSampler
    from opensora_core.schedulers.iddpm import IDDPM
    from opensora_core.schedulers.rflow import RFlow
    from opensora_core.schedulers.speed import SpeeDiffusion

__all__ = ["IDDPM", "DPMSolverSampler", "RFlow", "SpeeDiffusion", "build_scheduler"]

_LAZY = {"IDDPM": "iddpm", "DPMSolverSampler": "dpm_solver", "SpeeDiffusion": "speed", "RFlow": "rflow"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_scheduler(name: str, **kwargs: Any) -> IDDPM | DPMSolverSampler | RFlow:
    """Build a scheduler by its Open-Sora registry name.

    - ``"iddpm"``: :class:`IDDPM` (``num_sampling_steps=None, timestep_respacing=None, cfg_scale=4.0,
      cfg_channel=None, noise_schedule="linear", diffusion_steps=1000, learn_sigma=True, ...``); training
      uses ``timestep_respacing=""`` (all 1000 steps).
    - ``"iddpm-speed"``: :class:`SpeeDiffusion` (same arguments, training only).
    - ``"dpm-solver"``: :class:`DPMSolverSampler` (``num_sampling_steps=20, cfg_scale=4.0``).
    - ``"rflow"``: :class:`RFlow` (``num_sampling_steps=10, cfg_scale=4.0, use_timestep_transform=False,
      sample_method="uniform", ...``); Open-Sora 1.2 samples with 30 steps, cfg 7.0 and the transform.

    The accepted arguments are the fields of the name's config class (``SCHEDULERS[name].config``).

    Raises:
        ValueError: unknown name or an argument the scheduler does not take.
    """
    entry = lookup(SCHEDULERS, name, "scheduler")
    accepted = [f for f in entry.config.model_fields if f != "type"]  # type: ignore[union-attr]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"scheduler {name!r} does not take {unknown}; valid arguments: {accepted}")
    return entry.load_builder()(**kwargs)
