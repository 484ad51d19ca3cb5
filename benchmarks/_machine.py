"""Shared by the benchmark scripts: the CPU model name for the ``machine`` field of their JSON lines, the
side-by-side ``emit`` line of the data benchmarks, and random values for zero-initialised weights."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``; ``platform`` processor/architecture where that is missing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, usable cores, OS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cores} cores, {platform.system()}"


def emit(name: str, ours: float, baseline: float, unit: str, **extra: object) -> None:
    """Print one JSON line: ours vs the baseline, their ratio, the unit and the machine."""
    record = {
        "name": name,
        "ours": round(ours, 3),
        "baseline": round(baseline, 3),
        "ratio": round(ours / baseline, 2) if baseline else None,
        "unit": unit,
        "machine": machine(),
        **extra,
    }
    print(json.dumps(record), flush=True)


def randomise_zero_params(model: object, seed: int = 1) -> None:
    """Give every all-zero parameter seeded N(0, 0.02²) values (in place).

    Zero-initialised layers (adaLN, final layer, cross-attention projections) would make a fresh model's output
    trivial, so timing and parity runs fill them; the same seed gives the same values in every script."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():  # type: ignore[attr-defined]
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=g) * 0.02)
