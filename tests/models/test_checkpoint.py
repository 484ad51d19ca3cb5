"""Checkpoint reading (formats, weights-only safety) and loading adaptations."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from opensora_core.models.checkpoint import (
    UnsafeCheckpointError,
    load_checkpoint,
    normalize_state_dict,
    read_state_dict,
)
from opensora_core.models.stdit import STDiT
from opensora_core.models.stdit2 import STDiT2

TINY = dict(
    input_size=(2, 4, 4), hidden_size=24, depth=1, num_heads=2, caption_channels=8, model_max_length=4
)


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.clone() for k, v in STDiT(**TINY).state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)  # safetensors stores keys sorted
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "wrapper", ["plain", "ema", "state_dict", "model", "module_prefix", "ema_model_prefix"]
)
def test_pickled_formats(tmp_path, state, wrapper):
    obj = {
        "plain": state,
        "ema": {"ema": state, "model": {"other": torch.zeros(1)}, "step": 3},
        "state_dict": {"state_dict": state, "epoch": 1},
        "model": {"model": state, "optimizer": {"lr": 1e-4}},
        "module_prefix": {f"module.{k}": v for k, v in state.items()},
        "ema_model_prefix": {"ema": {f"module.model.{k}": v for k, v in state.items()}},
    }[wrapper]
    torch.save(obj, tmp_path / "ckpt.pth")
    _assert_same(read_state_dict(tmp_path / "ckpt.pth"), state)


def test_safetensors_file_and_hugging_face_folders(tmp_path, state):
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    _assert_same(read_state_dict(tmp_path / "w.safetensors"), state)

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "STDiT2"}))
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    _assert_same(read_state_dict(folder), state)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    keys = list(state)
    half = len(keys) // 2
    save_file({k: state[k].contiguous() for k in keys[:half]}, sharded / "model-00001-of-00002.safetensors")
    save_file({k: state[k].contiguous() for k in keys[half:]}, sharded / "model-00002-of-00002.safetensors")
    weight_map = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert read_state_dict(sharded).keys() == state.keys()

    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    torch.save(state, bin_folder / "pytorch_model.bin")
    _assert_same(read_state_dict(bin_folder), state)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="without model weights"):
        read_state_dict(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


class NeedsCode:
    """A class a weights-only unpickler must refuse to construct."""

    def __init__(self) -> None:
        self.payload = "arbitrary"


def test_pickle_needing_code_execution_is_refused(tmp_path, state):
    path = tmp_path / "evil.pth"
    torch.save({"model": state, "extra": NeedsCode()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*evil\.pth.*NeedsCode"):
        read_state_dict(path)


def test_not_a_state_dict_is_a_clear_error():
    with pytest.raises(ValueError, match="not a state dict"):
        normalize_state_dict({"step": 3, "lr": torch.zeros(1)}, source="x.pth")


def test_2d_patch_weights_are_widened_to_3d():
    torch.manual_seed(0)
    model = STDiT(**TINY)
    state = model.state_dict()
    w2d = torch.randn(24, 4, 2, 2)  # image checkpoint (PixArt) conv weight
    state["x_embedder.proj.weight"] = w2d
    missing, unexpected = load_checkpoint(model, state)
    assert missing == [] and unexpected == []
    assert torch.equal(model.x_embedder.proj.weight, w2d.unsqueeze(2))


def test_null_caption_is_padded_or_truncated(state):
    longer = STDiT(**{**TINY, "model_max_length": 6})
    load_checkpoint(longer, state)
    y = state["y_embedder.y_embedding"]
    emb = longer.y_embedder.y_embedding
    assert torch.equal(emb[:4], y) and torch.equal(emb[4], y[-1]) and torch.equal(emb[5], y[-1])
    shorter = STDiT(**{**TINY, "model_max_length": 3})
    load_checkpoint(shorter, state)
    assert torch.equal(shorter.y_embedder.y_embedding, y[:3])


def test_positional_buffers_dropped_and_not_reported(state):
    bigger = STDiT(**{**TINY, "input_size": (4, 8, 8)})
    missing, unexpected = load_checkpoint(bigger, state)  # its pos_embed has a different shape: dropped
    assert missing == [] and unexpected == []
    no_pos = {k: v for k, v in state.items() if not k.startswith("pos_embed")}
    assert load_checkpoint(STDiT(**TINY), no_pos) == ([], [])
    # DiT/Latte-style names are dropped as well
    assert load_checkpoint(
        STDiT(**TINY), {**no_pos, "pos_embed_spatial": torch.zeros(1), "temp_embed": torch.zeros(1)}
    ) == ([], [])


def test_shape_mismatch_names_key_and_both_shapes(state):
    bad = dict(state)
    bad["t_block.1.weight"] = torch.zeros(10, 24)
    with pytest.raises(
        ValueError, match=r"'t_block\.1\.weight' has shape \[10, 24\] but the model expects \[144, 24\]"
    ):
        load_checkpoint(STDiT(**TINY), bad)


def test_missing_and_unexpected_are_returned_logged_and_strict_raises(state, caplog):
    partial = {k: v for k, v in state.items() if not k.startswith("final_layer")}
    partial["blocks.0.extra.weight"] = torch.zeros(2)
    with caplog.at_level(logging.WARNING, logger="opensora_core.models.checkpoint"):
        missing, unexpected = load_checkpoint(STDiT(**TINY), partial)
    assert missing == [
        "final_layer.scale_shift_table",
        "final_layer.linear.weight",
        "final_layer.linear.bias",
    ]
    assert unexpected == ["blocks.0.extra.weight"]
    assert "final_layer.linear.weight" in caplog.text and "blocks.0.extra.weight" in caplog.text
    with pytest.raises(RuntimeError, match="strict load failed"):
        load_checkpoint(STDiT(**TINY), partial, strict=True)


def test_stdit2_roundtrip_through_safetensors_folder(tmp_path):
    cfg = dict(hidden_size=24, depth=1, num_heads=2, caption_channels=8, model_max_length=4, qk_norm=True)
    torch.manual_seed(0)
    source = STDiT2(**cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "model.safetensors")
    torch.manual_seed(1)
    target = STDiT2(**cfg)
    assert load_checkpoint(target, tmp_path, strict=True) == ([], [])
    _assert_same(target.state_dict(), source.state_dict())
    assert "rope.freqs" in target.state_dict()
