"""PixArt / PixArtMS (Open-Sora 1.0 port): key layout, positional tables, numerics, size conditioning."""

from __future__ import annotations

import json

import pytest
import torch

from opensora_core.models import build_model
from opensora_core.models.attention import set_attn_backend
from opensora_core.models.checkpoint import load_checkpoint
from opensora_core.models.pixart import PixArt, PixArtMS
from opensora_core.models.stdit import STDiT
from opensora_core.schedulers import build_scheduler
from tests.conftest import shared_path
from tests.models import dit_reference as ref

TINY = dict(
    input_size=(4, 8, 8),
    hidden_size=48,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.1,
)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def inputs(b: int = 2, t: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, 8, 8, generator=g)
    y = torch.randn(b, 1, 6, 16, generator=g)
    mask = torch.ones(b, 6, dtype=torch.long)
    mask[0, 2:] = 0
    return x, torch.tensor([5, 640, 999][:b]), y, mask


def stdit_reference_keys() -> list[tuple[str, list[int]]]:
    text = shared_path("reference", "stdit_xl2_keys.txt").read_text()
    body = text.split("# ---- full list", 1)[1].splitlines()[1:]
    rows = [line.split("\t") for line in body if line and not line.startswith("#")]
    return [(name, json.loads(shape)) for name, shape, _kind in rows]


def test_xl2_layout_is_stdit_without_temporal_attention_and_610m_parameters():
    expected = [(k, s) for k, s in stdit_reference_keys() if ".attn_temp." not in k]
    with torch.device("meta"):
        model = build_model(
            "PixArt-XL/2", input_size=(16, 32, 32), caption_channels=4096, model_max_length=120
        )
        ms = build_model("PixArtMS-XL/2", input_size=(1, 128, 128))
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
    assert len(expected) == 438
    assert sum(p.numel() for p in model.parameters()) == 610_856_096

    ms_sd = {k: list(v.shape) for k, v in ms.state_dict().items()}
    extra = {k: s for k, s in ms_sd.items() if k.startswith(("csize_embedder", "ar_embedder"))}
    assert extra == {
        f"{name}.mlp.{i}.{kind}": shape
        for name in ("csize_embedder", "ar_embedder")
        for i, kind, shape in [(0, "weight", [384, 256]), (0, "bias", [384]), (2, "weight", [384, 384]), (2, "bias", [384])]
    }  # fmt: skip
    assert len(ms_sd) == 446 and ms_sd["pos_embed"] == [1, 4096, 1152]
    assert sum(p.numel() for p in ms.parameters()) == 610_856_096 + 2 * (256 * 384 + 384 + 384 * 384 + 384)


@pytest.mark.parametrize(
    ("space_scale", "time_scale", "no_temporal_pos_emb"),
    [(1.0, 1.0, False), (0.5, 2 / 3, False), (2.0, 1.0, True)],
)
def test_forward_matches_reference_formulation(space_scale, time_scale, no_temporal_pos_emb):
    model = PixArt(
        **TINY, space_scale=space_scale, time_scale=time_scale, no_temporal_pos_emb=no_temporal_pos_emb
    )
    randomize_(model).eval()
    set_attn_backend(model, "math")
    x, t, y, mask = inputs()
    sd = model.state_dict()
    kw = dict(patch=(1, 2, 2), heads=4, depth=2, space_scale=space_scale, time_scale=time_scale)
    kw["temporal_pos"] = not no_temporal_pos_emb
    with torch.no_grad():
        out, out_no_mask = model(x, t, y, mask), model(x, t, y)
        torch.testing.assert_close(out, ref.pixart(sd, x, t, y, mask, **kw), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out_no_mask, ref.pixart(sd, x, t, y, None, **kw), atol=1e-5, rtol=1e-5)
        set_attn_backend(model, "sdpa")
        torch.testing.assert_close(model(x, t, y, mask), out, atol=1e-4, rtol=1e-4)
    assert out.shape == (2, 8, 4, 8, 8) and out.dtype == torch.float32
    assert not torch.allclose(out, out_no_mask)  # the text mask matters


def test_self_attention_spans_all_frames():
    model = randomize_(PixArt(**TINY)).eval()
    x, t, y, mask = inputs()
    x2 = x.clone()
    x2[:, :, 3] += 1.0
    with torch.no_grad():
        a, b = model(x, t, y, mask), model(x2, t, y, mask)
    assert not torch.allclose(a[:, :, 0], b[:, :, 0])


def test_image_pixart_equals_stdit_with_identity_temporal_attention():
    """T = 1, no temporal table: PixArt == STDiT (reference-parity tested) whose attn_temp.proj is zero."""
    cfg = dict(TINY, input_size=(1, 8, 8), space_scale=0.5)
    stdit = randomize_(STDiT(**cfg)).eval()
    with torch.no_grad():
        for block in stdit.blocks:
            block.attn_temp.proj.weight.zero_()
            block.attn_temp.proj.bias.zero_()
    pixart = PixArt(**cfg, no_temporal_pos_emb=True).eval()
    sd = {k: v for k, v in stdit.state_dict().items() if ".attn_temp." not in k}
    pixart.load_state_dict(sd)
    x, t, y, mask = inputs(t=1)
    with torch.no_grad():
        torch.testing.assert_close(pixart(x, t, y, mask), stdit(x, t, y, mask), atol=1e-6, rtol=1e-6)


