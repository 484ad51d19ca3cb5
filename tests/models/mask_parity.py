"""Open-Sora 1.1.0 frame-mask parity numbers (``parity_data/stdit2_mask.*``) and our STDiT2 loaded with the
same weights. The numbers come from the reference code itself (``parity_data/generate_stdit2_mask.py``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from opensora_core.models.attention import set_attn_backend
from opensora_core.models.stdit2 import STDiT2

DATA = Path(__file__).resolve().parent / "parity_data" / "stdit2_mask"
VIDEO_INFO = ("height", "width", "num_frames", "ar", "fps")
TOL = 1e-5  # fp32 on CPU


@functools.cache
def tensors() -> dict[str, torch.Tensor]:
    """Every tensor of the parity file (read-only: callers clone what they modify)."""
    return load_file(str(DATA.with_suffix(".safetensors")))


@functools.cache
def meta() -> dict[str, Any]:
    """The JSON description of the parity file (config, cases, seeds)."""
    return json.loads(DATA.with_suffix(".json").read_text())


def video_info(prefix: str) -> dict[str, torch.Tensor]:
    """The video-info model inputs of a case (``fwd``, ``loss``, ``sample_float32``, ...)."""
    return {k: tensors()[f"{prefix}.{k}"] for k in VIDEO_INFO}


def build_model(backend: str = "math") -> STDiT2:
    """Our STDiT2 with the reference's tiny config and weights, in eval mode."""
    cfg = dict(meta()["config"], patch_size=tuple(meta()["config"]["patch_size"]))
    model = STDiT2(**cfg).eval()
    state = {k.removeprefix("model."): v for k, v in tensors().items() if k.startswith("model.")}
    model.load_state_dict(state, strict=True)
    set_attn_backend(model, backend)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| (shapes must agree)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.double() - b.double()).abs().max().item()
