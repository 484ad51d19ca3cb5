"""Shared building blocks of the Open-Sora model zoo.

Embedders, modulation helpers, final layers, positional encodings and the model plumbing (patch grid, frame
masks, positional buffers kept on load, freezing) used by STDiT, STDiT2, DiT, Latte and PixArt. Submodule and
parameter names follow the Open-Sora checkpoints (``proj``, ``mlp.0``/``mlp.2``, ``y_proj.fc1``/``fc2``,
``y_embedding``, ``scale_shift_table``, ``linear``, ``adaLN_modulation``, ``embedding_table``, ``freqs``) so
official state dicts load unchanged.

Numerics follow the reference where checkpoint compatibility needs it:
- sinusoidal timestep features are ``[cos, sin]`` with frequencies ``exp(-ln(max_period) * i / half)``;
- the fixed 2-D sin-cos table (STDiT/DiT/PixArt buffers) is computed with numpy: grid positions in float32
  (as the MAE/PixArt code), trigonometry in float64, then cast to float32;
- the dynamic 2-D table of STDiT2 (``PositionEmbedding2D``) is computed with torch in float32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

__all__ = [
    "CaptionEmbedder",
    "DropPath",
    "FinalLayer",
    "LabelEmbedder",
    "Mlp",
    "PatchEmbed3D",
    "PositionEmbedding2D",
    "RMSNorm",
    "RotaryEmbedding",
    "SizeEmbedder",
    "T2IFinalLayer",
    "TanhGELU",
    "TimestepEmbedder",
    "apply_freeze",
    "approx_gelu",
    "call_block",
    "check_x_mask",
    "grid_of",
    "keep_buffers_on_load",
    "require_plain_frames",
    "sincos_table_1d",
    "sincos_table_2d",
    "to_torch_dtype",
    "gated_residual",
    "get_1d_sincos_pos_embed",
    "get_1d_sincos_pos_embed_from_grid",
    "get_2d_sincos_pos_embed",
    "get_2d_sincos_pos_embed_from_grid",
    "init_backbone_weights",
    "init_t2i_weights",
    "modulate",
    "select_by_frame",
    "t2i_modulate",
    "unpatchify",
]


# 2 * sqrt(2 / pi): 0.5 * (1 + tanh(u)) == sigmoid(2u), with u = sqrt(2 / pi) * (x + 0.044715 x^3)
_TWO_SQRT_2_OVER_PI = 2.0 * math.sqrt(2.0 / math.pi)


class TanhGELU(nn.GELU):
    """``nn.GELU(approximate="tanh")`` whose CPU code under ``torch.compile`` uses the identity
    ``0.5 * (1 + tanh(u)) = sigmoid(2u)``: ``x * sigmoid(2u)`` in fp32, cast back.

    Inductor's vectorised CPU ``tanh`` is slow (bf16 [8192, 1536], 2 threads: ``tanh`` 13.6 ms, ``exp``
    4.1 ms; the GELU 15.4 ms forward / 33 ms fwd+bwd vs 5.4 / 15 ms for this form), and GELU runs three times
    per MLP in a compiled training step (forward, recomputed for the backward, its gradient). The values agree
    with ``F.gelu`` to float rounding (bf16: about 1 element in 10^4 differs by one unit in the last place).
    Eager mode and CUDA keep ``F.gelu`` itself (the reference's numerics; one fused kernel there).
    """

    def __init__(self) -> None:
        super().__init__(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.device.type == "cpu":
            xf = x.float()
            return (xf * torch.sigmoid(_TWO_SQRT_2_OVER_PI * (xf + 0.044715 * xf * xf * xf))).to(x.dtype)
        return F.gelu(x, approximate="tanh")


def approx_gelu() -> nn.Module:
    """GELU with the tanh approximation (the activation of every Open-Sora MLP): :class:`TanhGELU`."""
    return TanhGELU()


_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def to_torch_dtype(dtype: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """Open-Sora dtype spellings ("fp32", "bf16", "fp16", "float32", torch.dtype, None) -> torch.dtype."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[key]


def call_block(block: Callable[..., torch.Tensor], *args: object, checkpoint: bool) -> torch.Tensor:
    """Run ``block(*args)``, through non-reentrant activation checkpointing when ``checkpoint`` is set and
    autograd is recording (so checkpointing never changes eval/no-grad runs)."""
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)


