"""Open-Sora 1.2's ``misc/eval_loss.py`` drives ``python -m opensora_core.eval.val_loss`` (tiny STDiT3 + rflow
on a tiny bucket dataset, CPU), and ``torchrun`` with 2 gloo ranks gives the same numbers as one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from opensora_core.config import ConfigError, load_config
from opensora_core.eval.val_loss.__main__ import main
from tests.eval.tiny_checkpoint import REPO_ROOT
from tests.parallel.dist_harness import free_port

EVAL_LOSS = REPO_ROOT / "configs" / "opensora-v1-2" / "misc" / "eval_loss.py"
# The tiny models of configs/debug/tiny_v1_2_*.py in place of STDiT3-XL/2, the released VAE and T5-XXL.
TINY = [
    "dtype=fp32",
    "model.depth=2",
    "model.hidden_size=32",
    "model.num_heads=2",
    "model.input_sq_size=32",
    "model.enable_flash_attn=False",
    "model.enable_layernorm_kernel=False",
    "vae.from_pretrained=debug/tiny-vae-v1-2",
    "text_encoder.from_pretrained=debug/tiny-t5",
    "text_encoder.model_max_length=16",
    "num_eval_timesteps=3",
]


def test_upstream_config_loads_as_an_evaluation_config():
    cfg = load_config(EVAL_LOSS)
    assert (cfg.num_eval_timesteps, cfg.seed, cfg.scheduler.type) == (10, 42, "rflow")
    assert cfg.bucket_config["144p"][51] == (None, 30) and cfg.bucket_config["2048"] == {1: (None, 5)}
    with pytest.raises(ConfigError, match="keep_prob None marks a bucket for validation loss"):
        load_config(EVAL_LOSS, overrides={"dataset.data_path": "meta.csv"}).check_ready(training=True)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> dict[str, Path]:
    """3 images (176x176: the 144p image bucket) and a 53-frame video (the 144p 51-frame bucket), and tiny
    STDiT3 weights whose final layer is not zero (so the loss depends on them)."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from opensora_core.config.loader import overrides_to_dict
    from opensora_core.data.video_io import write_video
    from opensora_core.train.components import build_components

    root = tmp_path_factory.mktemp("v12")
    rng = np.random.default_rng(0)
    rows = ["path,text,num_frames,height,width"]
    for i in range(3):
        Image.fromarray((rng.random((176, 176, 3)) * 255).astype(np.uint8)).save(root / f"img{i}.png")
        rows.append(f"{root / f'img{i}.png'},picture {i},1,176,176")
    write_video(root / "vid.mp4", (rng.random((53, 176, 176, 3)) * 255).astype(np.uint8), fps=24, crf=12)
    rows.append(f"{root / 'vid.mp4'},a moving video,53,176,176")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    cfg = load_config(EVAL_LOSS, overrides=overrides_to_dict(TINY))
    state = build_components(cfg, torch.device("cpu")).model.state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(v.shape, generator=gen) * 0.02 if k.startswith("final_layer") else v.contiguous()
        for k, v in state.items()
    }
    save_file(state, str(root / "w.safetensors"))
    return {"meta": root / "meta.csv", "weights": root / "w.safetensors", "root": root}


def _args(setup: dict[str, Path], output: Path) -> list[str]:
    return [
        str(EVAL_LOSS),
        "--ckpt-path",
        str(setup["weights"]),
        "--data-path",
        str(setup["meta"]),
        "--output",
        str(output),
        "--device",
        "cpu",
        "--cfg-options",
        *TINY,
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_eval_loss_config_runs_and_torchrun_matches_one_process(tiny_setup, tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1): the same reduction order
    try:
        assert main(_args(tiny_setup, tmp_path / "one.json")) == 0
    finally:
        torch.set_num_threads(threads)
    one = json.loads((tmp_path / "one.json").read_text())
    assert list(one["per_bucket"]) == ["144p/1", "144p/51"]  # the buckets the clips fit, in config order
    assert len(one["per_sample"]) == 4 and len(one["timesteps"]) == 3
    assert one["timesteps"][0] == pytest.approx(250.0) and math.isfinite(one["overall"])
    assert all(k.endswith("@144p/1") for k in one["per_sample"] if ".png" in k)
    assert main(_args(tiny_setup, tmp_path / "one.json")) == 2  # an existing result is not overwritten

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
    ]
    cmd += ["--master_port", str(free_port()), "-m", "opensora_core.eval.val_loss"]
    proc = subprocess.run(
        cmd + _args(tiny_setup, tmp_path / "two.json"), env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert two == one
