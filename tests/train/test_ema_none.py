"""`ema_decay = None` in a config disables EMA (same as --no-ema): no ema.safetensors is written."""

from pathlib import Path

from opensora_core.config import load_config
from opensora_core.train import train


def test_ema_decay_none_is_accepted():
    cfg = load_config("configs/debug/tiny_train.py", overrides=["ema_decay=None"])
    assert cfg.ema_decay is None


def test_ema_decay_none_trains_without_ema(tiny_config):
    result = train(tiny_config(max_steps=1, ema_decay=None))
    ckpt = Path(result.checkpoint_dir)
    assert (ckpt / "model.safetensors").exists()
    assert not (ckpt / "ema.safetensors").exists()
