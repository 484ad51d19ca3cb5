"""Latte (Open-Sora 1.0 port): DiT key layout, spatial/temporal alternation, temporal embedding at block 1."""

from __future__ import annotations

import logging

import pytest
import torch

from opensora_core.models import build_model
from opensora_core.models.attention import set_attn_backend
from opensora_core.models.checkpoint import load_checkpoint
from opensora_core.models.latte import Latte
from tests.models import dit_reference as ref

TINY = dict(input_size=(4, 8, 8), hidden_size=32, num_heads=4, condition="label_101", class_dropout_prob=0.1)


def randomize_(model: torch.nn.Module, only: str | None = None, seed: int = 0) -> torch.nn.Module:
    """Random weights (all, or only parameters whose name starts with ``only``)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if only is None or name.startswith(only) or not name.startswith("blocks."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_xl2_state_dict_is_the_dit_layout():
    with torch.device("meta"):
        latte = build_model("Latte-XL/2", input_size=(16, 32, 32), condition="label_101")
        dit = build_model("DiT-XL/2", input_size=(16, 32, 32), condition="label_101")
        latte22 = build_model("Latte-XL/2x2", input_size=(16, 32, 32), condition="label_101")
    shapes = {k: v.shape for k, v in latte.state_dict().items()}
    assert shapes == {k: v.shape for k, v in dit.state_dict().items()}
    assert len(shapes) == 293 and shapes["y_embedder.embedding_table.weight"] == (102, 1152)
    assert sum(p.numel() for p in latte.parameters()) == 673_799_072
    assert latte22.state_dict()["x_embedder.proj.weight"].shape == (1152, 4, 2, 2, 2)
    assert latte22.state_dict()["pos_embed_temporal"].shape == (1, 8, 1152)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_forward_matches_reference_formulation(depth):
    model = randomize_(Latte(**TINY, depth=depth)).eval()
    set_attn_backend(model, "math")
    g = torch.Generator().manual_seed(depth)
    x = torch.randn(2, 4, 4, 8, 8, generator=g)
    t, y = torch.tensor([10, 990]), torch.tensor([100, 101])
    with torch.no_grad():
        ours = model(x, t, y)
        expected = ref.latte(model.state_dict(), x, t, y, (1, 2, 2), heads=4, depth=depth)
    assert ours.shape == (2, 8, 4, 8, 8) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_text_condition_forward_backward():
    model = Latte(
        **{**TINY, "condition": "text"}, depth=2, caption_channels=16, grad_checkpointing=True
    ).train()
    randomize_(model)
    x = torch.randn(2, 4, 4, 8, 8)
    out = model(x, torch.tensor([1, 2]), torch.randn(2, 1, 1, 16), force_drop_ids=torch.tensor([1, 0]))
    assert out.shape == (2, 8, 4, 8, 8)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.null_caption(2).shape == (2, 1, 1, 16)


def test_spatial_blocks_never_mix_frames_temporal_blocks_never_mix_positions():
    x = torch.randn(1, 4, 4, 8, 8)
    t, y = torch.tensor([100]), torch.tensor([5])
    x_frame = x.clone()
    x_frame[:, :, 2] += 1.0  # change frame 2 only
    x_patch = x.clone()
    x_patch[:, :, :, :2, :2] += 1.0  # change spatial patch (0, 0) in every frame

    # only the spatial block 0 is active (block 1 keeps its zero adaLN init = identity)
    spatial = randomize_(Latte(**TINY, depth=2), only="blocks.0.").eval()
    with torch.no_grad():
        a, b = spatial(x, t, y), spatial(x_frame, t, y)
    changed = (a - b).abs().amax(dim=(0, 1, 3, 4)) > 1e-6  # per frame
    assert changed.tolist() == [False, False, True, False]

    # only the temporal block 1 is active: other spatial patches are untouched, other frames are not
    temporal = randomize_(Latte(**TINY, depth=2), only="blocks.1.").eval()
    with torch.no_grad():
        a, b, c = temporal(x, t, y), temporal(x_patch, t, y), temporal(x_frame, t, y)
    diff = (a - b).abs().amax(dim=(0, 1, 2))  # [H, W]
    assert diff[:2, :2].min() > 1e-6 and diff[2:].max() < 1e-6 and diff[:, 2:].max() < 1e-6
    assert ((a - c).abs().amax(dim=(0, 1, 3, 4)) > 1e-6).all()  # frame 2 reaches every frame


def test_frame_order_matters_only_through_temporal_blocks():
    """Permuting frames permutes the output of a spatial-only Latte; a temporal block breaks this."""
    x = torch.randn(1, 4, 4, 8, 8)
    perm = torch.tensor([2, 0, 3, 1])
    t, y = torch.tensor([100]), torch.tensor([5])
    spatial_only = randomize_(Latte(**TINY, depth=1)).eval()
    with torch.no_grad():
        torch.testing.assert_close(spatial_only(x[:, :, perm], t, y), spatial_only(x, t, y)[:, :, perm])
    both = randomize_(Latte(**TINY, depth=2)).eval()
    with torch.no_grad():
        assert not torch.allclose(both(x[:, :, perm], t, y), both(x, t, y)[:, :, perm], atol=1e-4)


def test_temporal_embedding_enters_at_block_1_regardless_of_flag(caplog):
    x, t, y = torch.randn(1, 4, 4, 8, 8), torch.tensor([7]), torch.tensor([1])
    with caplog.at_level(logging.WARNING):
        flagged = randomize_(Latte(**TINY, depth=2, no_temporal_pos_emb=True)).eval()
    assert "no effect" in caplog.text
    one_block = randomize_(Latte(**TINY, depth=1)).eval()
    with torch.no_grad():
        before = flagged(x, t, y), one_block(x, t, y)
        flagged.pos_embed_temporal.zero_()
        one_block.pos_embed_temporal.zero_()
        after = flagged(x, t, y), one_block(x, t, y)
    assert not torch.allclose(before[0], after[0])  # used by the temporal block 1
    torch.testing.assert_close(before[1], after[1])  # no temporal block, no temporal table


def test_official_ema_checkpoint_loads(tmp_path):
    """Latte-XL-2-256x256-ucf101.pt layout: {"ema": ...} with 2-D conv, pos_embed and temp_embed."""
    src = randomize_(Latte(**TINY, depth=2)).eval()
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith("pos_embed")}
    sd["x_embedder.proj.weight"] = sd["x_embedder.proj.weight"].squeeze(2)
    sd["pos_embed"] = torch.zeros(1, 16, 32)
    sd["temp_embed"] = torch.zeros(1, 4, 32)
    path = tmp_path / "Latte-tiny.pt"
    torch.save({"ema": sd}, path)
    model = Latte(**TINY, depth=2).eval()
    missing, unexpected = load_checkpoint(model, path)
    assert missing == [] and unexpected == []
    x, t, y = torch.randn(2, 4, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([3, 101])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), src(x, t, y))
