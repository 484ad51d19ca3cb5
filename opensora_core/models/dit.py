"""DiT (Open-Sora 1.0 port of Meta's DiT): adaLN-Zero blocks with full spatio-temporal self-attention.

Checkpoint-compatible with Open-Sora's ``DiT-XL/2`` / ``DiT-XL/2x2`` and, through
``checkpoint.load_checkpoint`` (2-D patch conv widened, ``pos_embed`` dropped), with Meta's
``DiT-XL-2-256x256.pt`` / ``DiT-XL-2-512x512.pt``. Architecture (as the reference):
- patch tokens + fixed 2-D sin-cos table (``pos_embed_spatial``, every frame) + fixed 1-D sin-cos table over
  frames (``pos_embed_temporal``, unless ``no_temporal_pos_emb``);
- condition ``c = t_embedder(t) + y_embedder(y)``: y are pooled CLIP features ``[B, 1, 1, 512]``
  (``condition="text"``: CaptionEmbedder with a single null token) or class ids ``[B]``
  (``condition="label_<num_classes>"``: LabelEmbedder, null class = num_classes when dropout > 0);
- every block: ``shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaLN_modulation(c)``,
  ``x += gate_msa * attn(modulate(norm1(x)))``, ``x += gate_mlp * mlp(modulate(norm2(x)))`` with
  ``modulate(x) = x * (1 + scale) + shift`` and the LayerNorm evaluated in float32;
- adaLN-Zero final layer (``shift, scale``), unpatchify with the output channel varying fastest.
Extensions: inputs whose size differs from ``input_size`` are padded to patch multiples, get positional
tables for their own grid and are cropped back.

``Latte`` (latte.py) re-uses these blocks with alternating spatial / temporal attention.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from opensora_core.models.attention import Attention, resolve_attn_backend
from opensora_core.models.layers import (
    CaptionEmbedder,
    FinalLayer,
    LabelEmbedder,
    Mlp,
    PatchEmbed3D,
    TimestepEmbedder,
    approx_gelu,
    call_block,
    grid_of,
    init_backbone_weights,
    keep_buffers_on_load,
    require_plain_frames,
    sincos_table_1d,
    sincos_table_2d,
    t2i_modulate,
    to_torch_dtype,
    unpatchify,
)

__all__ = ["DiT", "DiTBlock", "parse_condition"]

logger = logging.getLogger(__name__)

_LABEL_CONDITION = re.compile(r"label_(\d+)")


def parse_condition(condition: str) -> int | None:
    """Open-Sora ``condition``: "text" -> None (pooled text features); "label_<N>" -> N classes."""
    if condition == "text":
        return None
    found = _LABEL_CONDITION.fullmatch(condition)
    if found is None or int(found.group(1)) < 1:
        raise ValueError(
            f"condition must be 'text' (pooled CLIP features) or 'label_<num_classes>' such as 'label_1000', "
            f"got {condition!r}"
        )
    return int(found.group(1))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (keys ``norm1``, ``attn``, ``norm2``, ``mlp``, ``adaLN_modulation``).

    Works on grouped tokens: x [B, G, L, C] attends within each of the B*G groups of L tokens (DiT: G = 1,
    L = T*S; Latte spatial: G = T, L = S; Latte temporal: G = S, L = T); c [B, C] modulates every group of
    its sample.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, backend: str = "sdpa"
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True, backend=backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=approx_gelu)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    @staticmethod
    def _norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        # The reference normalises in float32 and casts back (no-op in fp32).
        return norm(x.to(torch.float32)).to(x.dtype)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [B, G, L, C], c [B, C] -> [B, G, L, C]."""
        B, G, L, C = x.shape
        mod = self.adaLN_modulation(c)[:, None, None, :]  # [B, 1, 1, 6C]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = t2i_modulate(self._norm(self.norm1, x), shift_msa, scale_msa)
        h = self.attn(h.reshape(B * G, L, C)).view(B, G, L, C)
        x = x + gate_msa * h
        h = t2i_modulate(self._norm(self.norm2, x), shift_mlp, scale_mlp)
        return x + gate_mlp * self.mlp(h)


