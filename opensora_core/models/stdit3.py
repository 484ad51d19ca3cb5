"""STDiT3 (Open-Sora 1.2): separate spatial and temporal block lists, QK-norm, temporal RoPE, fps conditioning.

Checkpoint-compatible with the released Open-Sora 1.2 weights (``hpcai-tech/OpenSora-STDiT-v3``: keys
``spatial_blocks.i.*``, ``temporal_blocks.i.*``, ``fps_embedder``, ``rope.freqs``). Behaviour kept from the
reference because trained weights depend on it:
- one modulation ``t_block(t_emb + fps_emb)`` [B, 6C] is shared by every block (spatial and temporal) and by
  nothing else; each block adds its own ``scale_shift_table``; the final layer gets ``t_emb + fps_emb``;
- every block is norm1 -> self-attention -> cross-attention -> norm2 -> MLP; spatial blocks attend within a
  frame, temporal blocks over frames (same token positions) with RoPE;
- QK-norm comes *before* RoPE (1.1's STDiT2 rotates first);
- spatial positions: the dynamic 2-D sin-cos table with ``scale = sqrt(height[0] * width[0]) /
  input_sq_size`` and ``base_size = round(sqrt(S))``; no temporal table;
- ``x_mask`` frames marked False (conditioning frames) are modulated with the timestep-0 embedding (plus the
  same fps embedding) in every block and in the final layer, where (QUIRK kept for parity) their tokens are
  normalised and modulated with t, then normalised again and modulated with t0 (the shared :class:`~opensora_core.models.layers.T2IFinalLayer`, as in 1.1).
Not kept: the reference's spatial-token sequence parallelism; ours splits frames exactly like STDiT2's
(``opensora_core.parallel.sequence``).
"""

from __future__ import annotations

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
    approx_gelu,
    call_block,
    check_x_mask,
    grid_of,
    select_by_frame,
    t2i_modulate,
    to_torch_dtype,
    unpatchify,
)

__all__ = ["STDiT3", "STDiT3Block"]


class NormThenRopeAttention(Attention):
    """Self-attention whose optional RoPE rotates q and k *after* the qk-norm (Open-Sora 1.2 order).

    Same parameters and state-dict keys as :class:`Attention`; ``rope`` and ``_attend`` stay the hooks that
    sequence parallelism replaces. x [B, N, C] -> [B, N, C].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (
            t.transpose(1, 2) for t in self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).unbind(2)
        )  # [B, H, N, D] each
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        x = self._attend(q, k, v)  # [B, H, N, D]
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class STDiT3Block(nn.Module):
    """One STDiT3 block: self-attention within a frame (spatial) or across frames (``temporal``), then
    cross-attention to the caption and an MLP, with adaLN-single modulation from the shared ``t_block``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        backend: str = "sdpa",
        rope: Any = None,
        qk_norm: bool = False,
        temporal: bool = False,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.hidden_size = hidden_size
        # scale_shift_table first: it is the first key of each block in the official state dict
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = NormThenRopeAttention(
            hidden_size, num_heads=num_heads, qkv_bias=True, qk_norm=qk_norm, backend=backend, rope=rope
        )
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads, backend=backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _self_attention(self, x_m: torch.Tensor) -> torch.Tensor:
        """x_m [B, T, S, C] -> attention within each frame (spatial) or over frames per position (temporal)."""
        B, T, S, C = x_m.shape
        if self.temporal:
            out = self.attn(x_m.transpose(1, 2).reshape(B * S, T, C))  # [B*S, T, C]
            return out.view(B, S, T, C).transpose(1, 2)
        return self.attn(x_m.reshape(B * T, S, C)).view(B, T, S, C)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t_mod: torch.Tensor,
        y_mask: TextMask | torch.Tensor | None,
        x_mask: torch.Tensor | None,
        t0_mod: torch.Tensor | None,
        T: int,
        S: int,
    ) -> torch.Tensor:
        """x [B, T*S, C], y [B, L, C], t_mod / t0_mod [B, 6C], y_mask [B, L], x_mask bool [B, T]."""
        B, N, C = x.shape
        mod = select_by_frame(x_mask, t_mod, t0_mod) + self.scale_shift_table.reshape(1, 1, 1, 6 * C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(
            6, dim=-1
        )  # [B, T|1, 1, C]

        # self-attention
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm1(h), shift_msa, scale_msa)
        h = h + self.drop_path(gate_msa * self._self_attention(x_m))

        # cross-attention
        x = h.reshape(B, N, C)
        x = x + self.cross_attn(x, y, y_mask)

        # MLP
        h = x.view(B, T, S, C)
        x_m = t2i_modulate(self.norm2(h), shift_mlp, scale_mlp)
        h = h + self.drop_path(gate_mlp * self.mlp(x_m))
        return h.reshape(B, N, C)


