"""Diffusion schedulers: ``build_scheduler(name, **kwargs)`` for "iddpm", "iddpm-speed" and "dpm-solver"."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from opensora_core.schedulers.dpm_solver import DPMSolverSampler
from opensora_core.schedulers.iddpm import IDDPM
from opensora_core.schedulers.speed import SpeeDiffusion

__all__ = ["IDDPM", "DPMSolverSampler", "SpeeDiffusion", "build_scheduler"]


def build_scheduler(name: str, **kwargs: Any) -> IDDPM | DPMSolverSampler:
    """Build a scheduler by its Open-Sora registry name.

    - ``"iddpm"``: :class:`IDDPM` (``num_sampling_steps=None, timestep_respacing=None, cfg_scale=4.0,
      cfg_channel=None, noise_schedule="linear", diffusion_steps=1000, learn_sigma=True, ...``); training
      uses ``timestep_respacing=""`` (all 1000 steps).
    - ``"iddpm-speed"``: :class:`SpeeDiffusion` (same arguments, training only).
    - ``"dpm-solver"``: :class:`DPMSolverSampler` (``num_sampling_steps=20, cfg_scale=4.0``).

    Raises:
        ValueError: unknown name or an argument the scheduler does not take.
    """
    factories: dict[str, Callable[..., Any]] = {
        "iddpm": IDDPM,
        "iddpm-speed": SpeeDiffusion,
        "dpm-solver": DPMSolverSampler,
    }
    if name not in factories:
        raise ValueError(f"unknown scheduler type {name!r}; valid types: {sorted(factories)}")
    factory = factories[name]
    signature_owner = IDDPM if factory is SpeeDiffusion else factory
    accepted = [p for p in inspect.signature(signature_owner.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"scheduler {name!r} does not take {unknown}; valid arguments: {accepted}")
    return factory(**kwargs)
