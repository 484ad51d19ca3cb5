"""The sampler end to end on a device: caption encoding, IDDPM / DPM-Solver with batched CFG, VAE decode, bf16.

Tiny models built in code (``debug/tiny-t5``, ``debug/tiny-vae``: a diffusers AutoencoderKL with the SD latent
layout), 8 frames of 64x64, ``dtype="bf16"``, through ``load_sampling_models`` and the runner ``sample()`` uses
(the H.264 writing after it is host-side and covered by tests/sample). Checks: the models sit on the device in
bf16, the videos have the planned shape and are finite, two prompts give different videos, and the same seed
gives the same batch again on the same device (bitwise: same kernels, same shapes).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from opensora_core.config import load_config
from opensora_core.sample import load_sampling_models
from opensora_core.sample.pipeline import _prepare, _Runner
from tests.gpu.devices import CPU_AND_CUDA, rel_error

TINY = "configs/debug/tiny_sample.py"
SCHEDULERS = {
    "iddpm": {"_delete_": True, "type": "iddpm", "num_sampling_steps": 4, "cfg_scale": 7.0},
    "dpm-solver": {"_delete_": True, "type": "dpm-solver", "num_sampling_steps": 3, "cfg_scale": 7.0},
}
MODELS = {
    "STDiT-XL/2": {},
    "STDiT2-XL/2": {"input_sq_size": 64, "qk_norm": True},
}


def _config(tmp_path, scheduler: str, model: str) -> Any:
    overrides = {
        "save_dir": str(tmp_path / "out"),
        "dtype": "bf16",
        "image_size": (64, 64),
        "num_frames": 8,
        "batch_size": 2,
        "vae": {"_delete_": True, "type": "VideoAutoencoderKL", "from_pretrained": "debug/tiny-vae"},
        "model": {
            "_delete_": True,
            "type": model,
            "depth": 2,
            "hidden_size": 48,
            "num_heads": 4,
            "patch_size": (1, 2, 2),
            **MODELS[model],
        },
        "scheduler": SCHEDULERS[scheduler],
    }
    if model == "STDiT2-XL/2":
        overrides["multi_resolution"] = "STDiT2"
    return load_config(TINY, overrides=overrides)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_sampler_end_to_end(device: str, scheduler: str, model: str, tmp_path):
    cfg, plan = _prepare(_config(tmp_path, scheduler, model), ["a red ball bouncing", "a blue cube"])
    models = load_sampling_models(cfg, device=device)
    for module in (models.model, models.vae):
        param = next(module.parameters())
        assert param.device.type == device and param.dtype == torch.bfloat16, (type(module).__name__, param)
    runner = _Runner(cfg, models, plan, lambda _n: None)
    videos = runner.generate(plan.todo)  # [2, 3, T, H, W] float on the CPU
    assert videos.shape == (2, 3, 8, 64, 64)
    assert torch.isfinite(videos).all()
    assert rel_error(videos[0], videos[1]) > 1e-2, "two prompts gave the same video"
    again = _Runner(cfg, models, plan, lambda _n: None).generate(plan.todo)
    assert torch.equal(again, videos), "the same seed gave other videos"
