"""STDiT (Open-Sora 1.0): spatial-temporal DiT with adaLN-single and T5 cross-attention.

Checkpoint-compatible with the released Open-Sora 1.0 weights: same module names, shapes and numerics,
including the reference quirks that trained weights depend on:
- the temporal attention works on the un-normalised residual and re-uses the spatial gate ``gate_msa``;
- the temporal sin-cos embedding is added only to the temporal-attention input of block 0;
- cross-attention has no norm and no gate; the final layer is modulated by the raw timestep embedding.
Fixed from the reference: caption dropout works on CPU; non-divisible T/H/W are padded and cropped back;
inputs whose size differs from ``input_size`` get positional tables computed for their own grid.
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
    T2IFinalLayer,
    TimestepEmbedder,
    apply_freeze,
    approx_gelu,
    call_block,
    check_x_mask,
    gated_residual,
    grid_of,
    init_t2i_weights,
    keep_buffers_on_load,
    select_by_frame,
    sincos_table_1d,
    sincos_table_2d,
    t2i_modulate,
    to_torch_dtype,
    unpatchify,
)

__all__ = ["STDiT", "STDiTBlock"]

logger = logging.getLogger(__name__)


class STDiTBlock(nn.Module):
    """One STDiT block: spatial attn -> temporal attn -> cross-attn -> MLP (keys as Open-Sora 1.0)."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, backend=backend)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads, backend=backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        self.attn_temp = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, backend=backend)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t_mod: torch.Tensor,
        y_mask: TextMask | torch.Tensor | None,
        tpe: torch.Tensor | None,
        x_mask: torch.Tensor | None,
        t0_mod: torch.Tensor | None,
        T: int,
        S: int,
    ) -> torch.Tensor:
        """x [B, T*S, C], y [B, L, C], t_mod/t0_mod [B, 6C], y_mask [B, L], tpe [1, T, C], x_mask [B, T]."""
        B, N, C = x.shape
        mod = select_by_frame(x_mask, t_mod, t0_mod)  # [B, T or 1, 1, 6C]
        mod = mod + self.scale_shift_table.reshape(1, 1, 1, 6 * C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)

        # spatial attention over the S tokens of each frame
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm1(h), shift_msa, scale_msa)  # [B, T, S, C]
        x_s = self.attn(x_m.reshape(B * T, S, C)).view(B, T, S, C)
        h = gated_residual(h, gate_msa, x_s, self.drop_path)

        # temporal attention over the T frames of each spatial position (un-normalised residual, gate_msa).
        # The [B*S, T, C] copy stays: SDPA on 5-D strided [B, S, H, T, D] views of the qkv output would skip
        # it, but inductor (torch 2.13, CPU) compiles that to wrong numbers (eager is right).
        x_t = h.transpose(1, 2).reshape(B * S, T, C)
        if tpe is not None:
            x_t = x_t + tpe
        x_t = self.attn_temp(x_t).view(B, S, T, C).transpose(1, 2)  # [B, T, S, C]
        h = gated_residual(h, gate_msa, x_t, self.drop_path)

        # cross-attention to the caption (no norm, no gate)
        x = h.reshape(B, N, C)
        x = x + self.cross_attn(x, y, y_mask)

        # MLP
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm2(h), shift_mlp, scale_mlp)
        h = gated_residual(h, gate_mlp, self.mlp(x_m), self.drop_path)
        return h.reshape(B, N, C)


