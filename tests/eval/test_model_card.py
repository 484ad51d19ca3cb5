"""opensora_core.eval.model_card: one registered model name per family and clip size; the markdown card."""

from __future__ import annotations

import pytest

from opensora_core.eval.gate import GateDecision
from opensora_core.eval.model_card import default_model_name, model_card, resolve_model_name


def test_default_names_separate_families_and_sizes():
    def cfg(model, **dataset):
        return {"model": {"type": model}, "dataset": dataset}

    assert default_model_name(cfg("STDiT-XL/2", type="VideoTextDataset", image_size=[256, 256])) == (
        "opensora-stdit-256"
    )
    assert default_model_name(cfg("STDiT-XL/2", image_size=[512, 512])) == "opensora-stdit-512"
    assert (
        default_model_name(cfg("STDiT2-XL/2", type="VariableVideoTextDataset")) == "opensora-stdit2-multires"
    )
    assert default_model_name(cfg("Latte-XL/2", image_size=[240, 426])) == "opensora-latte-240x426"
    with pytest.raises(ValueError, match="model.type"):
        default_model_name({})
    assert resolve_model_name(" my-model ", "unused://x") == "my-model"


def test_presets_register_under_their_own_names():
    from opensora_core.config import load_config
    from workflows.train import PRESETS

    names = set()
    for preset in PRESETS.values():
        overrides = list(preset.parameters["cfg_options"])  # the train step applies them as KEY=VALUE
        cfg = load_config(preset.parameters["config"], overrides=overrides)
        names.add(default_model_name(cfg.to_dict()))
    assert names == {"opensora-stdit-256", "opensora-stdit-512", "opensora-stdit2-multires"}


def test_model_card_has_metrics_gate_and_lineage():
    card = model_card(
        "s3://ckpt/run/epoch1-global_step10",
        {
            "model": {"type": "STDiT-XL/2"},
            "vae": {"type": "identity"},
            "text_encoder": {"from_pretrained": "t5"},
        },
        {"val_loss": 0.02, "val_loss/t0012": 0.1, "colour_accuracy": 0.8},
        {"dataset_uri": "s3://data/meta.csv", "image": ""},
        GateDecision(True, ("val_loss_improvement=0.98 >= 0.1: pass",)),
    )
    assert "| val_loss | 0.02 |" in card and "| colour_accuracy | 0.8 |" in card
    assert "t0012" not in card  # per-timestep values stay in the MLflow run
    assert "## Gate: passed (champion)" in card and "- dataset_uri: `s3://data/meta.csv`" in card
    assert "image" not in card.split("## Lineage")[1]
