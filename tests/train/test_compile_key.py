"""The training key ``compile``: every transformer block of the trained model is torch.compile'd."""

from pathlib import Path

import pytest
import torch

from opensora_core.config import load_config
from opensora_core.train import train
from opensora_core.train.components import build_components


@pytest.mark.parametrize("on", [True, False])
def test_compile_key_compiles_every_block(on):
    cfg = load_config("configs/debug/tiny_train.py", overrides=[f"compile={on}"])
    model = build_components(cfg, torch.device("cpu")).model
    compiled = [getattr(block, "_compiled_call_impl", None) is not None for block in model.blocks]
    assert compiled == [on] * len(model.blocks)


@pytest.mark.slow
def test_compiled_training_runs_and_checkpoints(tiny_config):
    result = train(tiny_config(max_steps=2, compile=True))
    assert (Path(result.checkpoint_dir) / "model.safetensors").exists()
