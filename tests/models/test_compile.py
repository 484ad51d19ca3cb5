"""torch.compile of the transformer blocks: no graph break in a block, few recompiles across bucket shapes,
compiled numbers equal to eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from opensora_core.models import build_model
from opensora_core.models.compile import compile_blocks, transformer_blocks

TINY = dict(
    in_channels=4,
    patch_size=(1, 2, 2),
    hidden_size=48,
    depth=2,
    num_heads=3,
    class_dropout_prob=0.0,
    caption_channels=16,
    model_max_length=6,
)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "stdit":
        model = build_model("STDiT-XL/2", input_size=(3, 8, 8), **TINY)
    else:
        model = build_model("STDiT2-XL/2", input_sq_size=64, qk_norm=True, **TINY)
    with torch.no_grad():  # zero-initialised projections get values so every branch reaches the output
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def _inputs(kind: str, t: int = 3, h: int = 8, w: int = 8, b: int = 2, x_mask: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        x=torch.randn(b, 4, t, h, w, generator=g),
        timestep=torch.tensor([10, 700] * b)[:b],
        y=torch.randn(b, 1, 6, 16, generator=g),
        mask=torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]] * b)[:b],
    )
    if x_mask:
        inputs["x_mask"] = torch.tensor([[False] + [True] * (t - 1)] * b)
    if kind == "stdit2":
        inputs.update(
            height=torch.full((b,), 8.0 * h),
            width=torch.full((b,), 8.0 * w),
            num_frames=torch.full((b,), float(t)),
            ar=torch.full((b,), h / w),
            fps=torch.full((b,), 24.0),
        )
    return inputs


def _block_args(model: nn.Module, inputs: dict, index: int) -> tuple:
    """The positional arguments block ``index`` receives in a forward of ``model``."""
    seen: list[tuple] = []
    handle = model.blocks[index].register_forward_pre_hook(lambda mod, args: seen.append(args))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    from torch._dynamo.utils import counters

    # reset() keeps dynamo's counters: clear them too, or graphs traced by an earlier test
    # (torch._dynamo.explain) are counted by _graphs() in a later one
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("kind", "index", "x_mask"), [("stdit", 0, False), ("stdit", 1, True), ("stdit2", 1, True)]
)
def test_block_forward_has_no_graph_break(kind, index, x_mask):
    # STDiT block 0 also takes the temporal table; a frame mask takes the per-frame modulation path;
    # the padded caption takes the masked cross-attention path
    model = _model(kind).train()
    args = _block_args(model, _inputs(kind, x_mask=x_mask), index)
    explained = torch._dynamo.explain(model.blocks[index])(*args)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_bucket_shapes_stop_recompiling():
    # dynamo decides recompiles (the backend does not): "eager" keeps this to tracing only
    model = _model("stdit2").train()
    assert compile_blocks(model, backend="eager") == 2

    def step(t, h, w, b=2):
        model.zero_grad(set_to_none=True)
        model(**_inputs("stdit2", t, h, w, b)).square().mean().backward()
        return _graphs()

    first = step(3, 8, 8)
    assert first == 1  # the blocks share one graph
    # another bucket (frames, height and width all differ): one recompile with those sizes symbolic
    after_resize = step(5, 6, 12)
    assert after_resize == 2
    for shape in [(4, 10, 6), (3, 8, 8), (6, 6, 6)]:  # further buckets and a repeat: no new graph
        assert step(*shape) == after_resize, shape


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["stdit", "stdit2"])
def test_compiled_forward_and_backward_match_eager(kind):
    eager = _model(kind).train()
    compiled = _model(kind).train()
    compiled.load_state_dict(eager.state_dict())
    compile_blocks(compiled)  # inductor (C++ on the CPU)
    inputs = _inputs(kind, x_mask=True)
    out_e, out_c = eager(**inputs), compiled(**inputs)
    assert (out_e - out_c).abs().max().item() <= 1e-4
    out_e.square().mean().backward()
    out_c.square().mean().backward()
    grads_c = dict(compiled.named_parameters())
    for name, p in eager.named_parameters():
        if not p.requires_grad:  # STDiT2's rope.freqs
            assert grads_c[name].grad is None, name
            continue
        assert torch.allclose(p.grad, grads_c[name].grad, rtol=1e-3, atol=1e-5), name


def test_compile_blocks_counts_and_keeps_keys():
    model = _model("stdit")
    keys = list(model.state_dict())
    assert compile_blocks(model, backend="eager") == len(transformer_blocks(model)) == 2
    assert list(model.state_dict()) == keys


def test_compile_blocks_refuses_a_model_without_blocks():
    with pytest.raises(ValueError, match="no transformer blocks"):
        compile_blocks(nn.Sequential(nn.Linear(2, 2)))


def test_tanh_gelu_under_compile_on_cpu_is_the_sigmoid_form_of_the_same_function():
    """``TanhGELU`` is ``F.gelu(approximate="tanh")`` bitwise in eager mode; captured by ``torch.compile`` on the
    CPU it computes ``x * sigmoid(2u)`` (the same function), which agrees to float rounding, gradient too."""
    from opensora_core.models.layers import TanhGELU, approx_gelu

    gelu = approx_gelu()
    assert isinstance(gelu, TanhGELU) and isinstance(gelu, nn.GELU) and gelu.approximate == "tanh"
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64).float().requires_grad_(True)
    reference = torch.nn.functional.gelu(x, approximate="tanh")
    assert torch.equal(gelu(x), reference)
    compiled = torch.compile(gelu, backend="eager", fullgraph=True)  # graph capture: is_compiling() is True
    out = compiled(x)
    assert not torch.equal(out, reference)  # the sigmoid form was taken
    assert torch.allclose(out, reference, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (ref_grad,) = torch.autograd.grad(reference.sum(), x)
    # atol 2e-6: where fp32 tanh saturates to -1 (x < -5) F.gelu's gradient is exactly 0, the true one ~ -1e-6
    assert torch.allclose(grad, ref_grad, rtol=1e-5, atol=2e-6)
    xb = x.detach().bfloat16()  # bf16 in and out: at most one unit in the last place apart (and tiny tails:
    # for x < -5 F.gelu gives -0.0 where the sigmoid form keeps the true ~ -1e-20)
    out_b, ref_b = compiled(xb), torch.nn.functional.gelu(xb, approximate="tanh")
    assert out_b.dtype == torch.bfloat16
    assert torch.allclose(out_b.float(), ref_b.float(), rtol=2**-8, atol=1e-6)
