"""PixArt-alpha (Open-Sora 1.0 port): adaLN-single T2I blocks with T5 cross-attention.

Checkpoint-compatible with Open-Sora's ``PixArt-XL/2`` / ``PixArtMS-XL/2`` and, through
``checkpoint.load_checkpoint`` (``state_dict`` unwrapped, 2-D patch conv widened, ``pos_embed`` recomputed),
with ``PixArt-XL-2-{256x256,SAM-256x256,512x512}.pth`` and ``PixArt-XL-2-1024-MS.pth``. As the reference:
- tokens: patch embedding + 2-D sin-cos table with ``scale=space_scale`` and ``base_size = floor(sqrt(S))``
  (S = spatial patches of ``input_size``) for every frame, + 1-D sin-cos over frames (``time_scale``)
  unless ``no_temporal_pos_emb``;
- ``t = t_embedder(timestep)`` (PixArtMS: ``+ cat(csize_embedder(hw), ar_embedder(ar))``),
  ``t0 = t_block(t)`` (SiLU, Linear(C, 6C));
- each block: ``(scale_shift_table[6, C] + t0) -> shift/scale/gate for msa and mlp``;
  ``x += gate_msa * attn(t2i_modulate(norm1(x)))`` with self-attention over **all T*S tokens**,
  ``x += cross_attn(x, y, mask)`` (no norm, no gate), ``x += gate_mlp * mlp(t2i_modulate(norm2(x)))``;
- T2IFinalLayer modulated by ``t`` (not t0), unpatchify with the output channel varying fastest.
Extensions: caption dropout on any device; non-divisible sizes padded and cropped back; inputs of another
size get positional tables for their grid (same ``base_size``, as PixArtMS always does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
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
    SizeEmbedder,
    T2IFinalLayer,
    TimestepEmbedder,
    apply_freeze,
    approx_gelu,
    call_block,
    grid_of,
    init_t2i_weights,
    keep_buffers_on_load,
    require_plain_frames,
    sincos_table_1d,
    sincos_table_2d,
    t2i_modulate,
    to_torch_dtype,
    unpatchify,
)

__all__ = ["PixArt", "PixArtBlock", "PixArtMS"]

logger = logging.getLogger(__name__)


class PixArtBlock(nn.Module):
    """PixArt block: self-attn -> cross-attn -> MLP (keys ``norm1``, ``attn``, ``cross_attn``, ``norm2``,
    ``mlp``, ``scale_shift_table``)."""

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

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, t0: torch.Tensor, y_mask: TextMask | torch.Tensor | None
    ) -> torch.Tensor:
        """x [B, N, C], y [B, L, C], t0 [B, 6C], y_mask [B, L] (1 = token), a TextMask or None -> [B, N, C]."""
        B, N, C = x.shape
        mod = self.scale_shift_table[None] + t0.reshape(B, 6, C)  # [B, 6, C]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # [B, 1, C]
        x = x + self.drop_path(gate_msa * self.attn(t2i_modulate(self.norm1(x), shift_msa, scale_msa)))
        x = x + self.cross_attn(x, y, y_mask)
        x = x + self.drop_path(gate_mlp * self.mlp(t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)))
        return x


class PixArt(nn.Module):
    """Open-Sora PixArt. ``forward(x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L])``
    -> [B, C_out, T, H, W] float32 (C_out = 2*C_in with pred_sigma).

    Arguments are Open-Sora's (``freeze``: None or "text"; ``enable_layernorm_kernel`` accepted, torch
    LayerNorm used; ``enable_sequence_parallelism`` accepted, parallelism is applied from outside) plus
    ``attn_backend`` ("sdpa" | "flash" | "math", default from enable_flash_attn) and ``grad_checkpointing``.
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
        dtype: str | torch.dtype | None = torch.float32,
        freeze: str | None = None,
        space_scale: float = 1.0,
        time_scale: float = 1.0,
        enable_flash_attn: bool = False,
        enable_layernorm_kernel: bool = False,
        enable_sequence_parallelism: bool = False,
        attn_backend: str | None = None,
        grad_checkpointing: bool = False,
        enable_flashattn: bool | None = None,
    ) -> None:
        super().__init__()
        if len(input_size) != 3 or len(patch_size) != 3:
            raise ValueError(f"input_size and patch_size need 3 values (T, H, W): {input_size}, {patch_size}")
        if any(s is None for s in input_size):
            raise ValueError(f"{type(self).__name__} needs a fixed input_size (T, H, W), got {input_size}")
        if freeze not in (None, "text"):
            raise ValueError(f"{type(self).__name__}: freeze must be None or 'text', got {freeze!r}")
        if enable_sequence_parallelism:
            logger.info("%s: enable_sequence_parallelism is applied by the trainer", type(self).__name__)
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
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.dtype = to_torch_dtype(dtype)
        self.space_scale = space_scale
        self.time_scale = time_scale
        # enable_flashattn: the Open-Sora 1.0 spelling of enable_flash_attn, accepted as an alias
        self.attn_backend = resolve_attn_backend(attn_backend, enable_flash_attn or bool(enable_flashattn))
        self.grad_checkpointing = grad_checkpointing
        self.grid = grid_of(self.input_size, self.patch_size)
        self.num_temporal = self.grid[0]
        self.num_spatial = self.grid[1] * self.grid[2]
        self.base_size = math.isqrt(self.num_spatial)

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
        self.register_buffer("pos_embed", self._spatial_table(*self.grid[1:]))  # [1, S, C]
        self.register_buffer("pos_embed_temporal", self._temporal_table(self.grid[0]))  # [1, T, C]
        rates = [r.item() for r in torch.linspace(0, drop_path, depth, device="cpu")]
        self.blocks = nn.ModuleList(
            PixArtBlock(hidden_size, num_heads, mlp_ratio, rates[i], self.attn_backend) for i in range(depth)
        )
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        self.initialize_weights()
        apply_freeze(self, freeze)  # "text": train everything but the cross-attention
        keep_buffers_on_load(self, ("pos_embed", "pos_embed_temporal"))
        self._post_init()

    def _post_init(self) -> None:
        """Hook for subclasses, run at the end of ``__init__`` (keeps one explicit constructor signature)."""

    def initialize_weights(self) -> None:
        """Reference init (:func:`~opensora_core.models.layers.init_t2i_weights`): cross_attn.proj and the
        final linear zero."""
        init_t2i_weights(self, zero_block_projs=("cross_attn",))

    # ---- helpers --------------------------------------------------------------------------------------

    def _spatial_table(self, h: int, w: int) -> torch.Tensor:
        return sincos_table_2d(self.hidden_size, (h, w), scale=self.space_scale, base_size=self.base_size)

    def _temporal_table(self, t: int) -> torch.Tensor:
        return sincos_table_1d(self.hidden_size, t, scale=self.time_scale)

    def _pos_tables(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial [1, S, C] and temporal [1, T, C] tables: the buffers, or computed for another grid."""
        t, h, w = grid
        spatial, temporal = self.pos_embed, self.pos_embed_temporal
        if (h, w) != self.grid[1:]:
            spatial = self._spatial_table(h, w).to(device=device, dtype=spatial.dtype)
        if t != self.grid[0]:
            temporal = self._temporal_table(t).to(device=device, dtype=temporal.dtype)
        return spatial, temporal

    def null_caption(self, batch_size: int) -> torch.Tensor:
        """The learned null caption repeated: [B, 1, L, caption_channels] (the ``y_null`` of CFG)."""
        return self.y_embedder.y_embedding[None, None].repeat(batch_size, 1, 1, 1)

    def _size_condition(self, t: torch.Tensor, size_info: Mapping[str, Any]) -> torch.Tensor:
        """Extra timestep conditioning; none for PixArt (PixArtMS adds image size and aspect ratio)."""
        return t

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
        """x [B, C_in, T, H, W], timestep [B], y [B, 1, L, C_cap], mask [B, L] (1 = token) or None.
        ``x_mask`` must be None or all True; PixArtMS reads ``data_info`` / ``height``, ``width``, ``ar`` from
        video_info, other kwargs are ignored."""
        x = x.to(self.dtype)
        timestep = timestep.to(self.dtype)
        y = y.to(self.dtype)
        B, _, Tx, Hx, Wx = x.shape
        grid = grid_of((Tx, Hx, Wx), self.patch_size)
        T, S = grid[0], grid[1] * grid[2]
        require_plain_frames(x_mask, B, T, type(self).__name__)
        pos_spatial, pos_temporal = self._pos_tables(grid, x.device)

        # embedding
        x = self.x_embedder(x).view(B, T, S, -1)  # [B, T, S, C]
        x = x + pos_spatial[:, None]
        if not self.no_temporal_pos_emb:
            x = x + pos_temporal[:, :, None]  # [1, T, 1, C]
        x = x.reshape(B, T * S, -1)
        t = self.t_embedder(timestep, dtype=x.dtype)  # [B, C]
        t = self._size_condition(t, video_info)
        t0 = self.t_block(t)  # [B, 6C]
        y = self.y_embedder(y, self.training, force_drop_ids).squeeze(1)  # [B, L, C]
        mask = prepare_text_mask(mask, y.shape[0], y.shape[1])  # checked once for every block

        # blocks
        checkpoint = self.grad_checkpointing and self.training
        for block in self.blocks:
            x = call_block(block, x, y, t0, mask, checkpoint=checkpoint)

        # final layer + unpatchify
        x = self.final_layer(x, t)  # [B, N, prod(patch) * C_out]
        x = unpatchify(x, grid, self.patch_size, self.out_channels, crop=(Tx, Hx, Wx))
        return x.to(torch.float32)


class PixArtMS(PixArt):
    """Multi-scale PixArt: the timestep embedding also carries the image size and aspect ratio.

    ``t = t_embedder(timestep) + cat(csize_embedder(hw) [B, 2C/3], ar_embedder(ar) [B, C/3])`` feeds both
    t_block and the final layer. Size information comes as Open-Sora's ``data_info={"hw": [B, 2] (H, W in
    pixels), "ar": [B, 1] (H / W)}`` or as ``height=``, ``width=`` (and optionally ``ar=``, default
    height / width) tensors; a batch of 1 or B is repeated to the model batch (e.g. 2B under CFG).
    """

    def _post_init(self) -> None:
        if self.hidden_size % 3:
            raise ValueError(f"PixArtMS needs hidden_size divisible by 3, got {self.hidden_size}")
        # Created after the weight init, as in the reference (torch default init).
        self.csize_embedder = SizeEmbedder(self.hidden_size // 3)
        self.ar_embedder = SizeEmbedder(self.hidden_size // 3)

    def _size_tensors(
        self, info: Mapping[str, Any], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(hw [B', 2], ar [B', 1]) in the model dtype from data_info or height/width/ar."""

        def as_tensor(value: Any) -> torch.Tensor:
            return torch.as_tensor(value, device=device).to(self.dtype)

        data_info = info.get("data_info")
        if data_info is not None:
            missing = [k for k in ("hw", "ar") if k not in data_info]
            if missing:
                raise ValueError(
                    f"PixArtMS: data_info lacks {missing}; expected {{'hw': [B, 2], 'ar': [B, 1]}}"
                )
            hw, ar = as_tensor(data_info["hw"]), as_tensor(data_info["ar"])
        elif info.get("height") is not None and info.get("width") is not None:
            height = as_tensor(info["height"]).reshape(-1)
            width = as_tensor(info["width"]).reshape(-1)
            hw = torch.stack([height, width], dim=1)
            ar = as_tensor(info["ar"]) if info.get("ar") is not None else height / width
        else:
            raise ValueError(
                "PixArtMS needs the image size: pass data_info={'hw': [B, 2], 'ar': [B, 1]} or height= and "
                "width= (pixels, optionally ar= height/width) as keyword arguments"
            )
        return hw.reshape(hw.shape[0], -1), ar.reshape(ar.shape[0], -1)

    def _size_condition(self, t: torch.Tensor, size_info: Mapping[str, Any]) -> torch.Tensor:
        hw, ar = self._size_tensors(size_info, t.device)
        B = t.shape[0]
        csize = self.csize_embedder(hw, B)  # [B, 2C/3]
        ar_emb = self.ar_embedder(ar, B)  # [B, C/3]
        return t + torch.cat([csize, ar_emb], dim=1)
