"""STDiT3 (Open-Sora 1.2): official state-dict layout, reference parity, x_mask, checkpointing, freezing.

The parity numbers in parity_data/os12_parity.* come from Open-Sora v1.2.0 (commit 17cce90) run on CPU in fp32
with the tiny weights stored in the same file (keys ``w.*``); inputs are ``in.*``, outputs ``out.*``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from opensora_core.models import build_model
from opensora_core.models.registry import model_caps
from opensora_core.models.stdit3 import STDiT3
from tests.conftest import shared_path
from tests.models.test_stdit import randomize_

PARITY = Path(__file__).parent / "parity_data" / "os12_parity"
B = 2


@cache
def parity() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of the Open-Sora 1.2 parity file."""
    return load_file(f"{PARITY}.safetensors"), json.loads(Path(f"{PARITY}.json").read_text())


def parity_model() -> STDiT3:
    """The tiny STDiT3 of the parity file with its stored weights (eval mode)."""
    data, meta = parity()
    model = STDiT3(**meta["tiny"]).eval()
    model.load_state_dict({k[2:]: v for k, v in data.items() if k.startswith("w.")}, strict=True)
    return model


def video_info(height: int, width: int, num_frames: int, fps: list[int]) -> dict[str, torch.Tensor]:
    """[B] tensors as the parity generator built them."""
    return {
        "height": torch.full((B,), float(height)),
        "width": torch.full((B,), float(width)),
        "num_frames": torch.full((B,), float(num_frames)),
        "fps": torch.tensor([float(f) for f in fps]),
    }


def reference_keys_v3(filename: str) -> list[tuple[str, list[int]]]:
    """A ``name<TAB>AxBxC`` key file (comment lines start with '#') as [(name, shape)]."""
    rows = []
    for line in shared_path("reference", filename).read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            rows.append((name, [int(s) for s in shape.split("x")]))
    return rows


def test_xl2_state_dict_keys_shapes_order_and_parameter_count():
    expected = reference_keys_v3("stdit3_xl2_keys.txt")
    assert len(expected) == 973
    with torch.device("meta"):
        xl = build_model("STDiT3-XL/2")
    assert [(k, list(v.shape)) for k, v in xl.state_dict().items()] == expected
    assert sum(p.numel() for p in xl.parameters()) == 1_207_643_972


def test_3b_has_the_same_layout_with_its_width():
    with torch.device("meta"):
        big = build_model("STDiT3-3B/2")
    sd = big.state_dict()
    assert big.hidden_size == 1872 and big.num_heads == 26 and len(big.spatial_blocks) == 28
    assert len(sd) == 973 and list(sd["rope.freqs"].shape) == [36]  # head_dim 72 as XL
    assert list(sd["temporal_blocks.27.attn.qkv.weight"].shape) == [3 * 1872, 1872]


@pytest.mark.parametrize("case", ["fwd_plain", "fwd_xmask", "fwd_odd"])
def test_forward_matches_open_sora_1_2(case):
    data, meta = parity()
    spec = meta["cases"][case]
    x = data[spec["x"]]
    x_mask = data["in.x_mask"][:, : x.shape[2]] if spec["x_mask"] else None
    with torch.no_grad():
        out = parity_model()(
            x, data["in.t"], data["in.y"], data["in.text_mask"], x_mask=x_mask, **video_info(*spec["info"])
        )
    expected = data[f"out.{case}"]
    assert out.shape == expected.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_all_true_x_mask_equals_none_and_conditioning_frames_change_only_by_t0():
    data, _ = parity()
    model = parity_model()
    x, t, y, tm = data["in.x"], data["in.t"], data["in.y"], data["in.text_mask"]
    info = video_info(64, 64, 16, [24, 12])
    with torch.no_grad():
        plain = model(x, t, y, tm, **info)
        all_true = model(x, t, y, tm, x_mask=torch.ones(B, 4, dtype=torch.bool), **info)
        at_zero = model(x, torch.zeros_like(t), y, tm, **info)
        all_false = model(x, t, y, tm, x_mask=torch.zeros(B, 4, dtype=torch.bool), **info)
    torch.testing.assert_close(all_true, plain, atol=0, rtol=0)
    # every frame conditioning: the blocks see timestep 0 everywhere; only the final layer's double norm differs
    assert not torch.allclose(all_false, plain)
    assert not torch.allclose(all_false, at_zero)


def test_fps_changes_the_output_and_missing_inputs_are_named():
    data, _ = parity()
    model = parity_model()
    x, t, y = data["in.x"], data["in.t"], data["in.y"]
    with torch.no_grad():
        a = model(x, t, y, fps=24, height=64, width=64)
        b = model(x, t, y, fps=torch.tensor([24.0, 24.0]), height=64, width=64)
        c = model(x, t, y, fps=12, height=64, width=64)
    torch.testing.assert_close(a, b, atol=0, rtol=0)  # scalars broadcast over the batch
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="needs fps="):
        model(x, t, y, height=64, width=64)
    with pytest.raises(ValueError, match="needs height="):
        model(x, t, y, fps=24)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    data, _ = parity()
    torch.manual_seed(0)
    plain = randomize_(STDiT3(**parity()[1]["tiny"])).train()
    ckpt = STDiT3(**parity()[1]["tiny"], grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    inputs = (data["in.x"], data["in.t"], data["in.y"], data["in.text_mask"])
    kwargs = dict(x_mask=data["in.x_mask"], **video_info(64, 64, 16, [24, 12]))
    plain(*inputs, **kwargs).square().mean().backward()
    ckpt(*inputs, **kwargs).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_fresh_temporal_blocks_add_only_biases_and_freezing_flags():
    fresh = STDiT3(**parity()[1]["tiny"])
    for blk in fresh.temporal_blocks:
        assert blk.attn.proj.weight.abs().sum() == 0 and blk.mlp.fc2.weight.abs().sum() == 0
    assert fresh.fps_embedder.mlp[2].weight.abs().sum() == 0
    temporal_only = STDiT3(**parity()[1]["tiny"], only_train_temporal=True)
    trainable = {n for n, p in temporal_only.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("temporal_blocks.") for n in trainable)
    frozen_text = STDiT3(**parity()[1]["tiny"], freeze_y_embedder=True)
    assert not any(p.requires_grad for p in frozen_text.y_embedder.parameters())
    assert all(p.requires_grad for p in frozen_text.spatial_blocks.parameters())


def test_reference_sequence_parallel_flag_is_refused_with_the_replacement():
    with pytest.raises(ValueError, match="sp_size > 1"):
        STDiT3(**parity()[1]["tiny"], enable_sequence_parallelism=True)


def test_capabilities_match_the_1_2_sampling_setup():
    caps = model_caps("STDiT3-XL/2")
    assert caps.multi_resolution == "STDiT2"  # what configs/opensora-v1-2 set
    assert {"height", "width", "fps", "num_frames"} <= set(caps.video_info)
    assert caps.frame_mask and caps.sequence_parallel and not caps.fixed_grid
