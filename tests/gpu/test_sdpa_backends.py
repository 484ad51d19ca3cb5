"""PyTorch SDPA kernels vs the math reference in bf16.

On CUDA the model's ``"sdpa"`` backend (``opensora_core.models.attention.attention``) calls
``F.scaled_dot_product_attention`` and lets PyTorch pick the kernel (flash for unmasked bf16, memory-efficient
for masked cross-attention); on the CPU in bf16 with few keys it computes the ``"math"`` numerics (faster there
than the CPU flash kernel), which the last two tests pin. Here each kernel is forced with
``torch.nn.attention.sdpa_kernel`` (through ``attention`` on CUDA, calling SDPA directly on the CPU) and
compared, forward and backward, with the fp32 ``"math"`` backend on the same (bf16-rounded) q/k/v. The
``"math"`` backend in bf16 (the reference numerics: bf16 scores, fp32 softmax) is the yardstick: a kernel may
differ from the fp32 result by at most ``2 x (math-bf16 error) + 2e-3`` (relative L2), and never by more than
2e-2. Shapes: STDiT-XL's head dim 72 on CUDA (spatial 256 tokens, temporal 16, cross-attention to 120 caption
tokens with padding), smaller on CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from opensora_core.models.attention import CPU_MATH_MAX_KEYS, CPU_MATH_MAX_KEYS_COMPILED, attention
from tests.gpu.devices import CPU, CUDA, rel_error

KERNELS = {
    "cpu": [SDPBackend.FLASH_ATTENTION],
    "cuda": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
}
# (name, batch x heads, query tokens, key tokens, head dim, padded keys)
SHAPES = {
    "cpu": [("spatial", (2, 4), 64, 64, 72, False), ("cross", (2, 4), 64, 12, 72, True)],
    "cuda": [
        ("spatial", (32, 16), 256, 256, 72, False),
        ("temporal", (512, 16), 16, 16, 72, False),
        ("cross", (2, 16), 4096, 120, 72, True),
    ],
}
ABS_LIMIT = 2e-2


def _inputs(device: str, bh: tuple[int, int], nq: int, nk: int, d: int, padded: bool):
    g = torch.Generator().manual_seed(0)
    b, h = bh
    q, k, v = (torch.randn(b, h, n, d, generator=g).bfloat16().to(device) for n in (nq, nk, nk))
    grad = torch.randn(b, h, nq, d, generator=g).bfloat16().to(device)
    mask = None
    if padded:  # sample 0 sees its first 3/4 caption tokens, the others all
        keys = torch.ones(b, nk, dtype=torch.bool)
        keys[0, (3 * nk) // 4 :] = False
        mask = keys[:, None, None, :].to(device)
    return q, k, v, grad, mask


def _forward_backward(q, k, v, grad, mask, backend: str, dtype: torch.dtype):
    """backend: ours (``"math"``, ``"sdpa"``) or ``"kernel"``: SDPA itself with whatever kernel is forced."""
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    if backend == "kernel":
        out = F.scaled_dot_product_attention(*leaves, attn_mask=mask)
    else:
        out = attention(*leaves, backend, attn_mask=mask)
    out.backward(grad.to(dtype))
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_sdpa_kernels_match_math_in_bf16(device: str):
    checked = 0
    for name, bh, nq, nk, d, padded in SHAPES[device]:
        q, k, v, grad, mask = _inputs(device, bh, nq, nk, d, padded)
        ref_out, ref_grads = _forward_backward(q, k, v, grad, mask, "math", torch.float32)
        math_out, math_grads = _forward_backward(q, k, v, grad, mask, "math", torch.bfloat16)
        math_err = max(
            rel_error(math_out, ref_out),
            *(rel_error(a, b) for a, b in zip(math_grads, ref_grads, strict=True)),
        )
        for kernel in KERNELS[device]:
            if kernel == SDPBackend.FLASH_ATTENTION and padded and device == "cuda":
                continue  # CUDA flash takes no mask: PyTorch routes masked attention to the efficient kernel
            with sdpa_kernel([kernel]):
                backend = "sdpa" if device == "cuda" else "kernel"
                out, grads = _forward_backward(q, k, v, grad, mask, backend, torch.bfloat16)
            errors = [rel_error(out, ref_out)] + [
                rel_error(a, b) for a, b in zip(grads, ref_grads, strict=True)
            ]
            limit = min(2 * math_err + 2e-3, ABS_LIMIT)
            assert max(errors) <= limit, (
                f"{kernel.name} {name}: errors (out, dq, dk, dv) {errors} > {limit:.2e}"
            )
            assert out.dtype == torch.bfloat16
            checked += 1
    assert checked >= len(SHAPES[device])


def test_sdpa_backend_on_cpu_in_bf16_with_few_keys_is_the_math_numerics():
    """On the CPU, ``"sdpa"`` in bf16 with few keys equals ``"math"`` bitwise, forward and gradients, masked or
    not; with more keys than ``CPU_MATH_MAX_KEYS`` (eager) it is PyTorch's SDPA kernel again."""
    for _, bh, nq, nk, d, padded in SHAPES["cpu"]:
        assert nk <= CPU_MATH_MAX_KEYS
        q, k, v, grad, mask = _inputs("cpu", bh, nq, nk, d, padded)
        sdpa_out, sdpa_grads = _forward_backward(q, k, v, grad, mask, "sdpa", torch.bfloat16)
        math_out, math_grads = _forward_backward(q, k, v, grad, mask, "math", torch.bfloat16)
        assert torch.equal(sdpa_out, math_out)
        assert all(torch.equal(a, b) for a, b in zip(sdpa_grads, math_grads, strict=True))
        kernel_out, _ = _forward_backward(q, k, v, grad, mask, "kernel", torch.bfloat16)
        assert not torch.equal(kernel_out, math_out)  # the CPU flash kernel rounds differently: not it
    q, k, v, grad, _ = _inputs("cpu", (1, 2), 16, CPU_MATH_MAX_KEYS + 1, 32, False)
    sdpa_out, _ = _forward_backward(q, k, v, grad, None, "sdpa", torch.bfloat16)
    kernel_out, _ = _forward_backward(q, k, v, grad, None, "kernel", torch.bfloat16)
    assert torch.equal(sdpa_out, kernel_out)
    q, k, v, grad, _ = _inputs("cpu", (1, 2), 16, 8, 32, False)  # fp32, even with few keys: the kernel
    fp32_out, _ = _forward_backward(q, k, v, grad, None, "sdpa", torch.float32)
    assert torch.equal(fp32_out, _forward_backward(q, k, v, grad, None, "kernel", torch.float32)[0])


