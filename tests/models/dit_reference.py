"""Functional re-statements of the reference DiT / Latte / PixArt forwards, for tests.

Written from the published behaviour (Open-Sora 1.0 + Meta DiT), deliberately in the reference's data layout
(``(b t) s d`` / ``(b s) t d`` rearranges, repeated conditions, packed text) rather than the grouped layout of
the library, so the tests compare two independent formulations. Everything runs from a state dict.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat


def sincos_1d(dim: int, pos: np.ndarray) -> torch.Tensor:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return torch.from_numpy(np.concatenate([np.sin(out), np.cos(out)], axis=1)).float()


def sincos_2d(dim: int, gh: int, gw: int, scale: float = 1.0, base_size: float | None = None) -> torch.Tensor:
    """[gh*gw, dim]: row-major tokens; first half encodes the column (w), second half the row (h)."""
    ph = np.arange(gh, dtype=np.float32) / scale
    pw = np.arange(gw, dtype=np.float32) / scale
    if base_size is not None:
        ph = ph * np.float32(base_size / gh)
        pw = pw * np.float32(base_size / gw)
    hh, ww = np.meshgrid(ph, pw, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, ww), sincos_1d(dim // 2, hh)], dim=1)


def timestep_mlp(sd: dict, prefix: str, t: torch.Tensor) -> torch.Tensor:
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[:, None] * freqs[None]
    feat = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    h = F.silu(F.linear(feat, sd[f"{prefix}.mlp.0.weight"], sd[f"{prefix}.mlp.0.bias"]))
    return F.linear(h, sd[f"{prefix}.mlp.2.weight"], sd[f"{prefix}.mlp.2.bias"])


def mlp(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    h = F.gelu(F.linear(x, sd[f"{prefix}.fc1.weight"], sd[f"{prefix}.fc1.bias"]), approximate="tanh")
    return F.linear(h, sd[f"{prefix}.fc2.weight"], sd[f"{prefix}.fc2.bias"])


def self_attention(sd: dict, prefix: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    B, N, C = x.shape
    qkv = F.linear(x, sd[f"{prefix}.qkv.weight"], sd[f"{prefix}.qkv.bias"])
    q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    attn = ((q * (C // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(out, sd[f"{prefix}.proj.weight"], sd[f"{prefix}.proj.bias"])


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


def adaln_block(sd: dict, prefix: str, x: torch.Tensor, c: torch.Tensor, heads: int) -> torch.Tensor:
    """DiT block: x [B', N, C], c [B', C]."""
    mod = F.linear(
        F.silu(c), sd[f"{prefix}.adaLN_modulation.1.weight"], sd[f"{prefix}.adaLN_modulation.1.bias"]
    )
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
    h = layer_norm(x) * (scale_msa[:, None] + 1) + shift_msa[:, None]
    x = x + gate_msa[:, None] * self_attention(sd, f"{prefix}.attn", h, heads)
    h = layer_norm(x) * (scale_mlp[:, None] + 1) + shift_mlp[:, None]
    return x + gate_mlp[:, None] * mlp(sd, f"{prefix}.mlp", h)


def adaln_final(sd: dict, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    mod = F.linear(
        F.silu(c), sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"]
    )
    shift, scale = mod.chunk(2, dim=1)
    h = layer_norm(x) * (1 + scale[:, None]) + shift[:, None]
    return F.linear(h, sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])


def condition(sd: dict, y: torch.Tensor) -> torch.Tensor:
    if "y_embedder.embedding_table.weight" in sd:
        return sd["y_embedder.embedding_table.weight"][y]
    return mlp(sd, "y_embedder.y_proj", y)[:, 0, 0]  # pooled [B, 1, 1, C_cap] -> [B, C]


def meta_image_dit(sd: dict, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, heads: int, depth: int):
    """Meta's image DiT on x [B, C, H, W] with its own key layout (2-D conv, stored ``pos_embed``)."""
    w = sd["x_embedder.proj.weight"]
    p = w.shape[-1]
    tok = F.conv2d(x, w, sd["x_embedder.proj.bias"], stride=p)  # [B, C, h, w]
    h, wn = tok.shape[-2:]
    tok = tok.flatten(2).transpose(1, 2) + sd["pos_embed"]
    c = timestep_mlp(sd, "t_embedder", t) + sd["y_embedder.embedding_table.weight"][labels]
    for i in range(depth):
        tok = adaln_block(sd, f"blocks.{i}", tok, c, heads)
    out = adaln_final(sd, tok, c)
    cout = out.shape[-1] // (p * p)
    out = out.reshape(x.shape[0], h, wn, p, p, cout)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(x.shape[0], cout, h * p, wn * p)