class DiT(nn.Module):
    """Open-Sora DiT. ``forward(x [B, C_in, T, H, W], timestep [B], y)`` -> [B, C_out, T, H, W] float32
    (C_out = 2*C_in with learn_sigma); y = pooled text ``[B, 1, 1, caption_channels]`` (or ``[B, C]``) for
    ``condition="text"``, class ids ``[B]`` (int) for ``condition="label_<N>"``.

    Arguments are Open-Sora's (``enable_layernorm_kernel`` accepted, torch LayerNorm used;
    ``enable_sequence_parallelism`` accepted, parallelism is applied from outside; ``model_max_length`` is
    unused as in the reference) plus ``attn_backend`` ("sdpa" | "flash" | "math", default from
    enable_flash_attn) and ``grad_checkpointing`` (per-block activation checkpointing in training).
    """

    def __init__(
        self,
        input_size: Sequence[int] = (16, 32, 32),
        in_channels: int = 4,
        patch_size: Sequence[int] = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
        condition: str = "text",
        no_temporal_pos_emb: bool = False,
        caption_channels: int = 512,
        model_max_length: int = 77,
        dtype: str | torch.dtype | None = torch.float32,
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
        if enable_sequence_parallelism:
            logger.info("%s: enable_sequence_parallelism is applied by the trainer", type(self).__name__)
        self.num_classes = parse_condition(condition)
        self.condition = condition
        self.use_text_encoder = self.num_classes is None
        self.input_size = tuple(int(s) for s in input_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.depth = depth
        self.mlp_ratio = mlp_ratio
        self.caption_channels = caption_channels
        self.model_max_length = model_max_length
        self.no_temporal_pos_emb = no_temporal_pos_emb
        self.dtype = to_torch_dtype(dtype)
        # enable_flashattn: the Open-Sora 1.0 spelling of enable_flash_attn, accepted as an alias
        self.attn_backend = resolve_attn_backend(attn_backend, enable_flash_attn or bool(enable_flashattn))
        self.grad_checkpointing = grad_checkpointing
        self.grid = grid_of(self.input_size, self.patch_size)
        self.num_temporal = self.grid[0]
        self.num_spatial = self.grid[1] * self.grid[2]

        self.register_buffer("pos_embed_spatial", sincos_table_2d(hidden_size, self.grid[1:]))  # [1, S, C]
        self.register_buffer("pos_embed_temporal", sincos_table_1d(hidden_size, self.grid[0]))  # [1, T, C]
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        if self.num_classes is None:
            self.y_embedder: nn.Module = CaptionEmbedder(
                caption_channels, hidden_size, class_dropout_prob, act_layer=approx_gelu, token_num=1
            )
        else:
            self.y_embedder = LabelEmbedder(self.num_classes, hidden_size, class_dropout_prob)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, self.attn_backend) for _ in range(depth)
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(self.patch_size), self.out_channels)

        self.initialize_weights()
        keep_buffers_on_load(self, ("pos_embed_spatial", "pos_embed_temporal"))
        self._post_init()

    def _post_init(self) -> None:
        """Hook for subclasses, run at the end of ``__init__`` (keeps one explicit constructor signature)."""

    def initialize_weights(self) -> None:
        """Reference init: :func:`~opensora_core.models.layers.init_backbone_weights`, patch conv bias 0,
        caption MLP N(0, 0.02), adaLN modulations and the final linear zero (label table keeps torch's
        N(0, 1))."""
        init_backbone_weights(self)
        nn.init.zeros_(self.x_embedder.proj.bias)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.use_text_encoder:
            nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
            nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)

    # ---- helpers --------------------------------------------------------------------------------------

    def _pos_tables(
        self, grid: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial [1, S, C] and temporal [1, T, C] tables: the buffers, or computed for another grid."""
        t, h, w = grid
        spatial, temporal = self.pos_embed_spatial, self.pos_embed_temporal
        if (h, w) != self.grid[1:]:
            spatial = sincos_table_2d(self.hidden_size, (h, w)).to(device=device, dtype=spatial.dtype)
        if t != self.grid[0]:
            temporal = sincos_table_1d(self.hidden_size, t).to(device=device, dtype=temporal.dtype)
        return spatial, temporal

    def null_caption(self, batch_size: int) -> torch.Tensor:
        """The null condition of classifier-free guidance, repeated ``batch_size`` times.

        text: the learned null caption ``[B, 1, 1, caption_channels]``; label: the null class id
        ``num_classes`` as a LongTensor ``[B]`` (needs class_dropout_prob > 0).
        """
        if self.use_text_encoder:
            return self.y_embedder.y_embedding[None, None].repeat(batch_size, 1, 1, 1)
        if self.y_embedder.embedding_table.num_embeddings <= self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was built with class_dropout_prob=0, so it has no null class for "
                "classifier-free guidance; use cfg_scale 1 or a model trained with class dropout"
            )
        device = self.y_embedder.embedding_table.weight.device
        return torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)

    def _condition(self, y: torch.Tensor, force_drop_ids: torch.Tensor | None) -> torch.Tensor:
        """y -> [B, C]: pooled text features through the caption MLP, or class ids through the label table."""
        if not self.use_text_encoder:
            if y.is_floating_point() or y.ndim != 1:
                raise ValueError(
                    f"{type(self).__name__}({self.condition}) expects class ids y as an integer tensor [B], "
                    f"got {y.dtype} {list(y.shape)}"
                )
            return self.y_embedder(y, self.training, force_drop_ids)  # [B, C]
        if y.ndim == 2:
            y = y[:, None, None]  # pooled [B, C_cap] -> [B, 1, 1, C_cap]
        if y.ndim != 4 or tuple(y.shape[1:]) != (1, 1, self.caption_channels):
            raise ValueError(
                f"{type(self).__name__}(condition='text') expects pooled text features y "
                f"[B, 1, 1, {self.caption_channels}] (caption_channels), got {list(y.shape)}"
            )
        y = self.y_embedder(y.to(self.dtype), self.training, force_drop_ids)  # [B, 1, 1, C]
        return y[:, 0, 0]

    def _blocks(self, x: torch.Tensor, c: torch.Tensor, pos_temporal: torch.Tensor) -> torch.Tensor:
        """x [B, T, S, C] (spatial positions added), c [B, C] -> [B, T, S, C]: full attention over T*S."""
        B, T, S, C = x.shape
        if not self.no_temporal_pos_emb:
            x = x + pos_temporal[:, :, None]  # [1, T, 1, C]: same table entry for every token of a frame
        x = x.reshape(B, 1, T * S, C)
        checkpoint = self.grad_checkpointing and self.training
        for block in self.blocks:
            x = call_block(block, x, c, checkpoint=checkpoint)
        return x.view(B, T, S, C)

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
        """x [B, C_in, T, H, W], timestep [B], y (see class doc). ``mask`` (text mask) and extra video_info
        kwargs are accepted and ignored; ``x_mask`` must be None or all True."""
        x = x.to(self.dtype)
        B, _, Tx, Hx, Wx = x.shape
        grid = grid_of((Tx, Hx, Wx), self.patch_size)
        T, S = grid[0], grid[1] * grid[2]
        require_plain_frames(x_mask, B, T, type(self).__name__)
        pos_spatial, pos_temporal = self._pos_tables(grid, x.device)

        x = self.x_embedder(x)  # [B, T*S, C]
        x = x.view(B, T, S, -1) + pos_spatial[:, None]  # [B, T, S, C]
        c = self.t_embedder(timestep, dtype=x.dtype) + self._condition(y, force_drop_ids)  # [B, C]
        x = self._blocks(x, c, pos_temporal)  # [B, T, S, C]

        x = self.final_layer(x.reshape(B, T * S, -1), c)  # [B, N, prod(patch) * C_out]
        x = unpatchify(x, grid, self.patch_size, self.out_channels, crop=(Tx, Hx, Wx))
        return x.to(torch.float32)
