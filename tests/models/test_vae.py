"""Video VAEs: shapes, latent sizes, scaling, micro-batch invariance, local/missing models, config errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opensora_core.config import ConfigError
from opensora_core.models.pretrained import ModelNotFoundError
from opensora_core.models.tiny import build_tiny_vae, save_tiny_vae
from opensora_core.models.vae import (
    SD_VAE_SCALING_FACTOR,
    IdentityVAE,
    VAEOperationError,
    VideoAutoencoderKL,
    build_vae,
)

TINY = "debug/tiny-vae"


def kl(**kwargs) -> VideoAutoencoderKL:
    return build_vae(dict(type="VideoAutoencoderKL", from_pretrained=TINY, **kwargs))


def video(b: int = 2, t: int = 5, h: int = 16, w: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=g) * 2 - 1


def test_encode_decode_shapes_and_attributes():
    vae = kl(micro_batch_size=4)
    assert vae.out_channels == 4 and vae.patch_size == (1, 8, 8) and vae.micro_batch_size == 4
    x = video()
    z = vae.encode(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 5, 2, 3) and z.dtype == torch.float32
    assert tuple(z.shape[2:]) == vae.get_latent_size(tuple(x.shape[2:]))
    assert vae.decode(z).shape == x.shape


def test_get_latent_size_matches_reference_and_passes_none():
    vae = kl()
    assert vae.get_latent_size((16, 256, 256)) == (16, 32, 32)
    assert vae.get_latent_size((None, 240, 426)) == (None, 30, 53)  # floor, as the reference
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        vae.get_latent_size((256, 256))


def test_vae_is_frozen():
    vae = kl()
    assert not vae.module.training
    assert not any(p.requires_grad for p in vae.parameters())
    assert not vae.encode(video().requires_grad_(True)).requires_grad


@pytest.mark.parametrize("micro_batch_size", [1, 3, 4])
def test_micro_batching_does_not_change_results(micro_batch_size):
    x = video(b=2, t=5)  # 10 frames: uneven last chunk for 3 and 4
    full, chunked = kl(), kl(micro_batch_size=micro_batch_size)
    z_full = full.encode(x, generator=torch.Generator().manual_seed(1))
    z_chunked = chunked.encode(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z_chunked, z_full, atol=1e-5, rtol=1e-5)
    mean_full = kl(sample_posterior=False).encode(x)
    mean_chunked = kl(sample_posterior=False, micro_batch_size=micro_batch_size).encode(x)
    torch.testing.assert_close(mean_chunked, mean_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.decode(z_full), full.decode(z_full), atol=1e-5, rtol=1e-5)


def test_micro_batching_splits_frames_into_chunks(monkeypatch):
    vae = kl(micro_batch_size=3)
    seen: list[int] = []
    for name in ("encode", "decode"):
        original = getattr(vae.module, name)

        def spy(t, *args, _original=original, **kwargs):
            seen.append(t.shape[0])
            return _original(t, *args, **kwargs)

        monkeypatch.setattr(vae.module, name, spy)
    z = vae.encode(video(b=2, t=5))
    vae.decode(z)
    assert seen == [3, 3, 3, 1] * 2


def test_scaling_factor_is_applied():
    x = video(b=1, t=2)
    module = build_tiny_vae()
    frames = x.permute(0, 2, 1, 3, 4).reshape(2, 3, 16, 24)
    mean = module.encode(frames).latent_dist.mean  # [2, 4, 2, 3]
    z = kl(sample_posterior=False).encode(x)
    expected = (mean * SD_VAE_SCALING_FACTOR).reshape(1, 2, 4, 2, 3).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=1e-5)
    unscaled = kl(sample_posterior=False, scaling_factor=1.0).encode(x)
    torch.testing.assert_close(unscaled * SD_VAE_SCALING_FACTOR, z, atol=1e-6, rtol=1e-5)
    pixels = module.decode(mean).sample
    decoded = kl().decode(z)
    torch.testing.assert_close(
        decoded, pixels.reshape(1, 2, 3, 16, 24).permute(0, 2, 1, 3, 4), atol=1e-5, rtol=1e-5
    )


def test_posterior_sampling_is_deterministic_with_generator():
    vae, x = kl(), video()
    a = vae.encode(x, generator=torch.Generator().manual_seed(7))
    b = vae.encode(x, generator=torch.Generator().manual_seed(7))
    c = vae.encode(x, generator=torch.Generator().manual_seed(8))
    mean = kl(sample_posterior=False).encode(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c) and not torch.allclose(a, mean)
    torch.manual_seed(3)
    d = vae.encode(x)
    torch.manual_seed(3)
    assert torch.equal(d, vae.encode(x))


def test_identity_vae_round_trip():
    vae = build_vae(dict(type="identity"))
    assert isinstance(vae, IdentityVAE)
    assert vae.out_channels == 3 and vae.patch_size == (1, 1, 1) and vae.micro_batch_size is None
    x = video()
    assert torch.equal(vae.decode(vae.encode(x)), x)
    assert vae.get_latent_size((8, 24, None)) == (8, 24, None)
    with pytest.raises(ValueError, match=r"3 channels"):
        vae.encode(torch.zeros(1, 4, 2, 8, 8))


def test_temporal_decoder_decodes_by_whole_videos_and_refuses_encode():
    cfg = dict(type="VideoAutoencoderKLTemporalDecoder", from_pretrained="debug/tiny-vae-temporal")
    full = build_vae(cfg)
    chunked = build_vae({**cfg, "micro_batch_size": 3})  # 3 frames per chunk -> 1 video of 3 frames
    z = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    out = full.decode(z)
    assert out.shape == (2, 3, 3, 16, 16)
    torch.testing.assert_close(chunked.decode(z), out, atol=1e-5, rtol=1e-5)
    assert full.get_latent_size((3, 16, 16)) == (3, 2, 2)
    with pytest.raises(VAEOperationError, match="only decodes"):
        full.encode(video())


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"5-D tensor \[B, C, T, H, W\]"):
        kl().encode(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="4 channels"):
        kl().decode(torch.zeros(1, 3, 2, 2, 2))


def test_local_folder_loads_the_same_weights(tmp_path):
    folder = save_tiny_vae(tmp_path / "vae")
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file()
    local = build_vae(dict(type="VideoAutoencoderKL", from_pretrained=str(folder), sample_posterior=False))
    debug = kl(sample_posterior=False)
    x = video()
    assert torch.equal(local.encode(x), debug.encode(x))
    sub = build_vae(dict(type="VideoAutoencoderKL", from_pretrained=str(tmp_path), subfolder="vae"))
    assert sub.out_channels == 4


def test_missing_hub_model_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        build_vae(
            dict(type="VideoAutoencoderKL", from_pretrained="someorg/no-such-vae", cache_dir=str(tmp_path))
        )
    message = str(info.value)
    assert "someorg/no-such-vae" in message and "hf download someorg/no-such-vae --local-dir" in message
    assert "huggingface-cli download" in message and "Offline mode" in message
    assert isinstance(info.value, FileNotFoundError) and info.value.__suppress_context__
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained=str(tmp_path / "empty")))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="did you mean 'micro_batch_size'"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained=TINY, micro_batchsize=4))
    with pytest.raises(ConfigError, match="Did you mean 'VideoAutoencoderKL'"):
        build_vae(dict(type="VideoAutoencoderKl"))
    with pytest.raises(ConfigError, match=r"vae\.micro_batch_size"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained=TINY, micro_batch_size=0))
    with pytest.raises(ValueError, match="cannot use it"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained="debug/tiny-vae-temporal"))
    with pytest.raises(ValueError, match="known debug ids"):
        build_vae(dict(type="VideoAutoencoderKL", from_pretrained="debug/huge-vae"))


def test_open_sora_style_config_loads_with_defaults():
    vae = build_vae(dict(type="VideoAutoencoderKL", from_pretrained=TINY, micro_batch_size=4))
    assert math.isclose(vae.scaling_factor, 0.18215) and vae.sample_posterior is True


@pytest.mark.integration
def test_vae_decode_benchmark_runs_with_tiny_sizes():
    """benchmarks/vae_decode.py end to end (two fresh processes) on a tiny VAE."""
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "benchmarks" / "vae_decode.py"), "--frames", "8", "--latent", "4"]
    cmd += ["--channels", "8,8,16,16", "--norm-groups", "8", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [line["unit"] for line in lines] == ["MiB", "s"]
    for line in lines:
        assert {"name", "ours", "baseline", "ratio", "unit", "machine"} <= set(line)
        assert line["ours"] > 0 and line["baseline"] > 0
    assert lines[0]["max_abs_diff"] < 1e-4


def test_builders_accept_the_typed_run_config_sections():
    from opensora_core.config import TEXT_ENCODER_TYPES, VAE_TYPES
    from opensora_core.models.text_encoders import build_text_encoder

    # the run config validates vae / text_encoder with the very classes the builders use (one declaration)
    cfg = VAE_TYPES["VideoAutoencoderKL"](type="VideoAutoencoderKL", from_pretrained=TINY, micro_batch_size=2)
    assert build_vae(cfg).micro_batch_size == 2
    t5 = TEXT_ENCODER_TYPES["t5"](type="t5", from_pretrained="debug/tiny-t5", model_max_length=10)
    assert build_text_encoder(t5).encode(["a red circle"])["y"].shape == (1, 1, 10, 32)