# --------------------------------------------------------------------------------------------------------
# model plumbing
# --------------------------------------------------------------------------------------------------------


def grid_of(size: Sequence[int], patch_size: Sequence[int]) -> tuple[int, int, int]:
    """Number of patches per axis (T, H, W), padding partial patches."""
    return tuple(math.ceil(int(s) / int(p)) for s, p in zip(size, patch_size, strict=True))  # type: ignore[return-value]


def check_x_mask(x_mask: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
    """Validate a frame mask: bool-like [B, T] with T = number of temporal patches."""
    if x_mask is None:
        return None
    if x_mask.shape != (batch, frames):
        raise ValueError(f"x_mask must be [B, T] = [{batch}, {frames}], got {list(x_mask.shape)}")
    return x_mask.to(torch.bool)


def require_plain_frames(x_mask: torch.Tensor | None, batch: int, frames: int, model: str) -> None:
    """Accept ``x_mask`` only when it marks every frame as normal (True): frame conditioning (frames
    modulated as timestep 0) exists only in STDiT / STDiT2."""
    x_mask = check_x_mask(x_mask, batch, frames)
    if x_mask is not None and not bool(x_mask.all()):
        raise ValueError(
            f"{model} has no frame conditioning: x_mask with False entries (conditioning frames) is only "
            "supported by STDiT / STDiT2; pass x_mask=None or all True"
        )


def keep_buffers_on_load(module: nn.Module, names: Sequence[str]) -> None:
    """Make ``module.load_state_dict`` keep the current values of the named buffers.

    Positional tables are functions of the config: a checkpoint may carry them (with another grid size) or
    not; either way they are not taken from it, as in the reference loaders which delete them.
    """
    # A partial of a module-level function (not a closure) keeps the model picklable.
    module.register_load_state_dict_pre_hook(functools.partial(_keep_buffers_hook, tuple(names)))


def _keep_buffers_hook(
    names: tuple[str, ...], module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any
) -> None:
    """load_state_dict pre-hook: the named buffers keep their current values."""
    for name in names:
        buf = getattr(module, name, None)
        if isinstance(buf, torch.Tensor):
            state_dict[prefix + name] = buf


def apply_freeze(model: nn.Module, freeze: str | None) -> None:
    """Open-Sora ``freeze``: None, "not_temporal" (train attn_temp only) or "text" (freeze cross_attn)."""
    if freeze is None:
        return
    if freeze == "not_temporal":
        for name, p in model.named_parameters():
            if "attn_temp" not in name:
                p.requires_grad_(False)
    elif freeze == "text":
        for name, p in model.named_parameters():
            if "cross_attn" in name:
                p.requires_grad_(False)
    else:
        raise ValueError(f"freeze must be None, 'not_temporal' or 'text', got {freeze!r}")


def init_backbone_weights(model: nn.Module) -> None:
    """Reference initialisation common to every family (DiT, Latte, PixArt, STDiT, STDiT2).

    xavier-uniform on every Linear (bias 0); patch conv weight xavier-uniform on its [C, -1] view (bias keeps
    the torch default); timestep MLP weights N(0, 0.02). ``model`` needs ``x_embedder.proj`` and
    ``t_embedder.mlp``. Family-specific init follows it (the RNG draws keep the reference order).
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    w = model.x_embedder.proj.weight
    nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))
    nn.init.normal_(model.t_embedder.mlp[0].weight, std=0.02)
    nn.init.normal_(model.t_embedder.mlp[2].weight, std=0.02)


def init_t2i_weights(model: nn.Module, zero_block_projs: Sequence[str] = ("cross_attn",)) -> None:
    """Reference initialisation of the adaLN-single families (PixArt, STDiT, STDiT2).

    :func:`init_backbone_weights`, then t_block and caption MLP weights N(0, 0.02); the ``proj`` Linear of
    each block's attention modules named in ``zero_block_projs`` (PixArt: cross_attn; STDiT/STDiT2 also
    attn_temp) and the final linear zero.
    """
    init_backbone_weights(model)
    nn.init.normal_(model.t_block[1].weight, std=0.02)
    nn.init.normal_(model.y_embedder.y_proj.fc1.weight, std=0.02)
    nn.init.normal_(model.y_embedder.y_proj.fc2.weight, std=0.02)
    for block in model.blocks:
        for name in zero_block_projs:
            proj = getattr(block, name).proj
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)
    nn.init.zeros_(model.final_layer.linear.weight)
    nn.init.zeros_(model.final_layer.linear.bias)


# --------------------------------------------------------------------------------------------------------
# modulation helpers
# --------------------------------------------------------------------------------------------------------


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN-single modulation ``x * (1 + scale) + shift`` (shift/scale already broadcastable to x), as one
    fused ``addcmul`` (no full-size temporary for the product)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated_residual(
    x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, drop_path: nn.Module
) -> torch.Tensor:
    """``x + drop_path(gate * y)``: one fused ``addcmul`` when ``drop_path`` is the identity (no stochastic
    depth), else the product, the per-sample drop and the add. gate broadcasts to y."""
    if isinstance(drop_path, nn.Identity):
        return torch.addcmul(x, gate, y)
    return x + drop_path(gate * y)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN-Zero modulation of DiT: x [B, N, C], shift/scale [B, C] -> [B, N, C]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def select_by_frame(x_mask: torch.Tensor | None, normal: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Pick per-frame modulation parameters.

    normal / zero: [B, K] parameters from the real timestep and from timestep 0.
    x_mask: bool [B, T] (True = normal frame) or None.
    Returns [B, 1, 1, K] when x_mask is None (broadcast over frames and tokens), else [B, T, 1, K] where frames
    with x_mask False take the timestep-0 parameters. Applying elementwise ops with these per-frame parameters
    gives exactly the same numbers as computing both branches and selecting per frame afterwards.
    """
    if x_mask is None:
        return normal[:, None, None, :]
    sel = x_mask.to(torch.bool)[:, :, None, None]  # [B, T, 1, 1]
    return torch.where(sel, normal[:, None, None, :], zero[:, None, None, :])