def _patchify(
    sd: dict, x: torch.Tensor, patch: tuple[int, int, int]
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    tok = F.conv3d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=patch)
    nt, nh, nw = tok.shape[2:]
    return rearrange(tok, "b c t h w -> b t (h w) c"), (nt, nh, nw)


def _unpatchify(out: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    nt, nh, nw = grid
    pt, ph, pw = patch
    return rearrange(
        out,
        "b (t h w) (r p q c) -> b c (t r) (h p) (w q)",
        t=nt, h=nh, w=nw, r=pt, p=ph, q=pw,
    )  # fmt: skip


def video_dit(sd: dict, x, t, y, patch, heads: int, depth: int, temporal_pos: bool = True) -> torch.Tensor:
    """Open-Sora DiT: full attention over all T*S tokens."""
    tok, grid = _patchify(sd, x, patch)
    C = tok.shape[-1]
    tok = tok + sincos_2d(C, grid[1], grid[2])
    if temporal_pos:
        tok = rearrange(tok, "b t s d -> b s t d") + sincos_1d(C, np.arange(grid[0]))
        tok = rearrange(tok, "b s t d -> b (t s) d")
    else:
        tok = rearrange(tok, "b t s d -> b (t s) d")
    c = timestep_mlp(sd, "t_embedder", t) + condition(sd, y)
    for i in range(depth):
        tok = adaln_block(sd, f"blocks.{i}", tok, c, heads)
    return _unpatchify(adaln_final(sd, tok, c), grid, patch)


def latte(sd: dict, x, t, y, patch, heads: int, depth: int) -> torch.Tensor:
    """Open-Sora Latte: even blocks on (b t) s d, odd blocks on (b s) t d, temporal table before block 1."""
    tok, grid = _patchify(sd, x, patch)
    nt, S, C = tok.shape[1], tok.shape[2], tok.shape[3]
    tok = rearrange(tok + sincos_2d(C, grid[1], grid[2]), "b t s d -> b (t s) d")
    c = timestep_mlp(sd, "t_embedder", t) + condition(sd, y)
    c_spatial = repeat(c, "b d -> (b t) d", t=nt)
    c_temporal = repeat(c, "b d -> (b s) d", s=S)
    for i in range(depth):
        if i % 2 == 0:
            h = rearrange(tok, "b (t s) d -> (b t) s d", t=nt, s=S)
            h = adaln_block(sd, f"blocks.{i}", h, c_spatial, heads)
            tok = rearrange(h, "(b t) s d -> b (t s) d", t=nt, s=S)
        else:
            h = rearrange(tok, "b (t s) d -> (b s) t d", t=nt, s=S)
            if i == 1:
                h = h + sincos_1d(C, np.arange(nt))
            h = adaln_block(sd, f"blocks.{i}", h, c_temporal, heads)
            tok = rearrange(h, "(b s) t d -> b (t s) d", t=nt, s=S)
    return _unpatchify(adaln_final(sd, tok, c), grid, patch)


def cross_attention_packed(
    sd: dict, prefix: str, x: torch.Tensor, y: torch.Tensor, lens: list[int], heads: int
):
    """Reference cross-attention: every sample's queries attend to its own slice of the packed text."""
    B, N, C = x.shape
    q = F.linear(x, sd[f"{prefix}.q_linear.weight"], sd[f"{prefix}.q_linear.bias"])
    kv = F.linear(y, sd[f"{prefix}.kv_linear.weight"], sd[f"{prefix}.kv_linear.bias"])  # [1, sum L, 2C]
    outs, start = [], 0
    for b in range(B):
        k, v = kv[0, start : start + lens[b]].reshape(lens[b], 2, heads, C // heads).unbind(1)
        start += lens[b]
        qb = q[b].reshape(N, heads, C // heads).transpose(0, 1)  # [H, N, D]
        attn = ((qb * (C // heads) ** -0.5) @ k.permute(1, 2, 0)).softmax(-1)  # [H, N, L]
        outs.append((attn @ v.transpose(0, 1)).transpose(0, 1).reshape(N, C))
    return F.linear(torch.stack(outs), sd[f"{prefix}.proj.weight"], sd[f"{prefix}.proj.bias"])


def pixart(
    sd: dict,
    x,
    t,
    y,
    mask,
    patch,
    heads: int,
    depth: int,
    space_scale: float = 1.0,
    time_scale: float = 1.0,
    temporal_pos: bool = True,
    size_info: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Open-Sora PixArt / PixArtMS (size_info = (hw [B, 2], ar [B, 1])) with packed text."""
    B = x.shape[0]
    tok, grid = _patchify(sd, x, patch)
    C = tok.shape[-1]
    base = int(np.sqrt(grid[1] * grid[2]))
    tok = tok + sincos_2d(C, grid[1], grid[2], scale=space_scale, base_size=base)
    if temporal_pos:
        tok = rearrange(tok, "b t s d -> b s t d") + sincos_1d(C, np.arange(grid[0]) / time_scale)
        tok = rearrange(tok, "b s t d -> b (t s) d")
    else:
        tok = rearrange(tok, "b t s d -> b (t s) d")
    temb = timestep_mlp(sd, "t_embedder", t)
    if size_info is not None:
        hw, ar = size_info
        cs = timestep_mlp(sd, "csize_embedder", hw.reshape(-1)).reshape(B, -1)
        ars = timestep_mlp(sd, "ar_embedder", ar.reshape(-1)).reshape(B, -1)
        temb = temb + torch.cat([cs, ars], dim=1)
    t0 = F.linear(F.silu(temb), sd["t_block.1.weight"], sd["t_block.1.bias"])
    yy = mlp(sd, "y_embedder.y_proj", y)[:, 0]  # [B, L, C]
    if mask is None:
        lens = [yy.shape[1]] * B
        packed = yy.reshape(1, -1, C)
    else:
        lens = mask.sum(1).tolist()
        packed = yy[mask.bool()].reshape(1, -1, C)
    for i in range(depth):
        p = f"blocks.{i}"
        mods = (sd[f"{p}.scale_shift_table"][None] + t0.reshape(B, 6, C)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        h = layer_norm(tok) * (1 + scale_msa) + shift_msa
        tok = tok + gate_msa * self_attention(sd, f"{p}.attn", h, heads)
        tok = tok + cross_attention_packed(sd, f"{p}.cross_attn", tok, packed, lens, heads)
        h = layer_norm(tok) * (1 + scale_mlp) + shift_mlp
        tok = tok + gate_mlp * mlp(sd, f"{p}.mlp", h)
    shift, scale = (sd["final_layer.scale_shift_table"][None] + temb[:, None]).chunk(2, dim=1)
    out = F.linear(
        layer_norm(tok) * (1 + scale) + shift, sd["final_layer.linear.weight"], sd["final_layer.linear.bias"]
    )
    return _unpatchify(out, grid, patch)
