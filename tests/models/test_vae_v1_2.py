"""Open-Sora 1.2 video VAE: official layout, reference parity, latent sizes, chunking, loading, errors.

The numbers in parity_data/os12_vae.* come from Open-Sora v1.2.0 (commit 17cce90) run on CPU in fp32 by
parity_data/generate_os12_vae.py, with the tiny weights stored in the same file (``w.<part>.*``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from opensora_core.config import ConfigError, RunConfig
from opensora_core.models.vae import build_vae
from opensora_core.models.vae_registry import TEMPORAL_VAES
from opensora_core.models.vae_temporal import VAE_Temporal
from opensora_core.models.vae_v1_2 import SDXL_VAE_CONFIG, VideoAutoencoderPipeline
from tests.models.test_stdit3 import reference_keys_v3

PARITY = Path(__file__).parent / "parity_data" / "os12_vae"
TINY = "debug/tiny-vae-v1-2"


@cache
def parity() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of the 1.2 VAE parity file."""
    return load_file(f"{PARITY}.safetensors"), json.loads(Path(f"{PARITY}.json").read_text())


def weights(part: str) -> dict[str, torch.Tensor]:
    prefix = f"w.{part}."
    return {k[len(prefix) :]: v for k, v in parity()[0].items() if k.startswith(prefix)}


def tiny_pipeline(**kwargs: Any) -> VideoAutoencoderPipeline:
    """The tiny OpenSoraVAE_V1_2 (debug id) with the parity file's weights."""
    vae = build_vae(dict(type="OpenSoraVAE_V1_2", from_pretrained=TINY, **kwargs))
    vae.load_state_dict(weights("pipe"), strict=True)
    return vae


def test_official_state_dict_keys_shapes_order_and_parameter_count():
    expected = reference_keys_v3("opensora_vae_v1_2_keys.txt")
    assert len(expected) == 517
    from diffusers import AutoencoderKL

    from opensora_core.models.vae import VideoAutoencoderKL
    from opensora_core.models.vae_registry import (
        OPENSORA_V1_2_SCALE,
        OPENSORA_V1_2_SHIFT,
        VAETemporalSDConfig,
    )

    # what build_opensora_vae_v1_2 assembles before loading hpcai-tech/OpenSora-VAE-v1.2 (on meta: no memory)
    with torch.device("meta"):
        vae = VideoAutoencoderPipeline(
            VideoAutoencoderKL(AutoencoderKL(**SDXL_VAE_CONFIG), 4),
            VAE_Temporal(**VAETemporalSDConfig.ARCHITECTURE),
            17,
            OPENSORA_V1_2_SHIFT,
            OPENSORA_V1_2_SCALE,
        )
    assert [(k, list(v.shape)) for k, v in vae.state_dict().items()] == expected
    assert sum(p.numel() for p in vae.parameters()) == 393_341_007


