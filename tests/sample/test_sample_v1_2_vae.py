"""Sampling with the Open-Sora 1.2 video VAE: the CLI writes a 17-frame video from 5 latent frames (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