# --------------------------------------------------------------------------------------------------------
# small modules
# --------------------------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or with probability 0)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Two-layer MLP ``fc1 -> act -> fc2`` (keys ``fc1``/``fc2`` as timm's Mlp)."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] | None = None,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer() if act_layer is not None else approx_gelu()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class RMSNorm(nn.Module):
    """Llama-style RMSNorm with a weight only: statistics in float32, result cast back, then scaled."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class PatchEmbed3D(nn.Module):
    """Video to patch tokens with a strided Conv3d.

    x [B, C_in, T, H, W] -> [B, N, C] with N = T' * H' * W' (T-major, then row-major h, w). T/H/W are padded at
    the end (right/bottom) with zeros to multiples of the patch size.
    """

    def __init__(
        self,
        patch_size: Sequence[int] = (2, 4, 4),
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: type[nn.Module] | None = None,
        flatten: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = tuple(int(p) for p in patch_size)
        self.flatten = flatten
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        _, _, t, h, w = x.shape
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, (-t) % pt)
        if any(pad):
            x = nn.functional.pad(x, pad)
        x = self.proj(x)  # [B, C, T', H', W']
        if self.norm is not None:
            b, c, t2, h2, w2 = x.shape
            x = self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, t2, h2, w2)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # [B, N, C]
        return x


def unpatchify(
    x: torch.Tensor,
    grid: Sequence[int],
    patch_size: Sequence[int],
    out_channels: int,
    crop: Sequence[int] | None = None,
) -> torch.Tensor:
    """Tokens back to a video.

    x [B, N, pt*ph*pw*C_out] with N = nt*nh*nw, the C_out index varying fastest inside each patch
    -> [B, C_out, nt*pt, nh*ph, nw*pw], optionally cropped to ``crop`` = (T, H, W).
    """
    nt, nh, nw = grid
    pt, ph, pw = patch_size
    b = x.shape[0]
    x = x.reshape(b, nt, nh, nw, pt, ph, pw, out_channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C_out, nt, pt, nh, ph, nw, pw]
    x = x.reshape(b, out_channels, nt * pt, nh * ph, nw * pw)
    if crop is not None:
        t, h, w = crop
        x = x[:, :, :t, :h, :w]
    return x


# --------------------------------------------------------------------------------------------------------
# conditioning embedders
# --------------------------------------------------------------------------------------------------------


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> [B, C]: 256-dim [cos, sin] sinusoid -> Linear -> SiLU -> Linear (keys mlp.0/mlp.2)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        """GLIDE sinusoid: t [N] (may be fractional) -> [N, dim] float32, ``[cos(t*f), sin(t*f)]``."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # [B, 256]
        if dtype is None:
            dtype = self.mlp[0].weight.dtype
        return self.mlp(t_freq.to(dtype))  # [B, C]