@pytest.mark.parametrize("frames", [7, 9])
@pytest.mark.parametrize("explicit_generator", [False, True])
def test_temporal_vae_matches_open_sora_1_2(frames, explicit_generator):
    data, meta = parity()
    case, seed = f"temporal_t{frames}", meta["cases"][f"temporal_t{frames}"]["seed"]
    model = build_vae(dict(type="VAE_Temporal", **meta["temporal"])).eval()
    model.load_state_dict(weights("temporal"), strict=True)
    x = data[f"in.{case}.x"]
    with torch.no_grad():
        posterior = model.encode(x)
        if explicit_generator:
            z = posterior.sample(torch.Generator().manual_seed(seed))
        else:
            torch.manual_seed(seed)
            z = posterior.sample()
        decoded = model.decode(z, num_frames=frames)
    assert posterior.mean.shape == (2, 4, -(-frames // 4), 6, 5)
    torch.testing.assert_close(posterior.mean, data[f"out.{case}.mean"], atol=1e-5, rtol=0)
    torch.testing.assert_close(posterior.std, data[f"out.{case}.std"], atol=1e-5, rtol=0)
    torch.testing.assert_close(z, data[f"out.{case}.z"], atol=1e-5, rtol=0)
    assert decoded.shape == x.shape
    torch.testing.assert_close(decoded, data[f"out.{case}.decoded"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["pipe17", "pipe_whole"])
@pytest.mark.parametrize("explicit_generator", [False, True])
def test_pipeline_matches_open_sora_1_2(case, explicit_generator):
    data, meta = parity()
    spec = meta["cases"][case]
    vae = tiny_pipeline(micro_frame_size=spec["micro_frame_size"], micro_batch_size=spec["micro_batch_size"])
    x, frames = data[f"in.{case}.x"], spec["frames"]
    if explicit_generator:
        z = vae.encode(x, generator=torch.Generator().manual_seed(spec["seed"]))
    else:
        torch.manual_seed(spec["seed"])
        z = vae.encode(x)
    torch.testing.assert_close(z, data[f"out.{case}.z"], atol=1e-5, rtol=0)
    assert list(vae.get_latent_size((frames, 16, 16))) == data[f"out.{case}.latent_size"].tolist()
    decoded = vae.decode(z, num_frames=frames)
    assert decoded.shape == x.shape
    torch.testing.assert_close(decoded, data[f"out.{case}.decoded"], atol=1e-5, rtol=0)


def test_latent_sizes_and_channels():
    vae = build_vae(dict(type="OpenSoraVAE_V1_2", from_pretrained=TINY))
    assert vae.micro_frame_size == 17 and vae.micro_z_frame_size == 5 and vae.out_channels == 4
    assert vae.spatial_vae.micro_batch_size == 4
    sizes = {t: vae.get_latent_size((t, 256, 448))[0] for t in (1, 16, 17, 18, 34, 51, 102)}
    assert sizes == {1: 1, 16: 4, 17: 5, 18: 6, 34: 10, 51: 15, 102: 30}
    assert vae.get_latent_size((None, 240, 426)) == (None, 30, 53)
    whole = build_vae(dict(type="OpenSoraVAE_V1_2", from_pretrained=TINY, micro_frame_size=None))
    assert whole.get_latent_size((34, 64, 64)) == (9, 8, 8)  # one clip: ceil(34 / 4)


def test_decode_needs_consistent_num_frames():
    vae = build_vae(dict(type="OpenSoraVAE_V1_2", from_pretrained=TINY))
    z = torch.zeros(1, 4, 4, 2, 2)
    with pytest.raises(ValueError, match="needs num_frames"):
        vae.decode(z)
    with pytest.raises(ValueError, match=r"\[B, 4, 5, h, w\] for num_frames=17"):
        vae.decode(z, num_frames=17)
    for frames in (13, 16):  # 13..16 frames share 4 latent frames; the front padding is cut
        assert vae.decode(z, num_frames=frames).shape == (1, 3, frames, 16, 16)


def test_frozen_by_default_and_cal_loss_is_the_training_path():
    frozen = tiny_pipeline()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    with pytest.raises(RuntimeError, match="cal_loss=True"):
        frozen(torch.zeros(1, 3, 4, 16, 16))

    train = tiny_pipeline(cal_loss=True)
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    torch.manual_seed(0)
    z, posterior, x_z = train.encode(x)
    torch.manual_seed(0)
    normalised = frozen.encode(x)
    torch.testing.assert_close((z - train.shift) / train.scale, normalised, atol=1e-6, rtol=0)
    assert x_z.shape == (1, 4, 9, 2, 2) and posterior.mean.shape == (1, 4, 3, 2, 2)
    x_rec, x_z_rec, _, posterior, _ = train(x)
    assert x_rec.shape == x.shape and x_z_rec.shape == x_z.shape
    (x_rec.square().mean() + posterior.kl().mean()).backward()  # pixel loss through the frozen decoder
    temporal_grads = [p.grad for p in train.temporal_vae.parameters()]
    assert all(g is not None for g in temporal_grads)
    assert not any(p.requires_grad for p in train.spatial_vae.parameters())  # the spatial VAE stays frozen


def test_explicit_pipeline_loads_whole_weights_from_a_folder(tmp_path):
    source = tiny_pipeline()
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "model.safetensors")
    )
    vae = build_vae(
        dict(
            type="VideoAutoencoderPipeline",
            vae_2d=dict(type="VideoAutoencoderKL", from_pretrained="debug/tiny-vae", micro_batch_size=4),
            vae_temporal=dict(
                type="VAE_Temporal",
                filters=8,
                num_res_blocks=1,
                channel_multipliers=(1, 2, 2),
                temporal_downsample=(True, True),
                num_groups=4,
            ),
            micro_frame_size=17,
            shift=(-0.10, 0.34, 0.27, 0.98),
            scale=(3.85, 2.32, 2.33, 3.06),
            from_pretrained=str(tmp_path),
        )
    )
    for key, value in source.state_dict().items():
        assert torch.equal(vae.state_dict()[key], value), key
    x = torch.rand(1, 3, 5, 16, 16)
    torch.manual_seed(1)
    a = vae.encode(x)
    torch.manual_seed(1)
    torch.testing.assert_close(a, source.encode(x), atol=0, rtol=0)


def test_temporal_vaes_build_but_are_not_a_run_vae():
    for name in TEMPORAL_VAES:
        kwargs = {} if name == "VAE_Temporal_SD" else {"filters": 8, "num_groups": 4}
        assert isinstance(build_vae(dict(type=name, **kwargs)), VAE_Temporal)
    base = dict(model=dict(type="STDiT3-XL/2"), text_encoder=dict(type="t5"), scheduler=dict(type="rflow"))
    with pytest.raises(ValidationError, match="'VAE_Temporal' found using 'type' does not match") as err:
        RunConfig.model_validate({**base, "vae": dict(type="VAE_Temporal")})
    assert "'OpenSoraVAE_V1_2'" in str(err.value)


def test_config_errors_and_none_chunk_sizes_survive_as_dict():
    with pytest.raises(ConfigError, match="freeze_vae_2d"):
        build_vae(dict(type="OpenSoraVAE_V1_2", from_pretrained=TINY, freeze_vae_2d=False))
    with pytest.raises(ConfigError, match="micro_frame_sise"):
        build_vae(dict(type="OpenSoraVAE_V1_2", micro_frame_sise=17))
    with pytest.raises(ValueError, match="temporal_downsample needs one entry per level"):
        build_vae(dict(type="VAE_Temporal", channel_multipliers=(1, 2), temporal_downsample=(True, True)))
    from opensora_core.models.vae import parse_vae_config

    cfg = parse_vae_config(dict(type="OpenSoraVAE_V1_2", micro_frame_size=None, micro_batch_size=None))
    assert cfg.as_dict()["micro_frame_size"] is None and cfg.as_dict()["micro_batch_size"] is None
    assert "from_pretrained" not in cfg.as_dict()
