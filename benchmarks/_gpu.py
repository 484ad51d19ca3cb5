"""Shared by gpu_step.py and gpu_sample.py: device, the SD VAE built in code, timing, memory, JSON records.

Every measurement is one JSON object printed on stdout and appended to ``--out`` (JSON lines). A
:class:`Budget` stops a script before the GPU check's time runs out: measurements that do not fit are written
as records with ``"skipped"`` set, so the output says what was not measured.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

# stabilityai/sd-vae-ft-ema's config.json (the VAE of Open-Sora 1.0/1.1), built with random weights: nothing
# downloads on the GPU machine and the timing does not depend on the weights.
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
)
# --tiny: the same layout (4 blocks, 8x downsampling, mid-block attention) at a few channels
TINY_VAE = {**SD_VAE, "block_out_channels": (8, 8, 16, 16), "norm_num_groups": 8, "sample_size": 32}


def pick_device(tiny: bool) -> torch.device:
    """CUDA when available and not ``tiny``; else the CPU (full sizes on a CPU are refused: hours per step)."""
    if torch.cuda.is_available() and not tiny:
        return torch.device("cuda")
    if not tiny:
        raise SystemExit("no CUDA device: the full sizes need a GPU (use --tiny for the CPU smoke run)")
    return torch.device("cpu")


def build_vae(
    tiny: bool, device: torch.device, dtype: torch.dtype, micro_batch_size: int | None = 32
) -> nn.Module:
    """``VideoAutoencoderKL`` around a diffusers ``AutoencoderKL`` of the SD-VAE layout (random weights),
    encoding/decoding ``micro_batch_size`` frames at a time (a 64-video batch is 1024 frames: all at once, the
    VAE's activations alone would not fit)."""
    from diffusers import AutoencoderKL

    from opensora_core.models.vae import VideoAutoencoderKL

    torch.manual_seed(0)
    module = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE))
    return VideoAutoencoderKL(module, micro_batch_size).to(device=device, dtype=dtype).eval()


def randomize_zero_params(model: nn.Module, std: float = 0.02) -> None:
    """Give zero-initialised weights (adaLN-Zero, final layer) random values, so outputs are not trivially 0."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.normal_(0.0, std)


def compile_backend(device: torch.device) -> str:
    """``inductor`` on CUDA; ``eager`` on the CPU smoke runs (dynamo captures the graphs, so graph breaks and
    guards are exercised, without minutes of C++ code generation on a shared CPU)."""
    return "inductor" if device.type == "cuda" else "eager"


def compile_blocks(model: nn.Module, backend: str) -> int:
    """``torch.compile`` each transformer block in place (regional compilation: the blocks share one graph,
    so 28 blocks compile about as fast as one); returns the number of blocks compiled."""
    from opensora_core.models.compile import compile_blocks as compile_model_blocks

    return compile_model_blocks(model, backend=backend)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator); the CPU reports the process peak instead."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: peak allocated bytes since :func:`reset_peak_memory`; CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def total_memory_gib(device: torch.device) -> float | None:
    """Memory of the CUDA device (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of the CUDA allocator (or the CPU's allocator)."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def machine(device: torch.device) -> str:
    """Device name, torch version (and CUDA version) for the ``machine`` field."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name}, torch {torch.__version__}, cuda {torch.version.cuda}"
    from benchmarks._machine import cpu_model

    return (
        f"{cpu_model()}, {os.cpu_count()} cpu, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )


class Budget:
    """Seconds left of a time budget, started at construction."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def left(self) -> float:
        """Seconds still available."""
        return self.seconds - (time.perf_counter() - self.start)


class Recorder:
    """Prints each record as one JSON line and appends it to ``out`` (when given); keeps them in ``records``."""

    def __init__(self, out: str | None, common: dict[str, Any]) -> None:
        self.out = Path(out) if out else None
        self.common = common
        self.records: list[dict[str, Any]] = []
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **fields: Any) -> dict[str, Any]:
        """Emit ``{**common, **fields}`` (floats rounded to 5 significant digits)."""
        rec = {**self.common, **{k: _round(v) for k, v in fields.items()}}
        line = json.dumps(rec)
        print(line, flush=True)
        if self.out:
            with open(self.out, "a") as f:
                f.write(line + "\n")
        self.records.append(rec)
        return rec


def _round(value: Any) -> Any:
    return float(f"{value:.5g}") if isinstance(value, float) else value
