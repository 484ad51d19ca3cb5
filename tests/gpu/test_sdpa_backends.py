"""PyTorch SDPA kernels vs the math reference in bf16, through ``opensora_core.models.attention.attention``.

The model's ``"sdpa"`` backend calls ``F.scaled_dot_product_attention`` and lets PyTorch pick the kernel (flash
on CUDA for unmasked bf16, memory-efficient for masked cross-attention; the flash CPU kernel on CPU). Here each
kernel is forced with ``torch.nn.attention.sdpa_kernel`` and compared, forward and backward, with the fp32
``"math"`` backend on the same (bf16-rounded) q/k/v. The ``"math"`` backend in bf16 (the reference numerics:
bf16 scores, fp32 softmax) is the yardstick: a kernel may differ from the fp32 result by at most
``2 x (math-bf16 error) + 2e-3`` (relative L2), and never by more than 2e-2. Shapes: STDiT-XL's head dim 72 on
CUDA (spatial 256 tokens, temporal 16, cross-attention to 120 caption tokens with padding), smaller on CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from opensora_core.models.attention import attention
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
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
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
                out, grads = _forward_backward(q, k, v, grad, mask, "sdpa", torch.bfloat16)
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
