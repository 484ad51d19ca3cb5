"""STDiT2 (Open-Sora 1.1): state-dict layout, dynamic sizes, video-info conditioning, x_mask, RoPE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opensora_core.models import build_model
from opensora_core.models.attention import set_attn_backend
from opensora_core.models.layers import (
    PositionEmbedding2D,
    RotaryEmbedding,
    T2IFinalLayer,
    get_2d_sincos_pos_embed,
)
from opensora_core.models.stdit2 import STDiT2
from tests.models.frame_mask_helpers import frames, run_capturing
from tests.models.test_stdit import randomize_, reference_keys

TINY = dict(
    hidden_size=48,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
    qk_norm=True,
    input_sq_size=64,
)


def info(b=2, height=64, width=64, num_frames=4, ar=1.0, fps=24):
    return dict(
        height=torch.full((b,), float(height)),
        width=torch.full((b,), float(width)),
        num_frames=torch.full((b,), float(num_frames)),
        ar=torch.full((b,), float(ar)),
        fps=torch.full((b,), float(fps)),
    )


def inputs(b=2, t=4, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, h, w, generator=g)
    y = torch.randn(b, 1, 6, 16, generator=g)
    mask = torch.ones(b, 6, dtype=torch.long)
    mask[1, 2:] = 0
    return x, torch.tensor([3, 800])[:b], y, mask


@pytest.fixture(scope="module")
def model() -> STDiT2:
    torch.manual_seed(0)
    return randomize_(STDiT2(**TINY)).eval()


def test_xl2_state_dict_keys_shapes_order_and_parameter_count():
    expected = reference_keys("stdit2_xl2_keys.txt")
    with torch.device("meta"):
        xl = build_model("STDiT2-XL/2", qk_norm=True, model_max_length=200, input_sq_size=512)
    assert [(k, list(v.shape)) for k, v in xl.state_dict().items()] == expected
    assert sum(p.numel() for p in xl.parameters()) == 767_452_100
    with torch.device("meta"):
        no_norm = build_model("STDiT2-XL/2", model_max_length=200)
    assert not any("q_norm" in k or "k_norm" in k for k in no_norm.state_dict())


def test_shapes_including_non_divisible_sizes_pad_and_crop(model):
    x, t, y, mask = inputs()
    with torch.no_grad():
        out = model(x, t, y, mask, **info())
        assert out.shape == (2, 8, 4, 8, 8) and out.dtype == torch.float32
        odd = x[:, :, :3, :7, :5]
        out_odd = model(odd, t, y, mask, **info(height=56, width=40, num_frames=3))
        assert out_odd.shape == (2, 8, 3, 7, 5)
        # padding is zero padding at the end; the cropped output equals the padded run's crop
        padded = torch.nn.functional.pad(odd, (0, 1, 0, 1))
        out_pad = model(padded, t, y, mask, **info(height=56, width=40, num_frames=3))
    torch.testing.assert_close(out_odd, out_pad[:, :, :, :7, :5])


def test_video_info_changes_the_output_and_scalars_broadcast(model):
    x, t, y, mask = inputs()
    base = info()
    with torch.no_grad():
        ref = model(x, t, y, mask, **base)
        for key, value in [
            ("fps", 8.0),
            ("num_frames", 16.0),
            ("ar", 0.5),
            ("height", 128.0),
            ("width", 32.0),
        ]:
            out = model(x, t, y, mask, **{**base, key: torch.full((2,), value)})
            assert not torch.allclose(out, ref), key
        scalars = model(x, t, y, mask, height=64, width=64, num_frames=4, ar=1.0, fps=24)
    torch.testing.assert_close(scalars, ref)
    with pytest.raises(ValueError, match="needs video info fps"):
        model(x, t, y, mask, **{k: v for k, v in base.items() if k != "fps"})


def test_x_mask_switches_block_modulation_per_frame():
    # with attn_temp.proj zero (its init) frames do not interact, so the blocks' output (the final layer's input)
    # of each frame follows its own modulation: timestep-0 modulation exactly for the frames marked False.
    torch.manual_seed(0)
    model = STDiT2(**TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0 and "attn_temp" not in name:
                p.normal_(0, 0.05)
    x, t, y, mask = inputs()
    x_mask = torch.tensor([[True, False, False, True], [True, True, True, False]])
    normal, (h_normal, *_) = run_capturing(model, model.final_layer, x, t, y, mask, **info())
    _, (h_zero, *_) = run_capturing(model, model.final_layer, x, torch.zeros_like(t), y, mask, **info())
    mixed, (h_mixed, *_) = run_capturing(model, model.final_layer, x, t, y, mask, x_mask=x_mask, **info())
    h_normal, h_zero, h_mixed = (frames(h, 4) for h in (h_normal, h_zero, h_mixed))
    for b in range(2):
        for f in range(4):
            expected = h_normal[b, f] if x_mask[b, f] else h_zero[b, f]
            torch.testing.assert_close(h_mixed[b, f], expected, atol=1e-6, rtol=0)
            if x_mask[b, f]:  # the final layer leaves unmasked frames as in the plain forward
                torch.testing.assert_close(mixed[b, :, f], normal[b, :, f], atol=1e-6, rtol=0)
    assert not torch.allclose(h_normal[0, 1], h_zero[0, 1])


def test_x_mask_final_layer_gets_bare_t_and_t0_plus_video_info(model):
    """Open-Sora 1.1: all-False masks run the blocks as timestep 0; the final layer gets the bare t for normal
    frames and t0 + data_info (the spatial video-info embedding) for the timestep-0 branch."""
    x, t, y, mask = inputs()
    _, (_, t_plain, *_) = run_capturing(model, model.final_layer, x, t, y, mask, **info())
    _, (h_zero, *_) = run_capturing(model, model.final_layer, x, torch.zeros_like(t), y, mask, **info())
    _, (t0_spc,) = run_capturing(model, model.t_block, x, torch.zeros_like(t), y, mask, **info())
    all_false = torch.zeros(2, 4, dtype=torch.bool)
    _, (h, t_arg, x_mask, t0_arg, T, S) = run_capturing(
        model, model.final_layer, x, t, y, mask, x_mask=all_false, **info()
    )
    torch.testing.assert_close(h, h_zero, atol=1e-6, rtol=0)
    assert torch.equal(t_arg, t_plain) and torch.equal(x_mask, all_false) and (T, S) == (4, 16)
    torch.testing.assert_close(t0_arg, t0_spc, atol=0, rtol=0)
    with torch.no_grad():
        assert torch.equal(
            model(x, t, y, mask, x_mask=torch.ones(2, 4, dtype=torch.bool), **info()),
            model(x, t, y, mask, **info()),
        )


def test_final_layer_masked_frames_remodulate_the_modulated_tokens():
    """T2IFinalLayer (Open-Sora 1.1): frames marked False are normed and modulated with t, then normed and
    modulated again with t0, before the linear."""
    torch.manual_seed(0)
    layer = T2IFinalLayer(8, 4, 2)
    x, t, t0 = torch.randn(2, 3 * 5, 8), torch.randn(2, 8), torch.randn(2, 8)
    x_mask = torch.tensor([[True, False, True], [False, False, True]])
    with torch.no_grad():
        out = layer(x, t, x_mask, t0, 3, 5).view(2, 3, 5, -1)
        plain = layer(x, t).view(2, 3, 5, -1)

        def modulate(v, cond):
            shift, scale = (layer.scale_shift_table[None] + cond[:, None]).chunk(2, dim=1)
            return layer.norm_final(v) * (1 + scale) + shift

        twice = layer.linear(modulate(modulate(x, t), t0)).view(2, 3, 5, -1)
    for b in range(2):
        for f in range(3):
            torch.testing.assert_close(out[b, f], plain[b, f] if x_mask[b, f] else twice[b, f])
    with pytest.raises(ValueError, match="x_mask needs t0"):
        layer(x, t, x_mask)


def test_backends_agree(model):
    x, t, y, mask = inputs()
    with torch.no_grad():
        sdpa = model(x, t, y, mask, **info())
        set_attn_backend(model, "math")
        math_out = model(x, t, y, mask, **info())
        set_attn_backend(model, "sdpa")
    torch.testing.assert_close(sdpa, math_out, atol=1e-5, rtol=0)


def test_grad_checkpointing_gives_same_gradients():
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        m = randomize_(STDiT2(**{**TINY, "grad_checkpointing": flag})).train()
        x, t, y, mask = inputs()
        m(x, t, y, mask, **info()).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "blocks.1.attn_temp.q_norm.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_caption_dropout_and_null_caption():
    m = randomize_(STDiT2(**{**TINY, "class_dropout_prob": 1.0})).train()
    x, t, y, mask = inputs()
    null = m.null_caption(2)
    assert null.shape == (2, 1, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, y, mask, **info()), m(x, t, null, mask, **info()))


def test_rope_is_interleaved_pairs_over_the_sequence():
    rope = RotaryEmbedding(4)
    assert rope.freqs.shape == (2,) and not rope.freqs.requires_grad
    torch.testing.assert_close(rope.freqs, torch.tensor([1.0, 0.01]))
    q = torch.randn(1, 1, 3, 4)
    out = rope.rotate_queries_or_keys(q)
    pos = 2
    for k, f in enumerate([1.0, 0.01]):
        a, b = q[0, 0, pos, 2 * k], q[0, 0, pos, 2 * k + 1]
        c, s = np.cos(pos * f), np.sin(pos * f)
        torch.testing.assert_close(
            out[0, 0, pos, 2 * k : 2 * k + 2], torch.stack([a * c - b * s, b * c + a * s])
        )
    torch.testing.assert_close(out[..., 0, :], q[..., 0, :])  # position 0 is not rotated


def test_dynamic_position_table_matches_numpy_table():
    table = PositionEmbedding2D(48)(torch.zeros(1), 5, 7, scale=0.75, base_size=6)
    expected = get_2d_sincos_pos_embed(48, (5, 7), scale=0.75, base_size=6)
    assert table.shape == (1, 35, 48)
    np.testing.assert_allclose(table[0].double().numpy(), expected, atol=1e-6)


def test_deepcopy_for_ema_keeps_one_shared_rope(model):
    import copy

    ema = copy.deepcopy(model)
    rope_users = {id(block.attn_temp.rope.__self__) for block in ema.blocks}
    assert rope_users == {id(ema.rope)} and ema.rope is not model.rope
    x, t, y, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(ema(x, t, y, mask, **info()), model(x, t, y, mask, **info()))
