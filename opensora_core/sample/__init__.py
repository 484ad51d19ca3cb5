"""Local sampling: ``python -m opensora_core.sample CONFIG [flags]`` and the Python API used by evaluation.

    from opensora_core.sample import sample, load_sampling_models
    paths = sample(cfg, prompts=["a red ball"], progress=False)       # -> list[Path]
    model, vae, text_encoder, scheduler = load_sampling_models(cfg)

``sample`` / ``load_sampling_models`` (torch) load on first use, so importing this package stays cheap. See
docs/sampling.md for flags, long videos and mask strategies.
"""

from __future__ import annotations

from typing import Any

from opensora_core.sample.long import SampleInputError
from opensora_core.sample.prompts import RunPlan, plan_run

__all__ = ["RunPlan", "SampleInputError", "SamplingModels", "load_sampling_models", "plan_run", "sample"]

_PIPELINE_NAMES = ("SamplingModels", "load_sampling_models", "sample")


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from opensora_core.sample import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
