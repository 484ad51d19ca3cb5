"""Sampling with the Open-Sora 1.2 video VAE: the CLI writes a 17-frame video from 5 latent frames (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opensora_core.config import load_config
from opensora_core.sample.pipeline import load_sampling_models
from opensora_core.sample.writer import read_sample

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/debug/tiny_v1_2_sample.py"


def test_latent_grid_comes_from_the_1_2_vae():
    models = load_sampling_models(load_config(REPO / CONFIG), device="cpu")
    assert models.vae.get_latent_size((17, 32, 32)) == (5, 4, 4)
    assert tuple(models.model.input_size) == (5, 4, 4) and models.model.in_channels == 4


def test_cli_writes_a_17_frame_video(tmp_path):
    cmd = [sys.executable, "-m", "opensora_core.sample", CONFIG, "--prompt", "a red ball bouncing"]
    cmd += ["--save-dir", str(tmp_path), "--num-sampling-steps", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    path = tmp_path / "sample_0.mp4"
    assert f"saved {path}" in res.stdout
    assert read_sample(path).shape == (17, 32, 32, 3)  # [T, H, W, 3]: 5 latent frames decoded to 17


def test_loops_carry_whole_17_frame_chunks(tmp_path):
    """condition_frame_length counts latent frames: 5 latent frames = the last 17 frames of the previous clip
    (one temporal-VAE chunk), so two loops of 34 frames (10 latent frames) give 34 + (34 - 17) = 51 frames."""
    from opensora_core.sample import sample

    over = {"prompt": ["a red ball"], "loop": 2, "num_frames": 34, "condition_frame_length": 5}
    over |= {"save_dir": str(tmp_path), "scheduler.num_sampling_steps": 2}
    (path,) = sample(load_config(REPO / CONFIG, overrides=over), progress=False, previews=False, device="cpu")
    assert read_sample(path).shape == (51, 32, 32, 3)


def test_condition_frame_length_must_be_whole_chunks():
    from opensora_core.config import ConfigError
    from opensora_core.models.vae_registry import carried_frames

    cfg = load_config(REPO / CONFIG)
    assert carried_frames(cfg.vae, 5) == 17 and carried_frames(cfg.vae, 10) == 34
    with pytest.raises(ConfigError, match=r"condition_frame_length=3 counts latent frames.*multiple of 5"):
        load_config(REPO / CONFIG, overrides={"loop": 2, "num_frames": 34, "condition_frame_length": 3})
    with pytest.raises(
        ConfigError, match=r"condition_frame_length \(5 latent frames = 17 frames\) must be shorter"
    ):
        load_config(REPO / CONFIG, overrides={"loop": 2, "condition_frame_length": 5})  # 17-frame clips
    tiny_1_1 = load_config(REPO / "configs/debug/tiny_sample.py")
    assert carried_frames(tiny_1_1.vae, 3) == 3  # no temporal compression: latent frames are frames