def test_positional_tables_use_base_size_and_scales():
    # 1x1024MS-like grid (non-square, non-square S): base_size = floor(sqrt(S)), positions / space_scale
    model = PixArtMS(**{**TINY, "input_size": (2, 24, 16), "depth": 1}, space_scale=2.0, time_scale=0.5)
    gh, gw = 12, 8
    assert model.base_size == 9  # floor(sqrt(96))
    torch.testing.assert_close(model.pos_embed[0], ref.sincos_2d(48, gh, gw, scale=2.0, base_size=9))
    temporal = ref.sincos_1d(48, torch.arange(2).numpy() / 0.5)
    torch.testing.assert_close(model.pos_embed_temporal[0], temporal)
    with torch.device("meta"):
        big = build_model("PixArtMS-XL/2", input_size=(1, 240, 64), space_scale=2.0, no_temporal_pos_emb=True)
    assert big.base_size == 61 and big.pos_embed.shape == (1, 3840, 1152)


def test_pixart_ms_size_conditioning():
    model = randomize_(PixArtMS(**TINY)).eval()
    set_attn_backend(model, "math")
    x, t, y, mask = inputs()
    hw = torch.tensor([[256.0, 512.0], [512.0, 256.0]])
    ar = hw[:, :1] / hw[:, 1:]
    with torch.no_grad():
        out = model(x, t, y, mask, data_info={"hw": hw, "ar": ar})
        expected = ref.pixart(model.state_dict(), x, t, y, mask, (1, 2, 2), 4, 2, size_info=(hw, ar))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        # height/width kwargs (STDiT2-style video info), ar defaulting to height / width
        by_kwargs = model(x, t, y, mask, height=hw[:, 0], width=hw[:, 1], fps=torch.tensor([8, 8]))
        torch.testing.assert_close(by_kwargs, out)
        # the size and the aspect ratio both change the output
        other_hw = model(x, t, y, mask, data_info={"hw": hw.flip(0), "ar": ar})
        other_ar = model(x, t, y, mask, data_info={"hw": hw, "ar": ar.flip(0)})
        assert not torch.allclose(other_hw, out) and not torch.allclose(other_ar, out)
        # one data_info row for the whole batch is repeated (as under CFG)
        single = model(x, t, y, mask, data_info={"hw": hw[:1], "ar": ar[:1]})
        both_same = model(x, t, y, mask, data_info={"hw": hw[:1].repeat(2, 1), "ar": ar[:1].repeat(2, 1)})
        torch.testing.assert_close(single, both_same)
    with pytest.raises(ValueError, match="needs the image size"):
        model(x, t, y, mask)
    with pytest.raises(ValueError, match="lacks"):
        model(x, t, y, mask, data_info={"hw": hw})
    with pytest.raises(ValueError, match="divisible by 3"):
        PixArtMS(**{**TINY, "hidden_size": 32})


def test_official_pixart_checkpoint_loads(tmp_path):
    """PixArt-XL-2-512x512.pth layout: {"state_dict": ...}, 2-D patch conv, pos_embed of the image size."""
    src = randomize_(PixArt(**TINY)).eval()
    sd = {k: v.clone() for k, v in src.state_dict().items() if not k.startswith("pos_embed")}
    sd["x_embedder.proj.weight"] = sd["x_embedder.proj.weight"].squeeze(2)
    sd["pos_embed"] = torch.zeros(1, 64, 48)
    path = tmp_path / "PixArt-tiny.pth"
    torch.save({"state_dict": sd}, path)
    model = PixArt(**TINY).eval()
    missing, unexpected = load_checkpoint(model, path)
    assert missing == [] and unexpected == []
    x, t, y, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, mask), src(x, t, y, mask))


def test_null_caption_cfg_sampling_and_errors():
    model = randomize_(PixArtMS(**TINY)).eval()
    null = model.null_caption(2)
    assert null.shape == (2, 1, 6, 16)
    torch.testing.assert_close(null[0, 0], model.y_embedder.y_embedding)
    x, t, y, mask = inputs()
    sampler = build_scheduler("iddpm", num_sampling_steps=2, cfg_scale=4.0)
    hw = torch.tensor([[64.0, 64.0]])
    out = sampler.sample(model, x, y=y, mask=mask, data_info={"hw": hw, "ar": torch.ones(1, 1)})
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="no frame conditioning"):
        model(
            x,
            t,
            y,
            mask,
            x_mask=torch.tensor([[False, True, True, True]] * 2),
            height=hw[0, :1],
            width=hw[0, 1:],
        )
    with pytest.raises(ValueError, match="freeze"):
        PixArt(**TINY, freeze="not_temporal")


def test_training_freeze_checkpointing_and_padding():
    frozen = PixArt(**TINY, freeze="text")
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all("cross_attn" not in n for n in trainable)
    assert any("cross_attn" in n for n, _ in frozen.named_parameters())

    plain = randomize_(PixArt(**TINY, drop_path=0.0)).train()
    ckpt = PixArt(**TINY, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x, t, y, mask = inputs()
    drop = torch.tensor([1, 0])
    for m in (plain, ckpt):
        m(x, t, y, mask, force_drop_ids=drop).square().mean().backward()
    for (name, p1), p2 in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)

    dropping = PixArt(**TINY, drop_path=0.5).train()
    assert dropping(x, t, y, mask).shape == (
        2,
        8,
        4,
        8,
        8,
    )  # stochastic depth + random caption dropout on CPU
    odd = PixArt(**TINY).eval()
    assert odd(torch.randn(1, 4, 3, 10, 6), t[:1], y[:1], mask[:1]).shape == (1, 8, 3, 10, 6)
