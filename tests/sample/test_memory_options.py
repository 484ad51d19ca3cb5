"""Memory options for real GPUs (issue 16): ``--plan`` sizes the shipped configs offline from their
architectures; ``text_encoder.offload`` frees the encoder after encoding without changing any output;
``text_encoder.dtype="bf16"`` gives close embeddings."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from opensora_core.config import load_config
from opensora_core.models.text_encoder_registry import T5Config
from opensora_core.models.text_encoders import build_text_encoder
from opensora_core.sample import cli
from opensora_core.sample.memory import GiB, plan_memory
from opensora_core.sample.pipeline import load_sampling_models, sample
from opensora_core.sample.writer import read_sample
from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
V12 = REPO / "configs/opensora-v1-2/inference/sample.py"
TINY = REPO / "configs/debug/tiny_v1_2_sample.py"


def _t5_xxl_encoder_params(d=4096, d_ff=10240, heads=64, d_kv=64, layers=24, vocab=32128, buckets=32) -> int:
    """T5 v1.1 encoder: shared embedding, per layer q/k/v/o + gated FFN (wi_0, wi_1, wo) + 2 RMS norms,
    the relative position bias of layer 0, the final norm."""
    per_layer = 4 * d * heads * d_kv + 3 * d * d_ff + 2 * d
    return vocab * d + layers * per_layer + buckets * heads + d


def _reference_params(name: str) -> int:
    """The parameter count a ../shared/reference/*_keys.txt file states."""
    text = shared_path("reference", name).read_text()
    match = re.search(r"# params (\d+)", text) or re.search(r"total parameters \(named_parameters\): ([\d,]+)", text)
    assert match, f"{name} states no parameter count"
    return int(match.group(1).replace(",", ""))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_plan_cli_on_the_shipped_1_2_config_exits_0(capsys):
    assert cli.main([str(V12), "--plan", "--resolution", "480p", "--num-frames", "4s"]) == 0
    out = capsys.readouterr().out
    assert "480x854, 102 frames, batch 1" in out
    for component in ("text encoder", "diffusion model", "VAE"):
        assert component in out
    assert "expected peak:" in out and "known config constants" in out


def test_plan_counts_1_2_parameters_exactly():
    plan = plan_memory(load_config(V12))
    assert plan.parts["text encoder"].params == _t5_xxl_encoder_params() == 4_762_310_656
    assert plan.parts["diffusion model"].params == _reference_params("stdit3_xl2_keys.txt")
    assert plan.parts["VAE"].params == _reference_params("opensora_vae_v1_2_keys.txt")


@pytest.mark.parametrize(
    ("config", "keys"),
    [
        ("configs/opensora-v1-1/inference/sample.py", "stdit2_xl2_keys.txt"),
        ("configs/opensora/inference/16x256x256.py", "stdit_xl2_keys.txt"),
    ],
)
def test_plan_counts_1_0_and_1_1_models(config, keys):
    plan = plan_memory(load_config(REPO / config))
    assert plan.parts["diffusion model"].params == _reference_params(keys)
    assert plan.parts["VAE"].params == 83_653_863  # the SD VAE (AutoencoderKL, 4 latent channels)


def test_plan_reflects_the_memory_options():
    base = plan_memory(load_config(V12))
    bf16 = plan_memory(load_config(V12, overrides={"text_encoder.dtype": "bf16"}))
    cpu = plan_memory(load_config(V12, overrides={"text_encoder.device": "cpu"}))
    offload = plan_memory(load_config(V12, overrides={"text_encoder.offload": True}))
    t5 = base.parts["text encoder"].nbytes
    assert bf16.parts["text encoder"].nbytes * 2 == t5
    assert base.phase_bytes("denoise") - cpu.phase_bytes("denoise") == t5
    assert "text encoder" not in cpu.phases["encode"]  # encoded on the CPU
    assert "text encoder" not in offload.phases["denoise"]
    assert "diffusion model" not in offload.phases["encode"]  # loaded after the encoder is freed
    both = plan_memory(load_config(V12, overrides={"text_encoder.offload": True, "text_encoder.dtype": "bf16"}))
    assert max(offload.peak_bytes, bf16.peak_bytes) < base.peak_bytes
    assert both.peak_bytes < min(offload.peak_bytes, bf16.peak_bytes)
    larger = plan_memory(load_config(V12, overrides={"resolution": "720p", "image_size": None}))
    assert larger.phases["denoise"]["activations"] > 4 * base.phases["denoise"]["activations"]
    assert 15 * GiB < base.peak_bytes < 30 * GiB


def test_text_encoder_options_are_validated():
    with pytest.raises(ValidationError, match="dtype"):
        T5Config(type="t5", dtype="fp16")
    with pytest.raises(ValidationError, match="device"):
        T5Config(type="t5", device="gpu0")


def test_released_encoder_is_freed_and_reloads_identically():
    enc = build_text_encoder(dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=16))
    before = enc.encode(["a red ball", "a blue cube"])
    enc.release()
    assert enc.released and all(p.device.type == "meta" for p in enc.model.parameters())
    after = enc.encode(["a red ball", "a blue cube"])
    assert not enc.released
    torch.testing.assert_close(after["y"], before["y"], rtol=0, atol=0)
    assert torch.equal(after["mask"], before["mask"])


def test_bf16_text_encoder_gives_close_embeddings():
    cfg = dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=16)
    prompts = ["a red ball bouncing", "a blue cube"]
    full = build_text_encoder(cfg).encode(prompts)["y"]
    half = build_text_encoder({**cfg, "dtype": "bf16"}).encode(prompts)["y"]
    assert half.dtype == torch.bfloat16
    scale = full.abs().max()
    error = (half.float() - full).abs().max()
    assert 0 < error <= 2e-2 * scale  # bf16 rounding, not a different computation


def test_offloaded_sampling_frees_the_encoder_and_changes_nothing(tmp_path):
    over = {"scheduler.num_sampling_steps": 2, "prompt": ["a red ball", "a red ball", "a blue cube"]}
    plain = load_config(TINY, overrides={**over, "save_dir": str(tmp_path / "plain")})
    offload = load_config(TINY, overrides={**over, "save_dir": str(tmp_path / "off"), "text_encoder.offload": True})
    torch.manual_seed(0)  # the tiny model's random weights
    want = [read_sample(p) for p in sample(plain, progress=False, previews=False, device="cpu")]
    torch.manual_seed(0)
    models = load_sampling_models(offload, device="cpu")
    got = [read_sample(p) for p in sample(offload, progress=False, previews=False, models=models)]
    assert models.text_encoder.released  # freed once the run's captions were encoded
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)
    again = offload.model_copy(update={"save_dir": str(tmp_path / "again")})
    repeat = [read_sample(p) for p in sample(again, progress=False, previews=False, models=models)]
    np.testing.assert_array_equal(repeat[2], want[2])  # loaded again for the next run, same output