class STDiT(nn.Module):
    """Open-Sora 1.0 STDiT. ``forward(x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L])``
    -> [B, C_out, T, H, W] float32 (C_out = 2*C_in with pred_sigma).

    Arguments are Open-Sora's (``enable_layernorm_kernel`` is accepted and uses torch LayerNorm,
    ``enable_sequence_parallelism`` and ``no_temporal_pos_emb`` are accepted and ignored, as in the reference
    single-device STDiT) plus ``attn_backend`` ("sdpa" | "flash" | "math", default from enable_flash_attn)
    and ``grad_checkpointing`` (per-block activation checkpointing in training). ``dtype`` (inputs are cast
    to it) defaults to the parameter dtype instead of the reference's fixed float32, so a model moved to
    bf16 works without also passing dtype.
    """

    def __init__(
        self,
        input_size: Sequence[int] = (1, 32, 32),
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
        dtype: str | torch.dtype | None = None,
        space_scale: float = 1.0,
        time_scale: float = 1.0,
        freeze: str | None = None,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
        attn_backend: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(input_size) != 3 or len(patch_size) != 3:
            raise ValueError(f"input_size and patch_size need 3 values (T, H, W): {input_size}, {patch_size}")
        if any(s is None for s in input_size):
            raise ValueError("STDiT needs a fixed input_size (T, H, W); use STDiT2 for dynamic sizes")
        if enable_sequence_parallelism:
            logger.info("STDiT: enable_sequence_parallelism is applied by the trainer, not inside the model")
        self.input_size = tuple(int(s) for s in input_size)
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
        self.input_dtype = None if dtype is None else to_torch_dtype(dtype)
        self.space_scale = space_scale
        self.time_scale = time_scale
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.attn_backend = resolve_attn_backend(attn_backend, enable_flash_attn)
        self.grad_checkpointing = grad_checkpointing
        # Set from outside by opensora_core.parallel.apply_sequence_parallel (None = single device).
        self.sequence_parallel: Any = None
        self.grid = grid_of(self.input_size, self.patch_size)
        self.num_temporal = self.grid[0]
        self.num_spatial = self.grid[1] * self.grid[2]

        self.register_buffer("pos_embed", self._spatial_table(self.grid[1], self.grid[2]))  # [1, S, C]
        self.register_buffer("pos_embed_temporal", self._temporal_table(self.grid[0]))  # [1, T, C]
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(
            caption_channels,
            hidden_size,
            class_dropout_prob,
            act_layer=approx_gelu,
            token_num=model_max_length,
        )
        rates = [r.item() for r in torch.linspace(0, drop_path, depth, device="cpu")]
        self.blocks = nn.ModuleList(
            STDiTBlock(hidden_size, num_heads, mlp_ratio, rates[i], self.attn_backend) for i in range(depth)
        )
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        init_t2i_weights(self, zero_block_projs=("cross_attn", "attn_temp"))
        apply_freeze(self, freeze)
        # Positional buffers are functions of the config: never loaded from a checkpoint (as the reference,
        # which deletes them before loading); a state dict with or without them loads.
        keep_buffers_on_load(self, ("pos_embed", "pos_embed_temporal"))

    # ---- helpers --------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """Inputs are cast to this dtype: the ``dtype`` argument, else the patch-embedding weight dtype."""
        return self.input_dtype or self.x_embedder.proj.weight.dtype

    def _spatial_table(self, h: int, w: int) -> torch.Tensor:
        return sincos_table_2d(self.hidden_size, (h, w), scale=self.space_scale)

    def _temporal_table(self, t: int) -> torch.Tensor:
        return sincos_table_1d(self.hidden_size, t, scale=self.time_scale)

    def _pos_tables(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t, h, w = grid
        if (h, w) == self.grid[1:]:
            spatial = self.pos_embed
        else:
            spatial = self._spatial_table(h, w).to(device=device, dtype=self.pos_embed.dtype)
        if t == self.grid[0]:
            temporal = self.pos_embed_temporal
        else:
            temporal = self._temporal_table(t).to(device=device, dtype=self.pos_embed_temporal.dtype)
        return spatial, temporal

    def null_caption(self, batch_size: int) -> torch.Tensor:
        """The learned null caption repeated: [B, 1, L, caption_channels] (the ``y_null`` of CFG)."""
        return self.y_embedder.y_embedding[None, None].repeat(batch_size, 1, 1, 1)

    # ---- forward --------------------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        force_drop_ids: torch.Tensor | None = None,
        **video_info: Any,
    ) -> torch.Tensor:
        """x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L] (1 = token) or None,
        x_mask bool [B, T] (False = frame modulated as timestep 0). Extra video_info kwargs are ignored."""
        dtype = self.dtype
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)
        B, _, Tx, Hx, Wx = x.shape
        grid = grid_of((Tx, Hx, Wx), self.patch_size)
        T, S = grid[0], grid[1] * grid[2]
        x_mask = check_x_mask(x_mask, B, T)
        pos_spatial, pos_temporal = self._pos_tables(grid, x.device)

        # embedding
        x = self.x_embedder(x)  # [B, T*S, C]
        x = (x.view(B, T, S, -1) + pos_spatial[:, None]).flatten(1, 2)  # same spatial table for every frame
        t = self.t_embedder(timestep, dtype=x.dtype)  # [B, C]
        t_mod = self.t_block(t)  # [B, 6C]
        t0 = t0_mod = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype)
            t0_mod = self.t_block(t0)
        y = self.y_embedder(y, self.training, force_drop_ids).squeeze(1)  # [B, L, C]
        mask = prepare_text_mask(mask, y.shape[0], y.shape[1])  # checked once for every block

        # sequence parallelism: this rank keeps T/sp whole frames (only temporal attention communicates)
        sp = self.sequence_parallel
        if sp is not None:
            x, T = sp.split_frames(x, T)  # [B, T/sp*S, C]
            x_mask, pos_temporal = sp.chunk_frames(x_mask), sp.chunk_frames(pos_temporal)

        # blocks (temporal sin-cos only into block 0's temporal attention)
        checkpoint = self.grad_checkpointing and self.training
        for i, block in enumerate(self.blocks):
            tpe = pos_temporal if i == 0 else None
            x = call_block(block, x, y, t_mod, mask, tpe, x_mask, t0_mod, T, S, checkpoint=checkpoint)

        # final layer + unpatchify
        x = self.final_layer(x, t, x_mask, t0, T, S)  # [B, N, prod(patch) * C_out]
        if sp is not None:
            x = sp.gather_frames(x)  # every rank gets all T*S tokens
        x = unpatchify(x, grid, self.patch_size, self.out_channels, crop=(Tx, Hx, Wx))
        return x.to(torch.float32)
