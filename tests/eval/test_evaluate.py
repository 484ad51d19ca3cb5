"""opensora_core.eval.evaluate: the sampling config derived from a training checkpoint, argument checks."""

from __future__ import annotations

import pytest

from opensora_core.config import load_config
from opensora_core.eval import evaluate
from opensora_core.eval.evaluate import sampling_config
from tests.eval.tiny_checkpoint import DEMO_CONFIG

IDDPM_50 = {
    "_delete_": True,
    "type": "iddpm",
    "timestep_respacing": "50",
    "num_sampling_steps": None,
    "cfg_scale": 7.0,
}


@pytest.fixture
def saved_config(tmp_path):
    """The demo's training config with IDDPM on a 50-step training respacing."""
    cfg = load_config(DEMO_CONFIG, overrides={"dataset.data_path": "/d/meta.csv", "scheduler": IDDPM_50})
    cfg.save(tmp_path / "ckpt")
    return tmp_path / "ckpt" / "config.json"


def test_sampling_steps_of_an_rflow_checkpoint(tmp_path):
    rflow = {"_delete_": True, "type": "rflow", "num_sampling_steps": 30}
    load_config(DEMO_CONFIG, overrides={"dataset.data_path": "/d/meta.csv", "scheduler": rflow}).save(
        tmp_path / "ckpt"
    )
    cfg = sampling_config(tmp_path / "ckpt" / "config.json", None, tmp_path / "out", num_sampling_steps=12)
    assert (cfg.scheduler.type, cfg.scheduler.num_sampling_steps) == (
        "rflow",
        12,
    )  # no respacing key to reset


def test_sampling_config_from_training_config(saved_config, tmp_path):
    cfg = sampling_config(
        saved_config, tmp_path / "ema.safetensors", tmp_path / "out", num_sampling_steps=20, seed=5
    )
    assert cfg.scheduler.num_sampling_steps == 20 and cfg.scheduler.timestep_respacing is None
    assert (cfg.num_frames, cfg.image_size) == (4, (16, 16))  # from the dataset section
    assert cfg.model.from_pretrained == str(tmp_path / "ema.safetensors")
    assert (cfg.seed, cfg.save_dir, cfg.num_sample, cfg.loop) == (5, str(tmp_path / "out"), 1, 1)
    kept = sampling_config(saved_config, None, tmp_path / "out")
    assert kept.scheduler.timestep_respacing == "50" and kept.model.from_pretrained is None


def test_sampling_config_overrides_win(saved_config, tmp_path):
    cfg = sampling_config(
        saved_config, None, tmp_path, ["num_frames=2", "scheduler.cfg_scale=1.5"], cfg_scale=9.0
    )
    assert cfg.num_frames == 2 and cfg.scheduler.cfg_scale == 1.5
    cfg = sampling_config(saved_config, None, tmp_path, {"image_size": (32, 32)})
    assert cfg.image_size == (32, 32)
    with pytest.raises(ValueError, match="key=value"):
        sampling_config(saved_config, None, tmp_path, ["num_frames"])


def test_evaluate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        evaluate(str(tmp_path), str(tmp_path / "out"), weights=["best"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        evaluate(str(tmp_path), str(tmp_path / "out"))


def test_eval_and_registry_import_lightly():
    import subprocess
    import sys

    code = (
        "import sys, opensora_core.eval, opensora_core.model_registry;"
        "print([m for m in ('torch', 'mlflow', 'kfp', 'kubernetes') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
