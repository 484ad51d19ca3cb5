"""Throughput metrics: token counts, FLOP counting (attention included on CPU), MFU formula, log lines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opensora_core.train.reporting import format_log_line, parse_log_line
from opensora_core.train.throughput import (
    ThroughputMeter,
    count_forward_flops,
    peak_flops_per_device,
    tokens_per_sample,
)


def test_tokens_are_latent_patches():
    assert tokens_per_sample((4, 16, 32, 32), (1, 2, 2)) == 16 * 16 * 16
    assert tokens_per_sample((16, 30, 30), (2, 4, 4)) == 8 * 8 * 8  # ceil for padded sizes


def test_flop_count_of_linear_and_attention():
    lin = nn.Linear(16, 8, bias=False)
    assert count_forward_flops(lin, (torch.randn(3, 16),), {}) == 2 * 3 * 16 * 8

    class Attn(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(q, q, q)

    b, h, s, d = 2, 4, 32, 8
    flops = count_forward_flops(Attn(), (torch.randn(b, h, s, d),), {})
    assert flops == 2 * (2 * b * h * s * s * d)  # QK^T and AV


def test_flop_count_keeps_training_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    count_forward_flops(model, (torch.randn(1, 4),), {})
    assert model.training


def test_meter_metrics_and_mfu_formula():
    meter = ThroughputMeter(flops_per_token=1e6, peak_flops=1e12, num_devices=2)
    meter.start()
    meter.step(8, 8000, seconds=2.0)
    meter.step(8, 8000, seconds=2.0)
    m = meter.metrics()
    assert m["step_time_s"] == pytest.approx(2.0)
    assert m["samples_per_s"] == pytest.approx(4.0)
    assert m["tokens_per_s"] == pytest.approx(4000.0)
    assert m["mfu"] == pytest.approx(3 * 1e6 * 4000 / (1e12 * 2))
    meter.reset_window()
    assert meter.metrics() == {}
    assert ThroughputMeter().mfu(1000.0) is None


def test_peak_flops_from_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENSORA_PEAK_TFLOPS", "2.5")
    assert peak_flops_per_device(torch.device("cpu"), "bf16") == pytest.approx(2.5e12)
    monkeypatch.setenv("OPENSORA_PEAK_TFLOPS", "fast")
    with pytest.raises(ValueError, match="OPENSORA_PEAK_TFLOPS"):
        peak_flops_per_device(torch.device("cpu"), "fp32")


def test_log_line_round_trip():
    line = format_log_line(
        {"step": 12, "epoch": 0, "loss": 0.98312345, "grad_norm": None, "lr": 1e-3, "samples/s": 7.951}
    )
    assert line == "step=12 epoch=0 loss=0.98312 lr=1.000e-03 samples/s=7.95"
    assert parse_log_line("x " + line) == {
        "step": "12",
        "epoch": "0",
        "loss": "0.98312",
        "lr": "1.000e-03",
        "samples/s": "7.95",
    }
