"""STDiT (Open-Sora 1.0): state-dict layout, reference parity, x_mask, caption dropout, checkpointing."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from opensora_core.models import build_model, model_names
from opensora_core.models.attention import set_attn_backend
from opensora_core.models.checkpoint import load_checkpoint
from opensora_core.models.stdit import STDiT
from tests.conftest import shared_path
from tests.models.frame_mask_helpers import frames, run_capturing

TINY = dict(
    input_size=(4, 8, 8),
    hidden_size=32,
    depth=2,
    num_heads=4,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
)


def reference_keys(filename: str) -> list[tuple[str, list[int]]]:
    """The '# ---- full list' section of a reference key file as [(name, shape)]."""
    text = shared_path("reference", filename).read_text()
    body = text.split("# ---- full list", 1)[1].splitlines()[1:]
    rows = [line.split("\t") for line in body if line and not line.startswith("#")]
    return [(name, json.loads(shape)) for name, shape, _kind in rows]


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised projections random values so every branch affects the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def tiny_inputs(b=2, t=4, h=8, w=8, length=6, channels=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, h, w, generator=g)
    y = torch.randn(b, 1, length, channels, generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return x, torch.tensor([7, 620])[:b], y, mask


def test_xl2_state_dict_keys_shapes_order_and_parameter_count():
    expected = reference_keys("stdit_xl2_keys.txt")
    with torch.device("meta"):
        model = build_model(
            "STDiT-XL/2", input_size=(16, 32, 32), caption_channels=4096, model_max_length=120
        )
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == expected
    assert sum(p.numel() for p in model.parameters()) == 759_620_768


def _parity_setup():
    meta = json.loads(shared_path("reference", "parity", "stdit_v1_tiny_forward.json").read_text())
    path = shared_path("reference", "parity", "stdit_v1_tiny_forward.safetensors")
    tensors = load_file(str(path))
    model = STDiT(**meta["config"]).eval()
    missing, unexpected = load_checkpoint(model, path)
    assert missing == [] and unexpected == [k for k in tensors if k.startswith("io.")]
    return model, tensors


@pytest.mark.parametrize(("backend", "tol"), [("math", 1e-5), ("sdpa", 1e-4)])
def test_parity_with_reference_forward(backend, tol):
    model, io = _parity_setup()
    set_attn_backend(model, backend)
    with torch.no_grad():
        out = model(io["io.x"], io["io.t"], io["io.y"], io["io.mask"])
        out_no_mask = model(io["io.x"], io["io.t"], io["io.y"], mask=None)
    assert out.dtype == torch.float32 and out.shape == io["io.out"].shape
    assert (out - io["io.out"]).abs().max().item() <= tol
    assert (out_no_mask - io["io.out_mask_None"]).abs().max().item() <= tol


def test_official_state_dict_loads_with_or_without_positional_buffers():
    path = shared_path("reference", "parity", "stdit_v1_tiny_forward.safetensors")
    state = {k.removeprefix("model."): v for k, v in load_file(str(path)).items() if k.startswith("model.")}
    cfg = json.loads(shared_path("reference", "parity", "stdit_v1_tiny_forward.json").read_text())["config"]
    with_pos, without_pos = STDiT(**cfg), STDiT(**cfg)
    # the recomputed sin-cos tables equal the reference's (space_scale 0.5, w in the first half)
    assert torch.equal(with_pos.pos_embed, state["pos_embed"])
    assert torch.equal(with_pos.pos_embed_temporal, state["pos_embed_temporal"])
    with_pos.load_state_dict(state)  # strict, pos buffers present
    without_pos.load_state_dict({k: v for k, v in state.items() if not k.startswith("pos_embed")})
    for (k, a), (_, b) in zip(with_pos.state_dict().items(), without_pos.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # a checkpoint made for another resolution: its positional tables are ignored, never loaded
    other = dict(state, pos_embed=torch.zeros(1, 256, 64))
    with_pos.load_state_dict(other)
    assert with_pos.pos_embed.abs().sum() > 0


def test_model_pickles_and_still_keeps_positional_buffers_on_load():
    """The keep-positional-buffers load hook survives pickling (e.g. handing a model to another process)."""
    model = pickle.loads(pickle.dumps(STDiT(**TINY)))
    state = {
        k: torch.zeros_like(v) if k.startswith("pos_embed") else v for k, v in model.state_dict().items()
    }
    before = model.pos_embed.clone()
    model.load_state_dict(state)
    assert torch.equal(model.pos_embed, before) and model.pos_embed.abs().sum() > 0


def test_output_shapes_dtype_and_unknown_video_info_is_ignored():
    model = STDiT(**TINY).eval()
    x, t, y, mask = tiny_inputs()
    with torch.no_grad():
        out = model(x, t, y, mask, height=torch.tensor([64, 64]), fps=torch.tensor([24, 24]))
    assert out.shape == (2, 8, 4, 8, 8) and out.dtype == torch.float32
    no_sigma = STDiT(**{**TINY, "pred_sigma": False}).eval()
    with torch.no_grad():
        assert no_sigma(x, t, y, mask).shape == (2, 4, 4, 8, 8)
        # non-divisible sizes are padded, and sizes other than input_size get their own positional tables
        assert model(x[:, :, :3, :7, :5], t, y, mask).shape == (2, 8, 3, 7, 5)


def test_bf16_input_dtype_runs_and_returns_float32():
    model = STDiT(**{**TINY, "dtype": "bf16"}).to(torch.bfloat16).eval()
    x, t, y, mask = tiny_inputs()
    with torch.no_grad():
        out = model(x, t, y, mask)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_x_mask_switches_block_modulation_per_frame():
    # attn_temp.proj is zero at init, so frames do not interact: each frame's block output (the final layer's
    # input) depends on its own modulation only, which x_mask switches to the timestep-0 one for frames marked
    # False; unmasked frames leave the final layer as in the plain forward.
    torch.manual_seed(0)
    model = STDiT(**TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.abs().sum() == 0 and "attn_temp" not in name:
                p.normal_(0, 0.05)
    x, t, y, mask = tiny_inputs()
    x_mask = torch.tensor([[True, False, True, False], [False, True, True, True]])
    normal, (h_normal, *_) = run_capturing(model, model.final_layer, x, t, y, mask)
    _, (h_zero, *_) = run_capturing(model, model.final_layer, x, torch.zeros_like(t), y, mask)
    mixed, (h_mixed, *_) = run_capturing(model, model.final_layer, x, t, y, mask, x_mask=x_mask)
    with torch.no_grad():
        assert torch.equal(model(x, t, y, mask, x_mask=torch.ones_like(x_mask)), normal)
    h_normal, h_zero, h_mixed = (frames(h, 4) for h in (h_normal, h_zero, h_mixed))
    for b in range(2):
        for f in range(4):
            expected = h_normal[b, f] if x_mask[b, f] else h_zero[b, f]
            torch.testing.assert_close(h_mixed[b, f], expected, atol=1e-6, rtol=0)
            if x_mask[b, f]:
                torch.testing.assert_close(mixed[b, :, f], normal[b, :, f], atol=1e-6, rtol=0)
    assert not torch.allclose(h_normal[0, 1], h_zero[0, 1])


def test_x_mask_all_false_runs_blocks_at_timestep_zero_with_temporal_mixing():
    # the final layer gets the bare t and the bare timestep-0 embedding (STDiT has no video info), as in
    # Open-Sora 1.1's STDiT; its re-modulation of masked frames is tested with STDiT2's final layer
    model = randomize_(STDiT(**TINY)).eval()
    x, t, y, mask = tiny_inputs()
    _, (_, t_plain, *_) = run_capturing(model, model.final_layer, x, t, y, mask)
    _, (h_zero, t_zero, *_) = run_capturing(model, model.final_layer, x, torch.zeros_like(t), y, mask)
    all_false = torch.zeros(2, 4, dtype=torch.bool)
    _, (h, t_arg, _, t0_arg, *_) = run_capturing(model, model.final_layer, x, t, y, mask, x_mask=all_false)
    torch.testing.assert_close(h, h_zero, atol=1e-6, rtol=0)
    assert torch.equal(t_arg, t_plain) and torch.equal(t0_arg, t_zero)
    with pytest.raises(ValueError, match="x_mask must be"):
        model(x, t, y, mask, x_mask=torch.ones(2, 3, dtype=torch.bool))


def test_caption_dropout_on_cpu_training_only_and_forced():
    model = randomize_(STDiT(**{**TINY, "class_dropout_prob": 1.0}))
    x, t, y, mask = tiny_inputs()
    null = model.null_caption(2)
    assert null.shape == (2, 1, 6, 16) and torch.equal(null[1, 0], model.y_embedder.y_embedding)
    model.train()
    with torch.no_grad():
        dropped = model(x, t, y, mask)
        torch.testing.assert_close(dropped, model(x, t, null, mask))
    model.eval()
    with torch.no_grad():
        kept = model(x, t, y, mask)
        assert not torch.allclose(kept, dropped)
        forced = model(x, t, y, mask, force_drop_ids=torch.tensor([1, 0]))
    torch.testing.assert_close(forced[0], dropped[0])
    torch.testing.assert_close(forced[1], kept[1])


def test_grad_checkpointing_gives_same_gradients(monkeypatch):
    import torch.utils.checkpoint as ckpt

    calls = []
    original = ckpt.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ckpt, "checkpoint", counting)
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = randomize_(STDiT(**{**TINY, "grad_checkpointing": flag})).train()
        x, t, y, mask = tiny_inputs()
        model(x, t, y, mask).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert calls == [False, False]  # one call per block, non-reentrant
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_backends_agree():
    model = randomize_(STDiT(**TINY)).eval()
    x, t, y, mask = tiny_inputs()
    with torch.no_grad():
        sdpa = model(x, t, y, mask)
        math_out = set_attn_backend(model, "math")(x, t, y, mask)
    torch.testing.assert_close(sdpa, math_out, atol=1e-5, rtol=0)


def test_freeze_options():
    model = STDiT(**{**TINY, "freeze": "not_temporal"})
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if "attn_temp" in n
    }
    model = STDiT(**{**TINY, "freeze": "text"})
    assert all(not p.requires_grad for n, p in model.named_parameters() if "cross_attn" in n)
    with pytest.raises(ValueError, match="freeze must be"):
        STDiT(**{**TINY, "freeze": "everything"})


def test_build_model_names_overrides_and_errors(tmp_path):
    assert {"STDiT-XL/2", "STDiT2-XL/2"} <= set(model_names())
    model = build_model("STDiT-XL/2", **{**TINY, "enable_flashattn": True, "enable_layernorm_kernel": True})
    assert isinstance(model, STDiT) and model.attn_backend in ("sdpa", "flash")
    model = build_model("STDiT-XL/2", **TINY, attn_backend="math", grad_checkpointing=True)
    assert (
        model.attn_backend == "math" and model.blocks[0].attn.backend == "math" and model.grad_checkpointing
    )
    with pytest.raises(ValueError, match=r"did you mean 'STDiT-XL/2'\?.*valid types"):
        build_model("STDIT-XL/2")
    with pytest.raises(TypeError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        build_model("STDiT-XL/2", **TINY, hiden_size=3)
    with pytest.raises(TypeError, match="both enable_flashattn"):
        build_model("STDiT-XL/2", **TINY, enable_flashattn=True, enable_flash_attn=False)

    source = randomize_(STDiT(**TINY))
    torch.save(source.state_dict(), tmp_path / "ckpt.pth")
    loaded = build_model("STDiT-XL/2", **TINY, from_pretrained=str(tmp_path / "ckpt.pth"))
    for (k, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
