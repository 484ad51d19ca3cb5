"""STDiT2 (Open-Sora 1.1): dynamic-size STDiT with video-info conditioning, temporal RoPE and qk-norm.

Checkpoint-compatible with the released Open-Sora 1.1 weights (same keys incl. ``rope.freqs``). Behaviour kept
from the reference because trained weights depend on it:
- spatial positions are a dynamic 2-D sin-cos table, ``scale = sqrt(height[0] * width[0]) / input_sq_size``
  and ``base_size = round(sqrt(S))``; there is no temporal sin-cos table;
- ``t_spc = t + [csize(height, width), ar]`` drives the spatial/MLP modulation, ``t_tmp = t + fl(num_frames)
  + fps(fps)`` the temporal one; the final layer uses the raw timestep embedding;
- with a frame mask the final layer's timestep-0 branch gets ``t0 + data_info`` (unmasked frames the bare ``t``)
  and re-modulates the already modulated tokens (see ``T2IFinalLayer``);
- the temporal branch has its own norm and modulation; RoPE is applied to q/k before the qk-norm.
Fixed from the reference: CPU caption dropout; flash attention is a backend choice (no ``N > B`` heuristic).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from opensora_core.models.attention import (
    Attention,
    MultiHeadCrossAttention,
    TextMask,
    prepare_text_mask,
    resolve_attn_backend,
)
from opensora_core.models.layers import (
    CaptionEmbedder,
    DropPath,
    Mlp,
    PatchEmbed3D,
    PositionEmbedding2D,
    RotaryEmbedding,
    SizeEmbedder,
    T2IFinalLayer,
    TimestepEmbedder,
    apply_freeze,
    approx_gelu,
    call_block,
    check_x_mask,
    gated_residual,
    grid_of,
    init_t2i_weights,
    select_by_frame,
    t2i_modulate,
    to_torch_dtype,
    unpatchify,
)

__all__ = ["STDiT2", "STDiT2Block"]

logger = logging.getLogger(__name__)

VIDEO_INFO = ("height", "width", "num_frames", "ar", "fps")


class STDiT2Block(nn.Module):
    """One STDiT2 block: spatial attn -> temporal attn (own norm/modulation, RoPE) -> cross-attn -> MLP."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        backend: str = "sdpa",
        rope: Any = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(
            hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, backend=backend
        )
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads, backend=backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        self.scale_shift_table_temporal = nn.Parameter(torch.randn(3, hidden_size) / hidden_size**0.5)
        self.norm_temp = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn_temp = Attention(
            hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, backend=backend, rope=rope
        )

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t_mod: torch.Tensor,
        t_tmp_mod: torch.Tensor,
        y_mask: TextMask | torch.Tensor | None,
        x_mask: torch.Tensor | None,
        t0_mod: torch.Tensor | None,
        t0_tmp_mod: torch.Tensor | None,
        T: int,
        S: int,
    ) -> torch.Tensor:
        """x [B, T*S, C], y [B, L, C], t_mod [B, 6C], t_tmp_mod [B, 3C], y_mask [B, L], x_mask [B, T]."""
        B, N, C = x.shape
        mod = select_by_frame(x_mask, t_mod, t0_mod) + self.scale_shift_table.reshape(1, 1, 1, 6 * C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(
            6, dim=-1
        )  # [B, T|1, 1, C]
        mod_tmp = select_by_frame(x_mask, t_tmp_mod, t0_tmp_mod)
        mod_tmp = mod_tmp + self.scale_shift_table_temporal.reshape(1, 1, 1, 3 * C)
        shift_tmp, scale_tmp, gate_tmp = mod_tmp.chunk(3, dim=-1)

        # spatial attention
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm1(h), shift_msa, scale_msa)
        x_s = self.attn(x_m.reshape(B * T, S, C)).view(B, T, S, C)
        h = gated_residual(h, gate_msa, x_s, self.drop_path)

        # temporal attention (own norm and modulation)
        x_m = t2i_modulate(self.norm_temp(h), shift_tmp, scale_tmp)  # [B, T, S, C]
        x_t = self.attn_temp(x_m.transpose(1, 2).reshape(B * S, T, C)).view(B, S, T, C).transpose(1, 2)
        h = gated_residual(h, gate_tmp, x_t, self.drop_path)

        # cross-attention
        x = h.reshape(B, N, C)
        x = x + self.cross_attn(x, y, y_mask)

        # MLP
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm2(h), shift_mlp, scale_mlp)
        h = gated_residual(h, gate_mlp, self.mlp(x_m), self.drop_path)
        return h.reshape(B, N, C)


