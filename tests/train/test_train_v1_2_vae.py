"""Training through the Open-Sora 1.2 video VAE: 17-frame clips -> 5 latent frames -> STDiT3 + rflow (issue 16)."""

from __future__ import annotations

import math

from opensora_core.config import load_config
from opensora_core.models.text_encoders import build_text_encoder
from opensora_core.models.vae import build_vae
from opensora_core.train import train
from opensora_core.train.components import model_build_kwargs
from tests.train.conftest import REPO

CONFIG = REPO / "configs" / "debug" / "tiny_v1_2_train.py"


def test_tiny_v1_2_config_trains_on_17_frame_clips(tmp_path):
    from opensora_core.data.synthetic import generate

    generate(tmp_path / "data", 4, size=32, num_frames=17, seed=0)
    overrides = {
        "dataset.data_path": str(tmp_path / "data" / "meta.csv"),
        "outputs": str(tmp_path / "outputs"),
        "max_steps": 2,
        "ckpt_every": 0,
    }
    cfg = load_config(CONFIG, overrides=overrides)
    vae = build_vae(cfg.vae.as_dict())
    kwargs = model_build_kwargs(cfg, vae, build_text_encoder(cfg.text_encoder.as_dict()))
    assert kwargs["input_size"] == (5, 4, 4) and kwargs["in_channels"] == 4
    result = train(cfg)
    assert result.global_step == 2 and math.isfinite(result.final_metrics["loss"])