class SizeEmbedder(TimestepEmbedder):
    """Embeds scalar size/fps/aspect values like timesteps; several values per sample are concatenated.

    s [B] or [B, D] (a batch of 1 is repeated to ``batch_size``) -> [B, D * C].
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__(hidden_size, frequency_embedding_size)
        self.outdim = hidden_size

    def forward(self, s: torch.Tensor, batch_size: int) -> torch.Tensor:  # type: ignore[override]
        if s.ndim == 1:
            s = s[:, None]
        if s.ndim != 2:
            raise ValueError(f"SizeEmbedder expects a [B] or [B, D] tensor, got shape {tuple(s.shape)}")
        if s.shape[0] != batch_size:
            if batch_size % s.shape[0]:
                raise ValueError(f"SizeEmbedder: batch {s.shape[0]} does not divide batch size {batch_size}")
            s = s.repeat(batch_size // s.shape[0], 1)
        b, d = s.shape
        freq = self.timestep_embedding(s.reshape(b * d), self.frequency_embedding_size)
        emb = self.mlp(freq.to(self.mlp[0].weight.dtype))  # [B*D, C]
        return emb.reshape(b, d * self.outdim)


class CaptionEmbedder(nn.Module):
    """Projects text-encoder features to the model width; holds the learned null caption.

    ``y_embedding`` [token_num, in_channels] (persistent buffer) is the null caption used for classifier-free
    guidance and for caption dropout. caption [B, 1, L, in_channels] -> [B, 1, L, C].
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        uncond_prob: float,
        act_layer: type[nn.Module] | None = None,
        token_num: int = 120,
    ) -> None:
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size, act_layer=act_layer or approx_gelu, drop=0.0)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels**0.5)
        self.uncond_prob = float(uncond_prob)

    def token_drop(self, caption: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace whole captions by the null caption (random with ``uncond_prob``, or where force_drop_ids == 1)."""
        if force_drop_ids is None:
            drop_ids = torch.rand(caption.shape[0], device=caption.device) < self.uncond_prob
        else:
            drop_ids = force_drop_ids.to(caption.device) == 1
        null = self.y_embedding.to(caption.dtype)
        return torch.where(drop_ids[:, None, None, None], null, caption)

    def forward(
        self, caption: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if train and caption.shape[2:] != self.y_embedding.shape:
            raise ValueError(
                f"caption shape {tuple(caption.shape)} does not end with the null caption shape "
                f"{tuple(self.y_embedding.shape)} (model_max_length, caption_channels)"
            )
        if (train and self.uncond_prob > 0) or force_drop_ids is not None:
            caption = self.token_drop(caption, force_drop_ids)
        return self.y_proj(caption)


class LabelEmbedder(nn.Module):
    """Class labels -> [B, C]; with dropout > 0 an extra row (index num_classes) is the null class."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = float(dropout_prob)

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Replace labels by the null class (random with ``dropout_prob``, or where force_drop_ids == 1)."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids.to(labels.device) == 1
        return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# --------------------------------------------------------------------------------------------------------
# final layers
# --------------------------------------------------------------------------------------------------------


class T2IFinalLayer(nn.Module):
    """PixArt/STDiT final layer: adaLN-single from the raw timestep embedding, then a linear to patch pixels.

    x [B, N, C], shift/scale from ``scale_shift_table [2, C] + t`` -> [B, N, num_patch * out_channels].

    With a frame mask the layer computes what Open-Sora 1.1 computes (its checkpoints were trained with it):
    every token is first normed and modulated with ``t``; tokens of frames whose mask is False are then normed
    and modulated AGAIN, with ``t0``, starting from that already-modulated value (not from ``x``).
    """

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.out_channels = out_channels

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        t0: torch.Tensor | None = None,
        T: int | None = None,
        S: int | None = None,
    ) -> torch.Tensor:
        """x [B, N, C], t [B, C]; with x_mask [B, T] frames marked False take the ``t0`` [B, C] branch
        (N must be T * S)."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # [B, 1, C] each
        x = t2i_modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            if t0 is None or T is None or S is None:
                raise ValueError("T2IFinalLayer: x_mask needs t0, T and S")
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            x_zero = t2i_modulate(self.norm_final(x), shift0, scale0)  # from the modulated x (reference)
            b, n, c = x.shape
            keep = x_mask.to(torch.bool)[:, :, None, None]  # [B, T, 1, 1]
            x = torch.where(keep, x.view(b, T, S, c), x_zero.view(b, T, S, c)).view(b, n, c)
        return self.linear(x)


class FinalLayer(nn.Module):
    """DiT adaLN-Zero final layer: ``adaLN_modulation(c) -> shift, scale``, then linear to patch pixels."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [B, N, C], c [B, C] -> [B, N, num_patch * out_channels]."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# --------------------------------------------------------------------------------------------------------
