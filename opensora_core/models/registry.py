"""Diffusion transformers: each family's typed config, builder and capabilities, declared once.

`MODELS` maps every model name of Open-Sora's registry to an :class:`~opensora_core.entry.Entry`: the config
class that validates `model = dict(type=NAME, ...)`, the constructor (imported on first build), the default
sizes it is built with (`STDiT-XL/2` = depth 28, hidden 1152, 16 heads, patch (1, 2, 2)) and its
:class:`ModelCaps`. `opensora_core.config` builds `RunConfig.model` from this table; `build_model`, the trainer,
the sampler and `parallel.sequence` read it. Imports pydantic only.

Add a model family: write its module (say `models/foo.py` with class `Foo`), add its config class below and one
entry `"Foo-XL/2": Entry(FooConfig, "opensora_core.models.foo:Foo", ModelCaps(...), _xl((1, 2, 2)))`.
Field names are Open-Sora's constructor argument names; fields default to None, meaning "the model's own
default", and `build_kwargs()` passes only what was set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator

from opensora_core.entry import Entry, lookup
from opensora_core.fields import Bool, DType, OptSize3, PosFloat, PosInt, Prob, Section, Size3

# ------------------------------------------------------------------------------------------- configs


class ModelConfigBase(Section):
    """Arguments every Open-Sora model constructor shares."""

    type: str = Field(..., description="Model name (see the list of model types).")
    from_pretrained: str | None = Field(
        None,
        description="Weights to load after building: a local .pt/.pth/.safetensors file, a checkpoint "
        "directory, or a hub id (e.g. hpcai-tech/OpenSora-STDiT-v2-stage3). `--ckpt-path` sets it.",
    )
    input_size: OptSize3 | None = Field(
        None,
        description="Latent (T, H, W). Normally left unset: the scripts derive it from num_frames, "
        "image_size and the VAE.",
    )
    in_channels: PosInt | None = Field(None, description="Latent channels (default: the VAE's, 4).")
    patch_size: Size3 | None = Field(None, description="(t, h, w) patch; XL/2: (1, 2, 2), XL/2x2: (2, 2, 2).")
    hidden_size: PosInt | None = Field(None, description="Transformer width (XL: 1152).")
    depth: PosInt | None = Field(None, description="Number of blocks (XL: 28).")
    num_heads: PosInt | None = Field(None, description="Attention heads (XL: 16).")
    mlp_ratio: PosFloat | None = Field(None, description="MLP hidden size / hidden_size (4.0).")
    class_dropout_prob: Prob | None = Field(
        None, description="Probability of replacing the condition by the null condition in training (0.1)."
    )
    dtype: DType | None = Field(None, description="Model compute dtype; unset = the top-level `dtype`.")
    enable_flash_attn: Bool | None = Field(
        None,
        validation_alias=AliasChoices("enable_flash_attn", "enable_flashattn"),
        description="Use flash-attn when importable on CUDA (legacy spelling `enable_flashattn` accepted).",
    )
    enable_layernorm_kernel: Bool | None = Field(
        None, description="Use a fused LayerNorm kernel when available (apex on CUDA)."
    )
    attn_backend: Literal["sdpa", "flash", "math"] | None = Field(
        None,
        description="Ours: attention implementation. sdpa (default), flash (flash-attn, CUDA), math "
        "(exact reference numerics).",
    )
    grad_checkpointing: Bool | None = Field(
        None, description="Ours: checkpoint every block's activations (same as top-level grad_checkpoint)."
    )

    def effective(self, name: str) -> Any:
        """The value of `name`, or the default this type is built with (its MODELS entry) when unset."""
        value = getattr(self, name, None)
        return MODELS[self.type].defaults.get(name) if value is None else value

    def build_kwargs(self, with_pretrained: bool = False) -> dict[str, Any]:
        """Keyword arguments for `opensora_core.models.build_model(type, **kwargs)`.

        Only the fields that are set; `type` is left out, and `from_pretrained` too unless `with_pretrained`
        (build_model then loads those weights after construction).
        """
        exclude = {"type"} if with_pretrained else {"type", "from_pretrained"}
        return self.model_dump(exclude=exclude, exclude_none=True)


class _CaptionModelMixin(Section):
    pred_sigma: Bool | None = Field(None, description="Also predict the variance (output 2*C channels).")
    drop_path: Prob | None = Field(None, description="Stochastic depth rate (0.0).")
    no_temporal_pos_emb: Bool | None = Field(None, description="Skip the temporal positional embedding.")
    caption_channels: PosInt | None = Field(
        None, description="Text embedding width (default: the text encoder's output, 4096 for T5-XXL)."
    )
    model_max_length: PosInt | None = Field(
        None, description="Caption tokens (default: the text encoder's model_max_length)."
    )
    freeze: Literal["not_temporal", "text"] | None = Field(
        None,
        description="Freeze parameters: `not_temporal` trains only temporal attention, `text` freezes "
        "cross-attention.",
    )


class _ScaleMixin(Section):
    space_scale: PosFloat | None = Field(
        None, description="Spatial pos-emb scale (0.5 for 256px from a 512px init, 1.0 at 512px)."
    )
    time_scale: PosFloat | None = Field(
        None, description="Temporal pos-emb scale (2/3 for 64-frame configs)."
    )


class STDiTConfig(_ScaleMixin, _CaptionModelMixin, ModelConfigBase):
    """Open-Sora 1.0 STDiT-XL/2 (fixed-size sincos positional embeddings)."""

    type: Literal["STDiT-XL/2"]
    enable_sequence_parallelism: Bool | None = Field(
        None, description="Open-Sora 1.0 sequence parallelism flag; needs plugin zero2-seq and sp_size > 1."
    )


class STDiT2Config(_CaptionModelMixin, ModelConfigBase):
    """Open-Sora 1.1 STDiT2-XL/2 (dynamic size, video-info conditioning, temporal RoPE, optional QK-norm)."""

    type: Literal["STDiT2-XL/2"]
    input_sq_size: PosInt | None = Field(
        None, description="Square size (pixels) the spatial pos-emb scale refers to; released models: 512."
    )
    qk_norm: Bool | None = Field(None, description="RMS-normalise q and k (released 1.1 models: True).")
    enable_sequence_parallelism: Bool | None = Field(
        None, description="Sequence parallelism flag (needs plugin zero2-seq and sp_size > 1)."
    )


class STDiT3Config(ModelConfigBase):
    """Open-Sora 1.2 STDiT3-XL/2 and STDiT3-3B/2 (spatial + temporal block lists, QK-norm, RoPE, fps)."""

    type: Literal["STDiT3-XL/2", "STDiT3-3B/2"]
    pred_sigma: Bool | None = Field(None, description="Also predict the variance (output 2*C channels).")
    drop_path: Prob | None = Field(None, description="Stochastic depth rate (0.0).")
    caption_channels: PosInt | None = Field(
        None, description="Text embedding width (default: the text encoder's output, 4096 for T5-XXL)."
    )
    model_max_length: PosInt | None = Field(
        None, description="Caption tokens (default: the text encoder's model_max_length; 1.2: 300)."
    )
    input_sq_size: PosInt | None = Field(
        None, description="Square size (pixels) the spatial pos-emb scale refers to (512)."
    )
    qk_norm: Bool | None = Field(
        None, description="RMS-normalise q and k (default and released models: True)."
    )
    only_train_temporal: Bool | None = Field(None, description="Train the temporal blocks only (False).")
    freeze_y_embedder: Bool | None = Field(
        None, description="Freeze the caption projection y_embedder (1.2 training stages: True)."
    )
    enable_sequence_parallelism: Literal[False] | None = Field(
        None,
        description="The reference's spatial-split flag; only False is accepted. Sequence parallelism is "
        "sp_size > 1 (plugin zero2-seq), which splits frames.",
    )


class _ClassOrTextMixin(Section):
    condition: str | None = Field(
        None, description='"text" (CLIP pooled text) or "label_N" (N classes, e.g. label_1000, label_101).'
    )
    no_temporal_pos_emb: Bool | None = Field(None, description="Skip the temporal positional embedding.")
    caption_channels: PosInt | None = Field(None, description="Text embedding width (CLIP: 512).")
    model_max_length: PosInt | None = Field(None, description="Text tokens (CLIP: 77).")
    learn_sigma: Bool | None = Field(None, description="Also predict the variance (output 2*C channels).")
    enable_sequence_parallelism: Bool | None = Field(
        None, description="Sequence parallelism flag (needs plugin zero2-seq and sp_size > 1)."
    )

    @field_validator("condition")
    @classmethod
    def _check_condition(cls, v: str | None) -> str | None:
        if v is not None and v != "text" and not re.fullmatch(r"label_[1-9][0-9]*", v):
            raise ValueError(f'condition must be "text" or "label_N" (e.g. "label_1000"), got {v!r}')
        return v

    def num_label_classes(self) -> int | None:
        """N for condition "label_N", else None."""
        cond = self.condition
        return int(cond.split("_", 1)[1]) if cond and cond.startswith("label_") else None


class DiTConfig(_ClassOrTextMixin, ModelConfigBase):
    """DiT-XL/2 and DiT-XL/2x2 (full spatio-temporal attention, adaLN-Zero, CLIP text or class labels)."""

    type: Literal["DiT-XL/2", "DiT-XL/2x2"]


class LatteConfig(_ClassOrTextMixin, ModelConfigBase):
    """Latte-XL/2 and Latte-XL/2x2 (alternating spatial / temporal blocks)."""

    type: Literal["Latte-XL/2", "Latte-XL/2x2"]


class PixArtConfig(_ScaleMixin, _CaptionModelMixin, ModelConfigBase):
    """PixArt-XL/2 (T2I blocks applied per frame, T5 cross-attention)."""

    type: Literal["PixArt-XL/2"]


class PixArtMSConfig(_ScaleMixin, _CaptionModelMixin, ModelConfigBase):
    """PixArtMS-XL/2 (multi-scale PixArt: size and aspect-ratio conditioning)."""

    type: Literal["PixArtMS-XL/2"]


# ------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ModelCaps:
    """What a model family takes and supports; consumers ask this instead of checking class names.

    conditioning: "caption" = T5 per-token caption embeddings with a mask; "text_or_class" = CLIP pooled text
        or class labels, chosen by the config's `condition` ("text" / "label_N").
    frame_mask: forward takes a per-frame mask `x_mask` [B, T] (mask_ratios in training, mask_strategy and
        long-video loops in sampling).
    sequence_parallel: `parallel.sequence.apply_sequence_parallel` can split it over frames (sp_size > 1).
    video_info: the size-conditioning inputs forward (and the scheduler's timestep transform) takes (subset of
        height, width, num_frames, ar, fps); with "ar" the size and aspect embedders are hidden_size / 3 wide,
        so hidden_size must be divisible by 3.
    multi_resolution: Open-Sora's `multi_resolution` spelling this family samples with (None: no size info).
    fixed_grid: positional embeddings have a fixed grid, so latent sizes must be multiples of the patch.
    """

    conditioning: Literal["caption", "text_or_class"]
    frame_mask: bool = False
    sequence_parallel: bool = False
    video_info: tuple[str, ...] = ()
    multi_resolution: str | None = None
    fixed_grid: bool = True


def _stdit3(hidden_size: int, num_heads: int) -> dict[str, Any]:
    """Open-Sora 1.2's STDiT3 sizes: depth 28, patch (1, 2, 2), the given width and heads."""
    return {**_xl(_P1), "hidden_size": hidden_size, "num_heads": num_heads}


