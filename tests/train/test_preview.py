"""The training preview grid (preview_every): logged per step to a real MLflow run, deterministic, validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opensora_core.config import ConfigError, load_config
from opensora_core.train import train
from tests.train.conftest import TINY_OVERRIDES, TINY_TRAIN

PROMPTS = ["a red square moving left", "a blue circle moving up"]


def _tiny(tiny_dataset: str, outputs: Path, **extra: object):
    return load_config(
        TINY_TRAIN,
        overrides={
            **TINY_OVERRIDES,
            "dataset.data_path": tiny_dataset,
            "outputs": str(outputs),
            "preview_every": 2,
            "preview_prompts": PROMPTS,
            "preview_sampling_steps": 2,
            **extra,
        },
    )


@pytest.mark.integration
def test_a_tiny_run_logs_one_labelled_grid_per_preview_step(mlflow_server, tiny_dataset, tmp_path):
    from mlflow import MlflowClient

    tracking = {"backend": "mlflow", "uri": mlflow_server.uri, "experiment": "preview"}
    result = train(_tiny(tiny_dataset, tmp_path / "out", tracking=tracking))

    client = MlflowClient(mlflow_server.uri)
    images = [a.path for a in client.list_artifacts(result.mlflow_run_id, "images")]
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.endswith(".png"))
    assert steps == [2, 4] and all(p.startswith("images/preview+step+") for p in images)
    assert [m.step for m in client.get_metric_history(result.mlflow_run_id, "preview_s")] == [2, 4]

    files = sorted((Path(result.experiment_dir) / "preview").glob("*.png"))
    assert [f.name for f in files] == ["global_step2.png", "global_step4.png"]
    grid = np.asarray(Image.open(files[0]))
    # two rows of 8 frames of 16x16 under their labels: wider than the frames, label bands hold text
    assert grid.shape[1] >= 384 and grid.shape[0] > 2 * 16 + 2 * 14 and (grid[:12] < 80).any()


def test_the_grid_depends_only_on_the_weights(tiny_dataset, tmp_path):
    from opensora_core.models import build_model
    from opensora_core.models.text_encoders import build_text_encoder
    from opensora_core.models.vae import build_vae
    from opensora_core.train.components import model_build_kwargs
    from opensora_core.train.preview import PreviewSampler

    cfg = _tiny(tiny_dataset, tmp_path)
    vae, te = build_vae(cfg.vae.as_dict()), build_text_encoder(cfg.text_encoder.as_dict())
    kwargs = model_build_kwargs(cfg, vae, te)
    torch.manual_seed(0)
    state_a = build_model(cfg.model.type, **kwargs).state_dict()
    # a fresh STDiT's output layer is zero (adaLN-zero), so two random inits sample alike: shift every weight
    state_b = {k: v + 0.05 if v.is_floating_point() else v for k, v in state_a.items()}
    sampler = PreviewSampler(cfg, build_model(cfg.model.type, **kwargs), vae, te)
    rng = torch.get_rng_state()
    first = sampler.grid(state_a, lambda: torch.autocast("cpu", enabled=False))
    assert torch.equal(rng, torch.get_rng_state()), "the preview must not draw from the global RNG"
    assert np.array_equal(first, sampler.grid(state_a, lambda: torch.autocast("cpu", enabled=False)))
    assert not np.array_equal(first, sampler.grid(state_b, lambda: torch.autocast("cpu", enabled=False)))


def test_preview_keys_are_checked(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="preview_prompts"):
        _tiny(tiny_dataset, tmp_path, preview_prompts=[])
    with pytest.raises(ConfigError, match="preview_evry"):
        _tiny(tiny_dataset, tmp_path, preview_evry=3)
    assert load_config(TINY_TRAIN).preview_every == 0  # off unless asked for
