"""Attention backends and the attention modules of the Open-Sora model zoo.

Backends (all take q/k/v shaped [B, H, N, D] and return [B, H, N_q, D]):
- ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, no [N, N] matrix
  kept for backward where the platform has one). On the CPU in bf16/fp16 with few keys it computes the
  ``"math"`` forward instead (bf16 scores, fp32 softmax: the reference's numerics), because there PyTorch's
  CPU flash kernel is slower than two batched matmuls on the bf16 matrix units. Under ``torch.compile`` the
  softmax's backward then works from the probabilities it returned (bf16) rather than keeping their fp32 copy
  too (:class:`_LeanSoftmax`: 42 instead of 66 MiB saved per spatial attention below, and faster). Measured
  fwd+bwd, 8192 query tokens x 6 heads x 64, 2 threads, flash / math eager / math compiled / lean compiled
  (ms): 16 keys 118 / 15 / 17 / 18, 256 keys 62 / 90 / 48 / 30; cross-attention to 120 keys
  24 / 29 / 18 / 17; 512 keys flash 72, math eager 187, math compiled 100. Hence math up to
  :data:`CPU_MATH_MAX_KEYS` keys in eager mode and lean math up to :data:`CPU_MATH_MAX_KEYS_COMPILED` under
  ``torch.compile``; fp32 and CUDA always take SDPA.
- ``"flash"``: ``flash_attn.flash_attn_func`` on CUDA tensors in fp16/bf16; a clear error otherwise.
- ``"math"``: the reference numerics, ``softmax(float32((q * scale) @ k^T)).to(dtype) @ v``.

Self-attention keeps its attention core in one overridable call, ``Attention._attend(q, k, v)`` on
[B, H, N, D], so sequence parallelism (Ulysses all-to-all) can be wrapped around it from outside.

Cross-attention takes the caption mask as a tensor or as a :class:`TextMask` that a model prepares once per
forward, or a sampler once per video (:func:`prepare_text_mask`, in ``opensora_core.utils.text_mask``), so the
mask's host-side checks do not stall every block on a GPU. Padded captions are packed (the padding cut off;
flash-attn's varlen kernel where flash-attn runs), see :class:`MultiHeadCrossAttention`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from opensora_core.models.layers import RMSNorm
from opensora_core.utils.text_mask import TextMask, prepare_text_mask

__all__ = [
    "ATTN_BACKENDS",
    "Attention",
    "MultiHeadCrossAttention",
    "TextMask",
    "CPU_MATH_MAX_KEYS",
    "CPU_MATH_MAX_KEYS_COMPILED",
    "attention",
    "cpu_math_route",
    "flash_attn_available",
    "prepare_text_mask",
    "resolve_attn_backend",
    "set_attn_backend",
]

ATTN_BACKENDS: tuple[str, ...] = ("sdpa", "flash", "math")


def flash_attn_available() -> bool:
    """True when the ``flash_attn`` package is importable and CUDA is available."""
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def _check_backend(backend: str) -> str:
    if backend not in ATTN_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(ATTN_BACKENDS)}")
    return backend


def resolve_attn_backend(attn_backend: str | None, enable_flash_attn: bool = False) -> str:
    """Pick the backend from our ``attn_backend`` and Open-Sora's ``enable_flash_attn`` flag.

    An explicit attn_backend wins. ``enable_flash_attn=True`` means ``"flash"`` where flash-attn is usable and
    falls back to ``"sdpa"`` elsewhere (so Open-Sora training configs also run on CPU).
    """
    if attn_backend is not None:
        return _check_backend(attn_backend)
    if enable_flash_attn and flash_attn_available():
        return "flash"
    return "sdpa"


CPU_MATH_MAX_KEYS = 64
CPU_MATH_MAX_KEYS_COMPILED = 256


def cpu_math_route(q: torch.Tensor, k: torch.Tensor) -> str | None:
    """How ``"sdpa"`` attends q [.., Nq, D] to k [.., Nk, D]: ``"math"`` (bf16/fp16 on the CPU, at most
    :data:`CPU_MATH_MAX_KEYS` keys), ``"lean"`` (the same under ``torch.compile``, at most
    :data:`CPU_MATH_MAX_KEYS_COMPILED` keys) or None (PyTorch's SDPA). Measurements: module docstring."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return None
    if torch.compiler.is_compiling():
        return "lean" if k.shape[-2] <= CPU_MATH_MAX_KEYS_COMPILED else None
    return "math" if k.shape[-2] <= CPU_MATH_MAX_KEYS else None


class _LeanSoftmax(torch.autograd.Function):
    """``softmax(float32(scores))`` cast back to the scores' dtype; the backward uses that returned tensor.

    Forward values equal ``scores.float().softmax(-1).to(scores.dtype)`` bitwise. Autograd of that expression
    keeps the fp32 probabilities for the softmax backward as well as the cast ones for ``probs @ v``; this keeps
    the cast ones only (the gradients then differ from it by bf16 rounding, as a fused kernel's do).
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.float().softmax(dim=-1).to(scores.dtype)
        ctx.save_for_backward(probs)
        return probs

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (probs,) = ctx.saved_tensors
        p, g = probs.float(), grad.float()
        return (p * (g - (g * p).sum(dim=-1, keepdim=True))).to(probs.dtype)


def _math_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
    lean: bool = False,
) -> torch.Tensor:
    attn = (q * scale) @ k.transpose(-2, -1)  # [B, H, Nq, Nk] in the input dtype
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    if attn.dtype == torch.float32:
        attn = attn.softmax(dim=-1)
    elif lean:
        attn = _LeanSoftmax.apply(attn)
    else:
        attn = attn.to(torch.float32).softmax(dim=-1).to(q.dtype)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def _flash_module(q: torch.Tensor):
    """The ``flash_attn`` module for CUDA fp16/bf16 ``q``; a clear error naming the alternative otherwise."""
    if not q.is_cuda:
        raise RuntimeError(
            "attention backend 'flash' needs CUDA tensors; use attn_backend='sdpa' on CPU "
            "(or set_attn_backend(model, 'sdpa'))"
        )
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise RuntimeError(
            f"attention backend 'flash' needs fp16/bf16 inputs, got {q.dtype}; use 'sdpa' for fp32"
        )
    try:
        import flash_attn
    except ImportError as exc:
        raise RuntimeError(
            "attention backend 'flash' needs the flash-attn package (installed in the train image); "
            "use attn_backend='sdpa' instead"
        ) from exc
    return flash_attn


def _flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float = 0.0
) -> torch.Tensor:
    out = _flash_module(q).flash_attn_func(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout_p, softmax_scale=scale
    )
    return out.transpose(1, 2)  # [B, H, N, D]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention on [B, H, N, D] tensors with the chosen backend.

    attn_mask: bool (True = attend) or additive float, broadcastable to [B, H, Nq, Nk]; not supported by
    ``"flash"``. scale defaults to 1/sqrt(D). dropout_p: dropout on the attention weights (pass 0 in eval).
    Returns [B, H, Nq, D] in q's dtype. ``"sdpa"`` computes the ``"math"`` forward where :func:`cpu_math_route`
    says so (bf16/fp16 on the CPU with few keys).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if backend == "sdpa":
        route = cpu_math_route(q, k)
        if route is None:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale
            )
        return _math_attention(q, k, v, attn_mask, scale, dropout_p, lean=route == "lean")
    if backend == "math":
        return _math_attention(q, k, v, attn_mask, scale, dropout_p)
    if backend == "flash":
        if attn_mask is not None:
            raise ValueError("attention backend 'flash' does not take an attn_mask; use 'sdpa' or 'math'")
        return _flash_attention(q, k, v, scale, dropout_p)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(ATTN_BACKENDS)}")


class Attention(nn.Module):
    """Multi-head self-attention (keys ``qkv``, ``q_norm``, ``k_norm``, ``proj``).

    x [B, N, C] -> [B, N, C]. Optional qk-norm (RMSNorm over head_dim, weight only, eps 1e-6) and an optional
    ``rope`` callable applied to q and k ([B, H, N, D]) before the qk-norm, as in the reference.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "sdpa",
        rope: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.backend = _check_backend(backend)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # A plain callable (e.g. a bound method of the model's shared RotaryEmbedding), not a submodule, so
        # its parameters are not duplicated under every block in the state dict.
        self.rope = rope

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention core: q, k, v [B, H, N, D] -> [B, H, N, D]."""
        dropout_p = self.attn_drop if self.training else 0.0
        return attention(q, k, v, self.backend, scale=self.scale, dropout_p=dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # unbind on the "3" axis so the backward stacks q/k/v grads straight into [B, N, 3, H, D] (no copy)
        q, k, v = (
            t.transpose(1, 2) for t in self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        )
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        q, k = self.q_norm(q), self.k_norm(k)  # [B, H, N, D] each
        x = self._attend(q, k, v)  # [B, H, N, D]
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class MultiHeadCrossAttention(nn.Module):
    """Cross-attention from video tokens to text tokens (keys ``q_linear``, ``kv_linear``, ``proj``).

    x [B, N, C], cond [B, L, C], mask [B, L] (1 = valid token) -> [B, N, C]. Each sample's queries see only its
    own valid text tokens, which equals the reference's packed block-diagonal attention; a sample with no
    valid token gets a zero attention output (so the block adds ``proj.bias`` only).

    Padded captions are packed (``packed=True``, the default): the key positions that are padding in every
    sample are cut off before the kv projection; then with the ``"flash"`` backend the valid tokens of all
    samples go into one sequence for flash-attn's varlen kernel (each sample's queries see its own tokens, as
    the reference's xformers ``BlockDiagonalMask``), otherwise SDPA / math attend over the cut keys, with the
    key mask only when the samples still differ in length. ``packed=False`` is the dense masked attention over
    all L positions (``benchmarks/cross_attention.py`` measures both).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "sdpa",
        packed: bool = True,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"hidden size {d_model} is not divisible by num_heads {num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scale = self.head_dim**-0.5
        self.backend = _check_backend(backend)
        self.packed = packed
        self.q_linear = nn.Linear(d_model, d_model)
        self.kv_linear = nn.Linear(d_model, d_model * 2)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: TextMask | None
    ) -> torch.Tensor:
        """q [B, H, N, D], k/v [B, H, Lk, D] (Lk = L, or ``mask.keep`` when packed) -> [B, H, N, D]."""
        dropout_p = self.attn_drop if self.training else 0.0
        if mask is None or (self.packed and mask.uniform and k.shape[2] == mask.keep):
            return attention(q, k, v, self.backend, scale=self.scale, dropout_p=dropout_p)
        # flash-attn has no key mask here: masked cross-attention runs through sdpa.
        backend = "sdpa" if self.backend == "flash" else self.backend
        keys = mask.key_mask[:, : k.shape[2]]  # [B, Lk]
        if mask.has_token is not None:
            # Rows without any valid key would give NaN; let them attend to everything and zero them afterwards.
            keys = keys | ~mask.has_token[:, None]
        out = attention(
            q, k, v, backend, attn_mask=keys[:, None, None, :], scale=self.scale, dropout_p=dropout_p
        )
        if mask.has_token is not None:
            out = torch.where(mask.has_token[:, None, None, None], out, torch.zeros_like(out))
        return out

    def _attend_varlen(self, q: torch.Tensor, kv: torch.Tensor, mask: TextMask) -> torch.Tensor:
        """flash-attn varlen: q [B, N, H, D], kv [B, keep, 2, H, D] -> [B, N, H, D]."""
        b, n = q.shape[:2]
        flash = _flash_module(q)
        kv = kv.flatten(0, 1).index_select(0, mask.kv_index)  # [total valid tokens, 2, H, D]
        cu_seqlens_q = torch.arange(0, (b + 1) * n, n, dtype=torch.int32, device=q.device)  # [B + 1]
        out = flash.flash_attn_varlen_func(
            q.flatten(0, 1),  # [B*N, H, D]
            kv[:, 0],
            kv[:, 1],
            cu_seqlens_q,
            mask.cu_seqlens,
            n,
            mask.max_seqlen,
            dropout_p=self.attn_drop if self.training else 0.0,
            softmax_scale=self.scale,
        ).view(q.shape)
        if mask.has_token is not None:
            out = torch.where(mask.has_token[:, None, None, None], out, torch.zeros_like(out))
        return out

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | TextMask | None = None
    ) -> torch.Tensor:
        """x [B, N, C], cond [B, L, C], mask [B, L] (1 = token), a prepared :class:`TextMask`, or None."""
        b, n, c = x.shape
        bc, length, _ = cond.shape
        if bc != b:
            raise ValueError(f"cross-attention: video batch {b} != caption batch {bc}")
        text_mask = prepare_text_mask(mask, b, length)
        if text_mask is not None and self.packed and text_mask.keep:
            cond = cond[:, : text_mask.keep]  # [B, keep, C]: positions that are padding everywhere cut off
            length = text_mask.keep
        q = self.q_linear(x).reshape(b, n, self.num_heads, self.head_dim)  # [B, N, H, D]
        kv = self.kv_linear(cond).view(b, length, 2, self.num_heads, self.head_dim)
        if text_mask is not None and self.packed and self.backend == "flash" and text_mask.keep:
            x = self._attend_varlen(q, kv, text_mask).reshape(b, n, c)
        else:
            k, v = (t.transpose(1, 2) for t in kv.unbind(2))  # [B, H, L, D] each
            x = self._attend(q.transpose(1, 2), k, v, text_mask)  # [B, H, N, D]
            x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


def set_attn_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every attention module inside ``model`` to ``backend``; returns the model."""
    _check_backend(backend)
    for module in model.modules():
        # Our modules and any other module with the same contract (a ``backend`` string and ``_attend``).
        if isinstance(module, Attention | MultiHeadCrossAttention) or (
            isinstance(getattr(module, "backend", None), str) and hasattr(module, "_attend")
        ):
            module.backend = backend
    if hasattr(model, "attn_backend"):
        model.attn_backend = backend
    return model