def _xl(patch_size: tuple[int, int, int]) -> dict[str, Any]:
    """Open-Sora's XL sizes (the constructor defaults for mlp_ratio / in_channels spelled out) with a patch."""
    return {
        "depth": 28,
        "hidden_size": 1152,
        "num_heads": 16,
        "mlp_ratio": 4.0,
        "in_channels": 4,
        "patch_size": patch_size,
    }


_CAPTION = ModelCaps(conditioning="caption")
_TEXT_OR_CLASS = ModelCaps(conditioning="text_or_class")
_P1, _P2 = (1, 2, 2), (2, 2, 2)
# Open-Sora 1.2 samples STDiT3 with multi_resolution="STDiT2"; num_frames feeds the rflow timestep transform.
_STDIT3_CAPS = ModelCaps(
    conditioning="caption",
    frame_mask=True,
    sequence_parallel=True,
    video_info=("height", "width", "num_frames", "fps"),
    multi_resolution="STDiT2",
    fixed_grid=False,
)

MODELS: dict[str, Entry[ModelCaps]] = {
    "STDiT-XL/2": Entry(
        STDiTConfig,
        "opensora_core.models.stdit:STDiT",
        ModelCaps(conditioning="caption", frame_mask=True, sequence_parallel=True),
        _xl(_P1),
    ),
    "STDiT2-XL/2": Entry(
        STDiT2Config,
        "opensora_core.models.stdit2:STDiT2",
        ModelCaps(
            conditioning="caption",
            frame_mask=True,
            sequence_parallel=True,
            video_info=("height", "width", "num_frames", "ar", "fps"),
            multi_resolution="STDiT2",
            fixed_grid=False,
        ),
        _xl(_P1),
    ),
    "STDiT3-XL/2": Entry(STDiT3Config, "opensora_core.models.stdit3:STDiT3", _STDIT3_CAPS, _stdit3(1152, 16)),
    "STDiT3-3B/2": Entry(STDiT3Config, "opensora_core.models.stdit3:STDiT3", _STDIT3_CAPS, _stdit3(1872, 26)),
    "DiT-XL/2": Entry(DiTConfig, "opensora_core.models.dit:DiT", _TEXT_OR_CLASS, _xl(_P1)),
    "DiT-XL/2x2": Entry(DiTConfig, "opensora_core.models.dit:DiT", _TEXT_OR_CLASS, _xl(_P2)),
    "Latte-XL/2": Entry(LatteConfig, "opensora_core.models.latte:Latte", _TEXT_OR_CLASS, _xl(_P1)),
    "Latte-XL/2x2": Entry(LatteConfig, "opensora_core.models.latte:Latte", _TEXT_OR_CLASS, _xl(_P2)),
    "PixArt-XL/2": Entry(PixArtConfig, "opensora_core.models.pixart:PixArt", _CAPTION, _xl(_P1)),
    "PixArtMS-XL/2": Entry(
        PixArtMSConfig,
        "opensora_core.models.pixart:PixArtMS",
        ModelCaps(
            conditioning="caption",
            video_info=("height", "width", "ar"),
            multi_resolution="PixArtMS",
            fixed_grid=False,
        ),
        _xl(_P1),
    ),
}


def model_caps(name: str) -> ModelCaps:
    """Capabilities of model type `name` (ValueError listing the model types when unknown)."""
    return lookup(MODELS, name, "model").caps


def family_of(model: object) -> tuple[str, Entry[ModelCaps]] | None:
    """`(name, entry)` of the MODELS family whose class built `model` (the most derived match), else None.

    Imports the model modules (call it where torch is loaded anyway, e.g. in `parallel.sequence`). Names that
    share a class (DiT-XL/2, DiT-XL/2x2) share capabilities, so any of them answers.
    """
    mro = type(model).__mro__
    matches = []
    for name, entry in MODELS.items():
        cls = entry.load_builder()
        if isinstance(cls, type) and cls in mro:
            matches.append((mro.index(cls), name, entry))
    if not matches:
        return None
    _, name, entry = min(matches, key=lambda m: (m[0], m[1]))
    return name, entry
