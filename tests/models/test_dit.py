"""DiT (Open-Sora 1.0 port): official key layout, Meta DiT checkpoint loading, numerics, conditioning."""

from __future__ import annotations

import pytest
import torch

from opensora_core.models import build_model, model_names
from opensora_core.models.attention import set_attn_backend
from opensora_core.models.checkpoint import load_checkpoint
from opensora_core.models.dit import DiT
from tests.models import dit_reference as ref

TINY = dict(hidden_size=32, depth=2, num_heads=4, class_dropout_prob=0.1)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (zero-initialised modulations would hide most of the model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def tiny_dit(condition: str = "label_10", **kw) -> DiT:
    args = {**TINY, "input_size": (4, 8, 8), "condition": condition, "caption_channels": 16, **kw}
    return randomize_(DiT(**args)).eval()


def meta_dit_keys(depth: int, hidden: int, patch: int, in_ch: int, classes: int) -> dict[str, list[int]]:
    """Key -> shape of Meta's class-conditional image DiT checkpoint (DiT-XL-2-256x256.pt layout)."""
    c, out = hidden, 2 * in_ch
    keys = {
        "pos_embed": [1, (256 // 8 // patch) ** 2, c],
        "x_embedder.proj.weight": [c, in_ch, patch, patch],
        "x_embedder.proj.bias": [c],
        "t_embedder.mlp.0.weight": [c, 256],
        "t_embedder.mlp.0.bias": [c],
        "t_embedder.mlp.2.weight": [c, c],
        "t_embedder.mlp.2.bias": [c],
        "y_embedder.embedding_table.weight": [classes + 1, c],
    }
    for i in range(depth):
        b = f"blocks.{i}"
        keys |= {
            f"{b}.attn.qkv.weight": [3 * c, c],
            f"{b}.attn.qkv.bias": [3 * c],
            f"{b}.attn.proj.weight": [c, c],
            f"{b}.attn.proj.bias": [c],
            f"{b}.mlp.fc1.weight": [4 * c, c],
            f"{b}.mlp.fc1.bias": [4 * c],
            f"{b}.mlp.fc2.weight": [c, 4 * c],
            f"{b}.mlp.fc2.bias": [c],
            f"{b}.adaLN_modulation.1.weight": [6 * c, c],
            f"{b}.adaLN_modulation.1.bias": [6 * c],
        }
    keys |= {
        "final_layer.linear.weight": [patch * patch * out, c],
        "final_layer.linear.bias": [patch * patch * out],
        "final_layer.adaLN_modulation.1.weight": [2 * c, c],
        "final_layer.adaLN_modulation.1.bias": [2 * c],
    }
    return keys


def test_registry_names():
    assert {"DiT-XL/2", "DiT-XL/2x2", "Latte-XL/2", "Latte-XL/2x2", "PixArt-XL/2", "PixArtMS-XL/2"} <= set(
        model_names()
    )
    with pytest.raises(TypeError, match="learn_sigma"):
        build_model("DiT-XL/2", learn_sigm=False)


def test_xl2_label_matches_meta_dit_layout_and_675m_parameters():
    with torch.device("meta"):
        model = build_model("DiT-XL/2", input_size=(1, 32, 32), condition="label_1000")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    meta = meta_dit_keys(depth=28, hidden=1152, patch=2, in_ch=4, classes=1000)
    assert ours.pop("pos_embed_spatial") == meta.pop("pos_embed") == [1, 256, 1152]
    assert ours.pop("pos_embed_temporal") == [1, 1, 1152]
    meta["x_embedder.proj.weight"].insert(2, 1)  # Open-Sora widens the 2-D conv: [C, 4, 1, 2, 2]
    assert ours == meta
    # Meta DiT-XL/2 reports 675,129,632 parameters including its (frozen) pos_embed [1, 256, 1152].
    assert sum(p.numel() for p in model.parameters()) + 256 * 1152 == 675_129_632


def test_xl2_text_and_2x2_layouts():
    with torch.device("meta"):
        text = build_model("DiT-XL/2", input_size=(16, 32, 32))
        video = build_model("DiT-XL/2x2", input_size=(16, 32, 32), condition="label_101")
    sd = {k: list(v.shape) for k, v in text.state_dict().items()}
    assert sd["y_embedder.y_embedding"] == [1, 512]  # one pooled CLIP token
    assert sd["y_embedder.y_proj.fc1.weight"] == [1152, 512]
    assert sd["y_embedder.y_proj.fc2.weight"] == [1152, 1152]
    assert sd["pos_embed_temporal"] == [1, 16, 1152]
    assert len(sd) == 297 and "y_embedder.embedding_table.weight" not in sd
    sd2 = {k: list(v.shape) for k, v in video.state_dict().items()}
    assert sd2["x_embedder.proj.weight"] == [1152, 4, 2, 2, 2]
    assert sd2["final_layer.linear.weight"] == [2 * 2 * 2 * 8, 1152]
    assert sd2["pos_embed_temporal"] == [1, 8, 1152]
    assert sd2["y_embedder.embedding_table.weight"] == [102, 1152]


def test_meta_checkpoint_loads_and_matches_meta_image_dit(tmp_path):
    """A Meta-layout DiT checkpoint (2-D conv, pos_embed) loads unchanged and gives Meta's image DiT output."""
    src = tiny_dit("label_10", input_size=(1, 8, 8))
    meta = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith("pos_embed")}
    meta["x_embedder.proj.weight"] = meta["x_embedder.proj.weight"].squeeze(2)
    meta["pos_embed"] = ref.sincos_2d(32, 4, 4)[None]
    path = tmp_path / "DiT-tiny.pt"
    torch.save(meta, path)

    # As Open-Sora's 1x256x256-class config: an image model adds no temporal table (frame 0 would add cos(0)=1).
    model = DiT(**TINY, input_size=(1, 8, 8), condition="label_10", no_temporal_pos_emb=True).eval()
    missing, unexpected = load_checkpoint(model, path)
    assert missing == [] and unexpected == []
    set_attn_backend(model, "math")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    labels = torch.tensor([3, 10, 7])  # 10 = the null class
    with torch.no_grad():
        ours = model(x[:, :, None], t, labels)
        expected = ref.meta_image_dit(meta, x, t, labels, heads=4, depth=2)
    assert ours.shape == (3, 8, 1, 8, 8) and ours.dtype == torch.float32
    torch.testing.assert_close(ours[:, :, 0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("condition", ["label_10", "text"])
@pytest.mark.parametrize("no_temporal_pos_emb", [False, True])
def test_video_forward_matches_reference_formulation(condition, no_temporal_pos_emb):
    model = tiny_dit(condition, no_temporal_pos_emb=no_temporal_pos_emb)
    set_attn_backend(model, "math")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 4, 8, 8, generator=g)
    t = torch.tensor([3, 700])
    y = torch.tensor([1, 9]) if condition != "text" else torch.randn(2, 1, 1, 16, generator=g)
    with torch.no_grad():
        ours = model(x, t, y)
        expected = ref.video_dit(
            model.state_dict(), x, t, y, (1, 2, 2), heads=4, depth=2, temporal_pos=not no_temporal_pos_emb
        )
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the sdpa backend agrees too
        set_attn_backend(model, "sdpa")
        torch.testing.assert_close(model(x, t, y), expected, atol=1e-4, rtol=1e-4)


def test_2x2_patch_forward_backward_shapes():
    model = DiT(**TINY, input_size=(4, 8, 8), patch_size=(2, 2, 2), condition="text", caption_channels=16)
    x = torch.randn(2, 4, 4, 8, 8, requires_grad=True)
    out = model(x, torch.tensor([1, 2]), torch.randn(2, 1, 1, 16))
    assert out.shape == (2, 8, 4, 8, 8) and out.dtype == torch.float32
    out.square().mean().backward()
    assert model.final_layer.linear.weight.grad is not None
    assert model.final_layer.linear.weight.shape == (2 * 2 * 2 * 8, 32)


def test_learn_sigma_false_and_pooled_2d_text():
    model = randomize_(DiT(**TINY, input_size=(2, 8, 8), learn_sigma=False, caption_channels=16)).eval()
    y = torch.randn(2, 16)
    out = model(torch.randn(2, 4, 2, 8, 8), torch.tensor([5, 6]), y)
    assert out.shape == (2, 4, 2, 8, 8)  # no sigma channels
    with torch.no_grad():
        a = model(torch.ones(2, 4, 2, 8, 8), torch.tensor([5, 6]), y)
        b = model(torch.ones(2, 4, 2, 8, 8), torch.tensor([5, 6]), y[:, None, None])
    torch.testing.assert_close(a, b)


def test_full_attention_mixes_frames_and_temporal_positions_matter():
    model = tiny_dit("label_10")
    x = torch.randn(1, 4, 4, 8, 8)
    x2 = x.clone()
    x2[:, :, 3] += 1.0
    with torch.no_grad():
        a, b = (
            model(x, torch.tensor([10]), torch.tensor([2])),
            model(x2, torch.tensor([10]), torch.tensor([2])),
        )
        assert not torch.allclose(a[:, :, 0], b[:, :, 0])  # frame 3 changes frame 0: one attention over T*S
        model.pos_embed_temporal.zero_()
        c = model(x, torch.tensor([10]), torch.tensor([2]))
    assert not torch.allclose(a, c)


def test_label_vs_text_conditioning_and_null_condition():
    label = tiny_dit("label_10")
    assert label.y_embedder.embedding_table.num_embeddings == 11
    null = label.null_caption(3)
    assert null.dtype == torch.long and null.tolist() == [10, 10, 10]
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([4, 4])
    with torch.no_grad():
        same_x = label(x[:1].repeat(2, 1, 1, 1, 1), t, torch.tensor([1, 2]))
    assert not torch.allclose(same_x[0], same_x[1])  # the class changes the output

    text = tiny_dit("text")
    null_text = text.null_caption(2)
    assert null_text.shape == (2, 1, 1, 16)
    torch.testing.assert_close(null_text[1, 0], text.y_embedder.y_embedding)
    with torch.no_grad():
        forced = text(x, t, torch.randn(2, 1, 1, 16), force_drop_ids=torch.tensor([1, 1]))
        by_null = text(x, t, null_text)
    torch.testing.assert_close(forced, by_null)

    no_null = DiT(**{**TINY, "class_dropout_prob": 0.0}, input_size=(1, 8, 8), condition="label_10")
    assert no_null.y_embedder.embedding_table.num_embeddings == 10
    with pytest.raises(ValueError, match="no null class"):
        no_null.null_caption(1)


def test_bad_inputs_raise_clear_errors():
    label, text = tiny_dit("label_10"), tiny_dit("text")
    x, t = torch.randn(2, 4, 4, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="class ids"):
        label(x, t, torch.randn(2, 1, 1, 16))
    with pytest.raises(ValueError, match="pooled text features"):
        text(x, t, torch.randn(2, 1, 7, 16))
    with pytest.raises(ValueError, match="condition must be"):
        DiT(**TINY, condition="labels")
    with pytest.raises(ValueError, match="no frame conditioning"):
        label(x, t, torch.tensor([1, 2]), x_mask=torch.tensor([[True, False, True, True]] * 2))
    with torch.no_grad():  # an all-True frame mask and unknown video info are accepted
        a = label(
            x, t, torch.tensor([1, 2]), x_mask=torch.ones(2, 4, dtype=torch.bool), fps=torch.tensor([8, 8])
        )
        b = label(x, t, torch.tensor([1, 2]), mask=torch.ones(2, 5))
    torch.testing.assert_close(a, b)


def test_other_sizes_are_padded_and_cropped():
    model = tiny_dit("label_10")
    out = model(torch.randn(1, 4, 3, 10, 6), torch.tensor([1]), torch.tensor([0]))
    assert out.shape == (1, 8, 3, 10, 6)


def test_grad_checkpointing_same_gradients_and_dropout_in_training():
    torch.manual_seed(0)
    plain = tiny_dit("label_10").train()
    ckpt = tiny_dit("label_10", grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t, y = torch.randn(2, 4, 4, 8, 8), torch.tensor([1, 900]), torch.tensor([3, 4])
    drop = torch.tensor([0, 1])
    for m in (plain, ckpt):
        m(x, t, y, force_drop_ids=drop).square().mean().backward()
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)
    # random label dropout runs on CPU in training mode
    plain(x, t, y).sum().backward()


def test_state_dict_round_trip_without_positional_buffers():
    model = tiny_dit("text")
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("pos_embed")}
    fresh = DiT(**TINY, input_size=(4, 8, 8), condition="text", caption_channels=16)
    fresh.load_state_dict(sd)  # strict: positional buffers are optional
    with pytest.raises(RuntimeError):
        fresh.load_state_dict({**sd, "extra.weight": torch.zeros(1)})
    x, t, y = torch.randn(1, 4, 4, 8, 8), torch.tensor([3]), torch.randn(1, 1, 1, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x, t, y), model(x, t, y))


def test_cfg_sampling_with_the_models_null_caption():
    from opensora_core.schedulers import build_scheduler

    model = tiny_dit("text")
    z = torch.randn(2, 4, 4, 8, 8)
    y = torch.randn(2, 1, 1, 16)
    for name in ("iddpm", "dpm-solver"):
        sampler = build_scheduler(name, num_sampling_steps=2, cfg_scale=4.0)
        out = sampler.sample(model, z, y=y)  # y_null = model.null_caption(B)
        assert out.shape == z.shape and torch.isfinite(out).all()


def test_reference_constructor_spellings():
    """Open-Sora 1.0 keyword names construct directly (enable_flashattn; flash falls back to sdpa on CPU)."""
    model = DiT(
        **TINY,
        input_size=(1, 8, 8),
        condition="label_10",
        enable_flashattn=True,
        enable_layernorm_kernel=False,
    )
    assert model.attn_backend == "sdpa" or torch.cuda.is_available()
    latte = build_model(
        "Latte-XL/2",
        input_size=(1, 8, 8),
        hidden_size=32,
        num_heads=4,
        depth=1,
        enable_flashattn=False,
        attn_backend="math",
    )
    assert latte.attn_backend == "math" and latte.blocks[0].attn.backend == "math"