# positional encodings
# --------------------------------------------------------------------------------------------------------


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """pos (any shape, M values) -> [M, embed_dim] float64, ``[sin(pos*w), cos(pos*w)]``, w_k = 1e4^(-2k/D)."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding dimension must be even, got {embed_dim}")
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega  # [D/2]
    out = np.einsum("m,d->md", np.asarray(pos).reshape(-1), omega)  # [M, D/2] float64
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed_from_grid(embed_dim: int, grid: np.ndarray) -> np.ndarray:
    """grid [2, ...] (w positions first, then h) -> [M, embed_dim]: first half encodes grid[0], last grid[1]."""
    if embed_dim % 2:
        raise ValueError(f"2-D sin-cos embedding dimension must be even, got {embed_dim}")
    emb_a = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_b = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_a, emb_b], axis=1)


def get_2d_sincos_pos_embed(
    embed_dim: int,
    grid_size: int | Sequence[int],
    cls_token: bool = False,
    extra_tokens: int = 0,
    scale: float = 1.0,
    base_size: float | None = None,
) -> np.ndarray:
    """Fixed 2-D sin-cos table [H*W (+extra), embed_dim] (numpy float64) for a grid (H, W) of patches.

    Positions are ``arange(n) / scale`` (float32, as in the reference), multiplied by ``base_size / n`` when
    base_size is given. Tokens are row-major (h, w); the first embed_dim/2 channels encode w, the rest h.
    """
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))
    grid_h = np.arange(gh, dtype=np.float32) / np.float32(scale)
    grid_w = np.arange(gw, dtype=np.float32) / np.float32(scale)
    if base_size is not None:
        grid_h *= np.float32(base_size / gh)
        grid_w *= np.float32(base_size / gw)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # [2, gh, gw]: grid[0] = w, grid[1] = h
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token and extra_tokens > 0:
        pos_embed = np.concatenate([np.zeros([extra_tokens, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_1d_sincos_pos_embed(embed_dim: int, length: int, scale: float = 1.0) -> np.ndarray:
    """Fixed 1-D sin-cos table [length, embed_dim] (numpy float64) for positions ``arange(length) / scale``."""
    pos = np.arange(0, length, dtype=np.float64) / scale
    return get_1d_sincos_pos_embed_from_grid(embed_dim, pos)


def sincos_table_2d(
    embed_dim: int, grid_size: Sequence[int], scale: float = 1.0, base_size: float | None = None
) -> torch.Tensor:
    """``get_2d_sincos_pos_embed`` as a float32 tensor [1, H*W, embed_dim]."""
    return torch.from_numpy(
        get_2d_sincos_pos_embed(embed_dim, grid_size, scale=scale, base_size=base_size)
    ).to(torch.float32)[None]


def sincos_table_1d(embed_dim: int, length: int, scale: float = 1.0) -> torch.Tensor:
    """``get_1d_sincos_pos_embed`` as a float32 tensor [1, length, embed_dim]."""
    table = get_1d_sincos_pos_embed(embed_dim, length, scale=scale)
    return torch.as_tensor(table, dtype=torch.float32)[None]


class PositionEmbedding2D(nn.Module):
    """Dynamic 2-D sin-cos positions (STDiT2), computed in torch float32 for any grid at call time.

    Same layout as ``get_2d_sincos_pos_embed``: tokens row-major (h, w), first half of channels encodes w,
    second half h; positions ``arange(n) / scale * base_size / n``. Has no state-dict entries.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"PositionEmbedding2D needs a dimension divisible by 4, got {dim}")
        self.dim = dim
        half_dim = dim // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half_dim, 2).float() / half_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: dict[tuple, torch.Tensor] = {}

    def _sin_cos(self, pos: torch.Tensor) -> torch.Tensor:
        out = pos[:, None] * self.inv_freq[None].to(pos.device)  # [M, D/4]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)

    def forward(
        self, x: torch.Tensor, h: int, w: int, scale: float = 1.0, base_size: float | None = None
    ) -> torch.Tensor:
        """Returns [1, h*w, dim] on x's device in x's dtype (cached per grid, scale, device and dtype)."""
        key = (h, w, float(scale), base_size, x.device, x.dtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        grid_h = torch.arange(h, device=x.device, dtype=torch.float32) / scale
        grid_w = torch.arange(w, device=x.device, dtype=torch.float32) / scale
        if base_size is not None:
            grid_h = grid_h * (base_size / h)
            grid_w = grid_w * (base_size / w)
        pos_h = grid_h[:, None].expand(h, w).reshape(-1)  # row-major (h, w)
        pos_w = grid_w[None, :].expand(h, w).reshape(-1)
        emb = torch.cat([self._sin_cos(pos_w), self._sin_cos(pos_h)], dim=-1)[None].to(x.dtype)
        if len(self._cache) > 32:
            self._cache.clear()
        if not torch.is_inference_mode_enabled() and x.device.type != "meta":
            self._cache[key] = emb
        return emb


class RotaryEmbedding(nn.Module):
    """Rotary position embedding over the sequence axis with interleaved pairs.

    ``freqs`` [dim/2] = 10000^(-2k/dim) is a parameter that does not train (state-dict key ``rope.freqs``).
    ``rotate_queries_or_keys(t)`` rotates t [..., N, D] (D >= dim) at positions 0..N-1: each pair
    (x_{2k}, x_{2k+1}) becomes (x_{2k} cos - x_{2k+1} sin, x_{2k+1} cos + x_{2k} sin) with angle pos * freqs[k].
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)
        self.dim = dim

    def angles(self, seq_len: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rotation angles [seq_len, dim], each frequency repeated twice (interleaved)."""
        pos = torch.arange(seq_len, device=device, dtype=self.freqs.dtype)
        ang = pos[:, None] * self.freqs[None].to(device)  # [N, dim/2]
        return ang.repeat_interleave(2, dim=-1).to(dtype)

    def rotate_queries_or_keys(self, t: torch.Tensor, seq_dim: int = -2) -> torch.Tensor:
        """t [..., N, D] -> rotated t (same shape and dtype); only the first ``dim`` channels rotate."""
        if seq_dim != -2:
            t = t.transpose(seq_dim, -2)
        ang = self.angles(t.shape[-2], t.device)  # [N, dim]
        rot, rest = t[..., : self.dim], t[..., self.dim :]
        pairs = rot.reshape(*rot.shape[:-1], -1, 2)
        rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(rot.shape)
        out = rot * ang.cos() + rotated_half * ang.sin()
        out = torch.cat((out, rest), dim=-1).to(t.dtype) if rest.shape[-1] else out.to(t.dtype)
        if seq_dim != -2:
            out = out.transpose(seq_dim, -2)
        return out

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.rotate_queries_or_keys(t)
