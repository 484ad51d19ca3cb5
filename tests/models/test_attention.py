"""Attention backends and modules."""

from __future__ import annotations

import pytest
import torch

from opensora_core.models.attention import (
    Attention,
    MultiHeadCrossAttention,
    TextMask,
    attention,
    prepare_text_mask,
    resolve_attn_backend,
    set_attn_backend,
)
from opensora_core.models.layers import RotaryEmbedding


def _qkv(b=2, h=3, n=7, d=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype) for _ in range(3)]


def _reference(q, k, v, mask=None, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.einsum("bhnd,bhmd->bhnm", q.double(), k.double()) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.einsum("bhnm,bhmd->bhnd", logits.softmax(-1), v.double())


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_backends_match_float64_reference(backend):
    q, k, v = _qkv()
    out = attention(q, k, v, backend)
    assert out.shape == q.shape and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), _reference(q, k, v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_backends_with_bool_mask_and_custom_scale(backend):
    q, k, v = _qkv()
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 4:] = False
    out = attention(q, k, v, backend, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(out.double(), _reference(q, k, v, mask, 0.3), atol=1e-5, rtol=0)


def test_math_backend_softmax_in_fp32_for_bf16():
    q, k, v = _qkv(dtype=torch.bfloat16)
    out = attention(q, k, v, "math")
    assert out.dtype == torch.bfloat16
    expected = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).float().softmax(-1).to(torch.bfloat16) @ v
    assert torch.equal(out, expected)


def test_unknown_and_unusable_backends_raise_clear_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="unknown attention backend 'xformers'"):
        attention(q, k, v, "xformers")
    with pytest.raises(ValueError, match="does not take an attn_mask"):
        attention(q, k, v, "flash", attn_mask=torch.ones(1, 1, 1, 7, dtype=torch.bool))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            attention(q, k, v, "flash")
    with pytest.raises(ValueError, match="unknown attention backend"):
        Attention(16, 2, backend="fast")


def test_resolve_backend_prefers_explicit_and_falls_back_without_flash_attn():
    assert resolve_attn_backend("math", enable_flash_attn=True) == "math"
    assert resolve_attn_backend(None) == "sdpa"
    if not torch.cuda.is_available():
        assert resolve_attn_backend(None, enable_flash_attn=True) == "sdpa"


def test_self_attention_backends_agree_and_attend_hook_is_used():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qk_norm=True)
    x = torch.randn(2, 9, 32)
    out_sdpa = attn(x)
    attn.backend = "math"
    torch.testing.assert_close(attn(x), out_sdpa, atol=1e-5, rtol=0)

    seen = []

    def spy(q, k, v):
        seen.append(q.shape)
        return torch.zeros_like(q)

    attn._attend = spy
    out = attn(x)
    assert seen == [torch.Size([2, 4, 9, 8])]
    torch.testing.assert_close(out, attn.proj.bias.expand(2, 9, 32))


def test_self_attention_qk_norm_keys_and_rope_before_norm():
    assert set(Attention(16, 2).state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    keys = set(Attention(16, 2, qk_norm=True).state_dict())
    assert {"q_norm.weight", "k_norm.weight"} <= keys

    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    attn = Attention(16, 2, qk_norm=True, rope=rope.rotate_queries_or_keys)
    assert "rope.freqs" not in "".join(attn.state_dict())
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 16)
    captured = {}
    attn._attend = lambda q, k, v: captured.setdefault("q", q) * 0 + v
    attn(x)
    q = attn.qkv(x).reshape(1, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)[0]
    torch.testing.assert_close(captured["q"], attn.q_norm(rope.rotate_queries_or_keys(q)))