def _info_tensor(name: str, value: Any, batch: int, device: torch.device) -> torch.Tensor:
    """Video-info value (tensor [B] / [1], scalar or list) -> float tensor [B] on ``device``."""
    t = torch.as_tensor(value, device=device).reshape(-1).to(torch.float32)
    if t.numel() == 1 and batch != 1:
        t = t.expand(batch)
    if t.shape[0] != batch and batch % t.shape[0] == 0:
        t = t.repeat(batch // t.shape[0])
    if t.shape[0] != batch:
        raise ValueError(f"STDiT2: video info {name!r} has {t.shape[0]} values for a batch of {batch}")
    return t


class STDiT2(nn.Module):
    """Open-Sora 1.1 STDiT2. ``forward(x, timestep, y, mask, x_mask, height=, width=, num_frames=, ar=, fps=)``
    with x [B, C_in, T, H, W] of any size (padded to patch multiples, output cropped back) -> [B, C_out, T, H,
    W] float32. height/width are pixel sizes (the positional scale uses sample 0, as the reference).

    Arguments are Open-Sora's STDiT2Config fields plus ``dtype`` (input cast; default: the parameter dtype),
    ``enable_sequence_parallelism`` (accepted, ignored as in the reference), ``attn_backend`` and
    ``grad_checkpointing``. ``no_temporal_pos_emb`` is accepted and unused (STDiT2 has no temporal table).
    """

    def __init__(
        self,
        input_size: Sequence[int | None] = (None, None, None),
        input_sq_size: int = 32,
        in_channels: int = 4,
        patch_size: Sequence[int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        pred_sigma: bool = True,
        drop_path: float = 0.0,
        no_temporal_pos_emb: bool = False,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        freeze: str | None = None,
        qk_norm: bool = False,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
        dtype: str | torch.dtype | None = None,
        attn_backend: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(patch_size) != 3:
            raise ValueError(f"patch_size needs 3 values (T, H, W), got {patch_size}")
        if hidden_size % 3:
            raise ValueError(f"STDiT2 hidden_size must be divisible by 3 (size embedders), got {hidden_size}")
        if enable_sequence_parallelism:
            logger.info(
                "STDiT2: sequence parallelism is not part of the model (ignored, as in the reference)"
            )
        self.input_size = tuple(input_size)
        self.input_sq_size = input_sq_size
        self.patch_size = tuple(int(p) for p in patch_size)
        self.in_channels = in_channels
        self.pred_sigma = pred_sigma
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.depth = depth
        self.mlp_ratio = mlp_ratio
        self.caption_channels = caption_channels
        self.model_max_length = model_max_length
        self.qk_norm = qk_norm
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.input_dtype = None if dtype is None else to_torch_dtype(dtype)
        self.attn_backend = resolve_attn_backend(attn_backend, enable_flash_attn)
        self.grad_checkpointing = grad_checkpointing
        # Set from outside by opensora_core.parallel.apply_sequence_parallel (None = single device).
        self.sequence_parallel: Any = None
        head_dim = hidden_size // num_heads

        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(
            caption_channels,
            hidden_size,
            class_dropout_prob,
            act_layer=approx_gelu,
            token_num=model_max_length,
        )
        self.rope = RotaryEmbedding(head_dim)
        rates = [r.item() for r in torch.linspace(0, drop_path, depth, device="cpu")]
        self.blocks = nn.ModuleList(
            STDiT2Block(
                hidden_size,
                num_heads,
                mlp_ratio,
                rates[i],
                self.attn_backend,
                rope=self.rope.rotate_queries_or_keys,
                qk_norm=qk_norm,
            )
            for i in range(depth)
        )
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)
        self.csize_embedder = SizeEmbedder(hidden_size // 3)  # (height, width) -> 2C/3
        self.ar_embedder = SizeEmbedder(hidden_size // 3)  # aspect ratio -> C/3
        self.fl_embedder = SizeEmbedder(hidden_size)  # num_frames -> C
        self.fps_embedder = SizeEmbedder(hidden_size)  # fps -> C

        init_t2i_weights(self, zero_block_projs=("cross_attn", "attn_temp"))
        nn.init.normal_(self.t_block_temp[1].weight, std=0.02)
        apply_freeze(self, freeze)

    @property
    def dtype(self) -> torch.dtype:
        """Inputs are cast to this dtype: the ``dtype`` argument, else the patch-embedding weight dtype."""
        return self.input_dtype or self.x_embedder.proj.weight.dtype

    def null_caption(self, batch_size: int) -> torch.Tensor:
        """The learned null caption repeated: [B, 1, L, caption_channels] (the ``y_null`` of CFG)."""
        return self.y_embedder.y_embedding[None, None].repeat(batch_size, 1, 1, 1)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        height: Any = None,
        width: Any = None,
        num_frames: Any = None,
        ar: Any = None,
        fps: Any = None,
        force_drop_ids: torch.Tensor | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        """x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L], x_mask bool [B, T];
        height/width/num_frames/ar/fps: [B] tensors (or scalars, broadcast). Returns float32 [B, C_out, T, H, W]."""
        info = {"height": height, "width": width, "num_frames": num_frames, "ar": ar, "fps": fps}
        missing = [k for k in VIDEO_INFO if info[k] is None]
        if missing:
            raise ValueError(
                f"STDiT2.forward needs video info {', '.join(missing)} (1-D tensors of length B)"
            )
        dtype = self.dtype
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)
        B, _, Tx, Hx, Wx = x.shape
        info_t = {k: _info_tensor(k, v, B, x.device) for k, v in info.items()}

        # video-info conditioning
        hw = torch.stack([info_t["height"], info_t["width"]], dim=1)  # [B, 2]
        data_info = torch.cat(
            [self.csize_embedder(hw, B), self.ar_embedder(info_t["ar"][:, None], B)], dim=1
        )  # [B, C]
        fl = self.fl_embedder(info_t["num_frames"][:, None], B) + self.fps_embedder(info_t["fps"][:, None], B)

        # patch grid (padded to patch multiples) and dynamic spatial positions
        grid = grid_of((Tx, Hx, Wx), self.patch_size)
        T, S = grid[0], grid[1] * grid[2]
        x_mask = check_x_mask(x_mask, B, T)
        resolution = (info_t["height"][0].item() * info_t["width"][0].item()) ** 0.5
        scale = resolution / self.input_sq_size
        base_size = round(S**0.5)

        x = self.x_embedder(x)  # [B, T*S, C]
        pos = self.pos_embed(x, grid[1], grid[2], scale=scale, base_size=base_size)  # [1, S, C]
        x = (x.view(B, T, S, -1) + pos[:, None]).flatten(1, 2)

        t = self.t_embedder(timestep, dtype=x.dtype)  # [B, C]
        t_mod = self.t_block(t + data_info)  # [B, 6C]
        t_tmp_mod = self.t_block_temp(t + fl)  # [B, 3C]
        t0 = t0_mod = t0_tmp_mod = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype)
            t0_mod = self.t_block(t0 + data_info)
            t0_tmp_mod = self.t_block_temp(t0 + fl)
        y = self.y_embedder(y, self.training, force_drop_ids).squeeze(1)  # [B, L, C]
        mask = prepare_text_mask(mask, y.shape[0], y.shape[1])  # checked once for every block

        # sequence parallelism: this rank keeps T/sp whole frames (only temporal attention communicates)
        sp = self.sequence_parallel
        if sp is not None:
            x, T = sp.split_frames(x, T)  # [B, T/sp*S, C]
            x_mask = sp.chunk_frames(x_mask)

        checkpoint = self.grad_checkpointing and self.training
        for block in self.blocks:
            x = call_block(
                block, x, y, t_mod, t_tmp_mod, mask, x_mask, t0_mod, t0_tmp_mod, T, S, checkpoint=checkpoint
            )

        # reference: the final layer's timestep-0 branch gets t0 + data_info, unmasked frames the bare t
        x = self.final_layer(x, t, x_mask, None if t0 is None else t0 + data_info, T, S)
        if sp is not None:
            x = sp.gather_frames(x)  # every rank gets all T*S tokens
        x = unpatchify(x, grid, self.patch_size, self.out_channels, crop=(Tx, Hx, Wx))
        return x.to(torch.float32)