def test_sdpa_backend_on_cpu_in_bf16_under_compile_takes_lean_math_up_to_the_compiled_limit():
    """Under ``torch.compile`` (graph capture only: the ``eager`` backend) 128 keys take the math forward, which
    eager mode leaves to the SDPA kernel, with the lean softmax: its backward keeps the bf16 probabilities only,
    and its gradients are those of the math backend up to bf16 rounding."""
    assert CPU_MATH_MAX_KEYS < 128 <= CPU_MATH_MAX_KEYS_COMPILED
    q, k, v, grad, _ = _inputs("cpu", (1, 2), 16, 128, 32, False)
    compiled = torch.compile(lambda q, k, v: attention(q, k, v, "sdpa"), backend="eager", fullgraph=True)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = compiled(*leaves)
    out.backward(grad)
    math_out, math_grads = _forward_backward(q, k, v, grad, None, "math", torch.bfloat16)
    assert torch.equal(out, math_out)
    (dq, dk, dv), (math_dq, math_dk, math_dv) = [t.grad for t in leaves], math_grads
    assert torch.equal(dv, math_dv)  # probs^T @ grad: the same probabilities
    for lean_grad, math_grad in ((dq, math_dq), (dk, math_dk)):  # through the softmax backward
        assert not torch.equal(lean_grad, math_grad)
        assert rel_error(lean_grad, math_grad) < 1e-2
    scores = [t for t in saved if t.shape[-2:] == (16, 128)]  # the [B, H, Nq, Nk] tensors kept for backward
    assert [t.dtype for t in scores] == [torch.bfloat16]  # the cast probabilities, no fp32 copy
    assert not torch.equal(attention(q, k, v, "sdpa"), math_out)  # eager: the SDPA kernel