def _packed_reference(mod: MultiHeadCrossAttention, x, cond, mask):
    """Per-sample cross-attention over that sample's valid tokens only (the reference's packed semantics)."""
    outs = []
    for i in range(x.shape[0]):
        valid = cond[i][mask[i].bool()]
        q = mod.q_linear(x[i]).reshape(-1, mod.num_heads, mod.head_dim).transpose(0, 1)
        if valid.shape[0] == 0:
            o = torch.zeros_like(q)
        else:
            kv = mod.kv_linear(valid).reshape(-1, 2, mod.num_heads, mod.head_dim).permute(1, 2, 0, 3)
            o = ((q @ kv[0].transpose(-2, -1)) * mod.scale).softmax(-1) @ kv[1]
        outs.append(mod.proj(o.transpose(0, 1).reshape(x.shape[1], -1)))
    return torch.stack(outs)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_cross_attention_matches_packed_block_diagonal_semantics(backend):
    torch.manual_seed(0)
    mod = MultiHeadCrossAttention(32, 4, backend=backend)
    x, cond = torch.randn(3, 6, 32), torch.randn(3, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    out = mod(x, cond, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _packed_reference(mod, x, cond, mask), atol=1e-5, rtol=0)
    # zero valid tokens -> zero attention output -> only the projection bias remains
    torch.testing.assert_close(out[2], mod.proj.bias.expand(6, 32))
    # no mask == all tokens valid; [B, 1, 1, L] masks are accepted too
    torch.testing.assert_close(mod(x, cond), mod(x, cond, torch.ones(3, 1, 1, 5)), atol=1e-6, rtol=0)


def test_cross_attention_repeats_a_smaller_mask_batch_for_cfg():
    torch.manual_seed(0)
    mod = MultiHeadCrossAttention(16, 2)
    x, cond = torch.randn(4, 3, 16), torch.randn(4, 5, 16)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    torch.testing.assert_close(mod(x, cond, mask), mod(x, cond, mask.repeat(2, 1)))
    with pytest.raises(ValueError, match="text mask has 4 tokens"):
        mod(x, cond, mask[:, :4])


def test_prepared_text_mask_gives_the_same_output_as_the_raw_mask():
    torch.manual_seed(0)
    mod = MultiHeadCrossAttention(16, 2)
    x, cond = torch.randn(3, 4, 16), torch.randn(3, 5, 16)
    for mask in (
        [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
        [[1, 1, 0, 0, 0], [1] * 5, [1, 0, 0, 0, 0]],
    ):
        mask = torch.tensor(mask)
        prepared = prepare_text_mask(mask, 3, 5)
        assert isinstance(prepared, TextMask) and (prepared.has_token is None) == bool(mask.any(1).all())
        assert torch.equal(mod(x, cond, prepared), mod(x, cond, mask))
    assert prepare_text_mask(torch.ones(3, 5), 3, 5) is None and prepare_text_mask(None, 3, 5) is None
    with pytest.raises(ValueError, match=r"text mask is \[3, 5\] but the caption is \[3, 4\]"):
        mod(x, cond[:, :4], prepared)


_MASKS = {
    "short_prompts": [[1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]],
    "cfg_same_prompt": [[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]],
    "holes_and_empty": [[0, 1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0]],
    "all_empty": [[0] * 7] * 3,
}


def test_prepared_text_mask_describes_the_packing():
    prepared = prepare_text_mask(torch.tensor(_MASKS["holes_and_empty"]), 3, 7)
    assert (prepared.keep, prepared.uniform, prepared.max_seqlen) == (6, False, 6)
    assert prepared.cu_seqlens.tolist() == [0, 2, 2, 8] and prepared.cu_seqlens.dtype == torch.int32
    assert prepared.kv_index.tolist() == [1, 3, 12, 13, 14, 15, 16, 17]  # flat positions in [B, keep]
    assert prepared.has_token.tolist() == [True, False, True]
    same = prepare_text_mask(torch.tensor(_MASKS["cfg_same_prompt"]), 3, 7)
    assert (same.keep, same.uniform, same.has_token) == (3, True, None)
    assert prepare_text_mask(torch.tensor(_MASKS["all_empty"]), 3, 7).keep == 0


@pytest.mark.parametrize("backend", ["math", "sdpa"])
@pytest.mark.parametrize("case", sorted(_MASKS))
def test_packed_cross_attention_equals_the_dense_mask_forward_and_backward(backend, case):
    torch.manual_seed(0)
    mod = MultiHeadCrossAttention(32, 4, backend=backend)
    x, cond = torch.randn(3, 6, 32, requires_grad=True), torch.randn(3, 7, 32, requires_grad=True)
    mask = torch.tensor(_MASKS[case])
    results = []
    for packed in (True, False):
        mod.packed = packed
        mod.zero_grad(set_to_none=True)
        x.grad = cond.grad = None
        out = mod(x, cond, mask)
        out.square().sum().backward()
        results.append([out.detach(), x.grad, cond.grad, *(p.grad for p in mod.parameters())])
    for packed_value, dense_value in zip(*results, strict=True):
        assert torch.isfinite(packed_value).all()
        torch.testing.assert_close(packed_value, dense_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[0][0], _packed_reference(mod, x, cond, mask), atol=1e-5, rtol=0)


def _varlen_stand_in(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale
):
    """What ``flash_attn.flash_attn_varlen_func`` computes, segment by segment (q/k/v [total, H, D])."""
    assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32 and dropout_p == 0.0
    outs = []
    for i in range(len(cu_seqlens_q) - 1):
        qs = q[cu_seqlens_q[i] : cu_seqlens_q[i + 1]].transpose(0, 1)  # [H, n, D]
        ks, vs = (t[cu_seqlens_k[i] : cu_seqlens_k[i + 1]].transpose(0, 1) for t in (k, v))
        assert qs.shape[1] <= max_seqlen_q and ks.shape[1] <= max_seqlen_k
        if ks.shape[1] == 0:  # flash-attn writes zeros for an empty key segment
            outs.append(torch.zeros_like(qs).transpose(0, 1))
            continue
        attn = ((qs @ ks.transpose(-2, -1)) * softmax_scale).softmax(-1)
        outs.append((attn @ vs).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("case", sorted(_MASKS))
def test_flash_backend_packs_valid_tokens_for_the_varlen_kernel(monkeypatch, case):
    """The varlen inputs (packed kv, cu_seqlens, max_seqlen) give the dense result; the kernel is stood in."""
    import types

    from opensora_core.models import attention as attention_module

    stand_in = types.SimpleNamespace(flash_attn_varlen_func=_varlen_stand_in)
    monkeypatch.setattr(attention_module, "_flash_module", lambda q: stand_in)
    torch.manual_seed(0)
    mod = MultiHeadCrossAttention(32, 4, backend="flash")
    x, cond = torch.randn(3, 6, 32), torch.randn(3, 7, 32)
    mask = torch.tensor(_MASKS[case])
    out = mod(x, cond, mask)
    torch.testing.assert_close(out, _packed_reference(mod, x, cond, mask), atol=1e-5, rtol=0)


def test_models_check_the_text_mask_once_per_forward_not_per_block(monkeypatch):
    from opensora_core.models import build_model

    calls = []
    real_all = torch.Tensor.all
    monkeypatch.setattr(torch.Tensor, "all", lambda self, *a, **k: calls.append(1) or real_all(self, *a, **k))
    tiny = dict(input_size=(2, 8, 8), hidden_size=32, num_heads=4, caption_channels=8, model_max_length=5)
    x, t, y = torch.randn(2, 4, 2, 8, 8), torch.tensor([1.0, 500.0]), torch.randn(2, 1, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    counts = []
    for depth in (1, 4):
        model = build_model("STDiT-XL/2", depth=depth, **tiny).eval()
        calls.clear()
        with torch.no_grad():
            model(x, t, y, mask=mask)
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0  # four blocks read the mask back from the device as often as one


def test_set_attn_backend_walks_modules():
    model = torch.nn.Sequential(Attention(16, 2), torch.nn.Sequential(MultiHeadCrossAttention(16, 2)))
    set_attn_backend(model, "math")
    assert model[0].backend == "math" and model[1][0].backend == "math"
    with pytest.raises(ValueError, match="unknown attention backend"):
        set_attn_backend(model, "nope")


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_attention_dropout_only_in_training(backend):
    torch.manual_seed(0)
    attn = Attention(16, 2, attn_drop=0.5, backend=backend).eval()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(attn(x), attn(x))
    attn.train()
    assert not torch.allclose(attn(x), attn.eval()(x))


def test_cross_attention_benchmark_smoke():
    """benchmarks/cross_attention.py --tiny: every case runs and packed == dense within fp32 rounding."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cross_attention.py"
    spec = importlib.util.spec_from_file_location("cross_attention_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records = bench.main(["--tiny", "--threads", "0"])
    assert [r["name"].removeprefix("cross_attention_packed_vs_dense_") for r in records] == [
        "sample",
        "train_short",
        "train_long",
        "model_sample",
    ]
    for record in records:
        assert record["max_abs_diff"] < 1e-5 and record["ours"] > 0 and record["baseline"] > 0
        assert len(record["rounds"]) == 1 and len(record["loadavg"]["before"]) == 3
