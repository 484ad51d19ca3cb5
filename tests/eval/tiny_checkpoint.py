"""A training-style checkpoint folder of the demo's tiny STDiT, built without training (for fast tests)."""

from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "configs" / "debug" / "demo.py"


def make_tiny_checkpoint(folder: Path, seed: int = 0, global_step: int = 7) -> Path:
    """Write ``folder/000-STDiT-XL-2/epoch0-global_step{N}/`` like ``opensora_core.train`` does: model and EMA
    weights (random, from ``seed``), resolved config, running states and the completion marker."""
    import torch
    from safetensors.torch import save_file

    from opensora_core.config import load_config
    from opensora_core.eval.evaluate import sampling_config
    from opensora_core.sample import load_sampling_models

    ckpt = Path(folder) / "000-STDiT-XL-2" / f"epoch0-global_step{global_step}"
    ckpt.mkdir(parents=True)
    cfg = load_config(DEMO_CONFIG, overrides={"dataset.data_path": str(Path(folder) / "meta.csv")})
    cfg.save(ckpt)
    torch.manual_seed(seed)
    model = load_sampling_models(sampling_config(ckpt / "config.json", None, folder / "unused"), "cpu").model
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    save_file(state, str(ckpt / "ema.safetensors"), metadata={"format": "pt"})
    (ckpt / "running_states.json").write_text(
        json.dumps({"epoch": 0, "step": global_step, "global_step": global_step, "mlflow_run_id": None})
    )
    (ckpt / "_COMPLETE").write_text(json.dumps({"global_step": global_step}))
    return ckpt