def _info_tensor(name: str, value: Any, batch: int, device: torch.device) -> torch.Tensor:
    """fps / height / width (tensor [B] or [1], scalar or list) -> float32 tensor [B] on ``device``."""
    if value is None:
        raise ValueError(f"STDiT3.forward needs {name}= (a [B] tensor or a number)")
    t = torch.as_tensor(value, device=device).reshape(-1).to(torch.float32)
    if t.shape[0] == 1 and batch != 1:
        t = t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"STDiT3: {name} has {t.shape[0]} values for a batch of {batch}")
    return t


class STDiT3(nn.Module):
    """Open-Sora 1.2 STDiT3. ``forward(x, timestep, y, mask, x_mask, fps=, height=, width=)`` with
    x [B, C_in, T, H, W] of any size (padded to patch multiples, output cropped back) -> [B, C_out, T, H, W]
    float32. height/width are pixel sizes (the positional scale uses sample 0, as the reference).

    Arguments are Open-Sora's STDiT3Config fields plus ``dtype`` (input cast; default: the parameter dtype),
    ``attn_backend`` and ``grad_checkpointing``. ``only_train_temporal`` freezes everything but the temporal
    blocks, ``freeze_y_embedder`` the caption projection. ``enable_flash_attn`` picks the flash backend where
    usable; ``enable_layernorm_kernel`` is accepted and uses torch LayerNorm (same function as apex's fused
    kernel). ``enable_sequence_parallelism`` is the reference's own flag and is rejected: use ``sp_size``
    (``opensora_core.parallel.apply_sequence_parallel``).
    """

    def __init__(
        self,
        input_size: Sequence[int | None] = (None, None, None),
        input_sq_size: int = 512,
        in_channels: int = 4,
        patch_size: Sequence[int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        pred_sigma: bool = True,
        drop_path: float = 0.0,
        caption_channels: int = 4096,
        model_max_length: int = 300,
        qk_norm: bool = True,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
        only_train_temporal: bool = False,
        freeze_y_embedder: bool = False,
        dtype: str | torch.dtype | None = None,
        attn_backend: str | None = None,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(patch_size) != 3:
            raise ValueError(f"patch_size needs 3 values (T, H, W), got {patch_size}")
        if enable_sequence_parallelism:
            raise ValueError(
                "STDiT3: enable_sequence_parallelism is the reference's spatial split; set sp_size > 1 "
                "(plugin zero2-seq) instead, which splits frames (opensora_core.parallel.sequence)"
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
        self.input_dtype = None if dtype is None else to_torch_dtype(dtype)
        self.attn_backend = resolve_attn_backend(attn_backend, enable_flash_attn)
        self.grad_checkpointing = grad_checkpointing
        # Set from outside by opensora_core.parallel.apply_sequence_parallel (None = single device).
        self.sequence_parallel: Any = None
        head_dim = hidden_size // num_heads

        # registration order = the official state-dict order
        self.pos_embed = PositionEmbedding2D(hidden_size)
        self.rope = RotaryEmbedding(head_dim)
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(
            caption_channels,
            hidden_size,
            class_dropout_prob,
            act_layer=approx_gelu,
            token_num=model_max_length,
        )
        rates = [r.item() for r in torch.linspace(0, drop_path, depth, device="cpu")]

        def block(i: int, temporal: bool) -> STDiT3Block:
            rope = self.rope.rotate_queries_or_keys if temporal else None
            return STDiT3Block(
                hidden_size, num_heads, mlp_ratio, rates[i], self.attn_backend, rope, qk_norm, temporal
            )

        self.spatial_blocks = nn.ModuleList(block(i, temporal=False) for i in range(depth))
        self.temporal_blocks = nn.ModuleList(block(i, temporal=True) for i in range(depth))
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        self._init_weights()
        if only_train_temporal:
            for p in self.parameters():
                p.requires_grad_(False)
            for p in self.temporal_blocks.parameters():
                p.requires_grad_(True)
        if freeze_y_embedder:
            for p in self.y_embedder.parameters():
                p.requires_grad_(False)

    def _init_weights(self) -> None:
        """Reference initialisation: xavier-uniform Linears (bias 0); the fps embedder's first layer N(0, 0.02)
        and its second zero; the temporal blocks' attention, cross-attention and MLP output weights zero (so a
        fresh temporal block adds only biases)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.fps_embedder.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.fps_embedder.mlp[0].bias)
        nn.init.zeros_(self.fps_embedder.mlp[2].weight)
        nn.init.zeros_(self.fps_embedder.mlp[2].bias)
        for blk in self.temporal_blocks:
            nn.init.zeros_(blk.attn.proj.weight)
            nn.init.zeros_(blk.cross_attn.proj.weight)
            nn.init.zeros_(blk.mlp.fc2.weight)

    @property
    def blocks(self) -> list[nn.Module]:
        """Every block in execution order (spatial 0, temporal 0, spatial 1, ...)."""
        return [b for pair in zip(self.spatial_blocks, self.temporal_blocks, strict=True) for b in pair]

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
        fps: Any = None,
        height: Any = None,
        width: Any = None,
        force_drop_ids: torch.Tensor | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        """x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L], x_mask bool [B, T];
        fps/height/width: [B] tensors (or scalars, broadcast); other video info (num_frames, ar) is ignored.
        Returns float32 [B, C_out, T, H, W]."""
        dtype = self.dtype
        x = x.to(dtype)
        timestep = timestep.to(dtype)
        y = y.to(dtype)
        B, _, Tx, Hx, Wx = x.shape
        fps_t = _info_tensor("fps", fps, B, x.device)
        height_t = _info_tensor("height", height, B, x.device)
        width_t = _info_tensor("width", width, B, x.device)

        # patch grid (padded to patch multiples) and dynamic spatial positions
        grid = grid_of((Tx, Hx, Wx), self.patch_size)
        T, S = grid[0], grid[1] * grid[2]
        x_mask = check_x_mask(x_mask, B, T)
        scale = (height_t[0].item() * width_t[0].item()) ** 0.5 / self.input_sq_size
        pos = self.pos_embed(x, grid[1], grid[2], scale=scale, base_size=round(S**0.5))  # [1, S, C]

        # timestep + fps conditioning (the timestep-0 variant for conditioning frames)
        fps_emb = self.fps_embedder(fps_t[:, None], B)  # [B, C]
        t = self.t_embedder(timestep, dtype=x.dtype) + fps_emb  # [B, C]
        t_mod = self.t_block(t)  # [B, 6C]
        t0 = t0_mod = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype) + fps_emb
            t0_mod = self.t_block(t0)
        y = self.y_embedder(y, self.training, force_drop_ids).squeeze(1)  # [B, L, C]
        mask = prepare_text_mask(mask, y.shape[0], y.shape[1])  # checked once for every block

        x = self.x_embedder(x)  # [B, T*S, C]
        x = (x.view(B, T, S, -1) + pos[:, None]).flatten(1, 2)

        # sequence parallelism: this rank keeps T/sp whole frames (only temporal attention communicates)
        sp = self.sequence_parallel
        if sp is not None:
            x, T = sp.split_frames(x, T)  # [B, T/sp*S, C]
            x_mask = sp.chunk_frames(x_mask)

        checkpoint = self.grad_checkpointing and self.training
        for blk in self.blocks:
            x = call_block(blk, x, y, t_mod, mask, x_mask, t0_mod, T, S, checkpoint=checkpoint)

        x = self.final_layer(x, t, x_mask, t0, T, S)  # [B, N, p * C_out]
        if sp is not None:
            x = sp.gather_frames(x)  # every rank gets all T*S tokens
        x = unpatchify(x, grid, self.patch_size, self.out_channels, crop=(Tx, Hx, Wx))
        return x.to(torch.float32)
