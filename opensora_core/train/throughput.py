"""Throughput metrics: samples/s, tokens/s, step time and model FLOPs utilisation (MFU).

Definitions (global over all ranks, averaged over the steps since the last log line):

- ``step_time_s``: wall time per training step, data loading included.
- ``samples_per_s``: samples of all data-parallel ranks per second (ranks of one sequence-parallel group share
  their samples, so they count once).
- ``tokens_per_s``: ``samples_per_s`` x tokens per sample, where a token is one latent patch:
  ``ceil(T/pt) * ceil(H/ph) * ceil(W/pw)`` of the latent ``[C, T, H, W]`` with the model's patch ``(pt, ph, pw)``.
- ``mfu``: ``3 * F_fwd_per_token * tokens_per_s / (peak_flops_per_device * num_devices)``.
  ``F_fwd_per_token`` is counted once, at the shape of the first batch, with
  ``torch.utils.flop_counter.FlopCounterMode`` on a batch-1 forward pass of the model (matmuls, convolutions and
  scaled-dot-product attention, including the CPU attention kernel), divided by the tokens of that sample.
  Training = forward + backward = 3 x forward (the backward pass costs two forward passes); activation
  recomputation under gradient checkpointing is not counted (model FLOPs, the usual MFU convention). With
  multi-resolution buckets the per-token count of the first shape is used for all shapes (attention makes it
  grow slowly with the sequence length).
- Peak FLOP/s per device: ``$OPENSORA_PEAK_TFLOPS`` when set; on CUDA the dense tensor-core peak of known GPUs
  (H100/H200: 989 TFLOP/s bf16/fp16, 495 TF32; A100: 312 / 156); on CPU the measured rate of a large matmul in
  the compute dtype on this process (so CPU MFU is relative to what the cores reach on GEMMs). Unknown GPUs
  without the variable report no MFU.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from opensora_core.parallel.backends import DTYPES

# Dense tensor-core peaks per device (FLOP/s): (substring of the CUDA device name, {dtype: peak}).
_GPU_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12, "fp32": 494.7e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 156e12}),
)


def tokens_per_sample(latent_shape: Sequence[int], patch_size: Sequence[int]) -> int:
    """Latent patches of one sample: ``latent_shape`` = (C, T, H, W) or (T, H, W); patch = (pt, ph, pw)."""
    thw = tuple(latent_shape)[-3:]
    return math.prod(math.ceil(s / p) for s, p in zip(thw, patch_size, strict=True))


def _cpu_sdpa_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def count_forward_flops(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """FLOPs of ``model(*args, **kwargs)`` (no grad), counted with ``FlopCounterMode``; compiled blocks run
    eagerly here (``force_eager``: no extra no-grad batch-1 graph is compiled, every op is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_op is not None:
        custom[cpu_op] = _cpu_sdpa_flops
    was_training = model.training
    try:
        model.eval()  # no dropout of the caption, same FLOPs
        with (
            torch.no_grad(),
            torch.compiler.set_stance("force_eager"),
            FlopCounterMode(display=False, custom_mapping=custom) as counter,
        ):
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def measured_matmul_flops(
    dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.3, device: str | torch.device = "cpu"
) -> float:
    """FLOP/s of an ``n x n`` matmul in ``dtype`` on ``device`` (the achievable GEMM rate of this process).

    On CUDA each timing waits for the queued products (``torch.cuda.synchronize``); use a large ``n`` there
    (8192 reaches the tensor-core rate of an H100/H200).
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)  # leaves the global generator alone
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up (clocks, kernel selection)
        torch.mm(a, b)
    sync()
    iters, batch = 0, 1 if device.type == "cpu" else 10
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            torch.mm(a, b)
        sync()
        iters += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n**3 * iters / elapsed


def peak_flops_per_device(device: torch.device, dtype: str) -> float | None:
    """Peak FLOP/s of one device for ``dtype`` (see the module docstring); None when unknown."""
    env = os.environ.get("OPENSORA_PEAK_TFLOPS")
    if env:
        try:
            return float(env) * 1e12
        except ValueError:
            raise ValueError(f"OPENSORA_PEAK_TFLOPS={env!r} must be a number (TFLOP/s per device)") from None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in _GPU_PEAKS:
            if key in name:
                return peaks.get(dtype)
        return None
    torch_dtype = DTYPES.get(dtype, torch.float32)
    return measured_matmul_flops(torch_dtype)


@dataclass
class _Step:
    seconds: float
    samples: float
    tokens: float


class ThroughputMeter:
    """Aggregates per-step wall time, samples and tokens into the metrics of the module docstring."""

    def __init__(
        self,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        num_devices: int = 1,
        window: int = 100,
    ) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.num_devices = max(1, int(num_devices))
        self._steps: deque[_Step] = deque(maxlen=max(1, window))
        self._last: float | None = None

    def start(self) -> None:
        """Mark the start of timing (before the first step's data is fetched)."""
        self._last = time.perf_counter()

    def step(self, samples: float, tokens: float, seconds: float | None = None) -> float:
        """Record one finished step of ``samples`` global samples / ``tokens`` tokens; returns its seconds
        (measured since the previous step or :meth:`start`, unless given)."""
        now = time.perf_counter()
        if seconds is None:
            seconds = now - (self._last if self._last is not None else now)
        self._last = now
        self._steps.append(_Step(seconds, float(samples), float(tokens)))
        return seconds

    def reset_window(self) -> None:
        """Forget recorded steps (called after each log line)."""
        self._steps.clear()

    def metrics(self) -> dict[str, float]:
        """``step_time_s``, ``samples_per_s``, ``tokens_per_s`` and (when known) ``mfu`` over the window."""
        if not self._steps:
            return {}
        seconds = sum(s.seconds for s in self._steps)
        n = len(self._steps)
        out = {"step_time_s": seconds / n}
        if seconds > 0:
            out["samples_per_s"] = sum(s.samples for s in self._steps) / seconds
            out["tokens_per_s"] = sum(s.tokens for s in self._steps) / seconds
            mfu = self.mfu(out["tokens_per_s"])
            if mfu is not None:
                out["mfu"] = mfu
        return out

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation at ``tokens_per_s`` (None without a FLOP count or a peak)."""
        if not self.flops_per_token or not self.peak_flops:
            return None
        return 3.0 * self.flops_per_token * tokens_per_s / (self.peak_flops * self.num_devices)
