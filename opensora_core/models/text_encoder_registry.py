"""Prompt encoders: each text encoder's typed config, builder and capabilities, declared once.

`TEXT_ENCODERS` maps a `text_encoder = dict(type=NAME, ...)` name to its config class, its builder in
`models/text_encoders.py` (imported on first build, called as `builder(cfg, device, dtype)`) and its
:class:`TextEncoderCaps`. `opensora_core.config` builds `RunConfig.text_encoder` from this table and
`build_text_encoder` dispatches through it. Imports pydantic only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from opensora_core.entry import Entry, lookup
from opensora_core.fields import Bool, PosInt, Section

# ------------------------------------------------------------------------------------------- configs


class _PlacementFields(Section):
    """Where and in which precision a Hugging Face text encoder runs (memory options for real GPUs).

    `device` and `dtype` are the constructor arguments of Open-Sora's `T5Encoder` of the same names; `offload`
    is ours. See docs/gpu-memory.md for the memory each choice saves.
    """

    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:\d+)?|mps)$",
        description='Device of the text encoder ("cpu", "cuda", "cuda:1"); None = the device of the run. '
        '"cpu" keeps T5-XXL (19 GB in fp32) off the GPU; prompts are encoded on the CPU.',
    )
    dtype: Literal["fp32", "bf16"] | None = Field(
        None,
        description="Precision of the text encoder; None = fp32 when sampling (Open-Sora's inference), the "
        "compute dtype when training. bf16 halves its memory (embeddings within bf16 rounding); fp16 is not "
        "offered: T5 v1.1 overflows in fp16.",
    )
    offload: Bool = Field(
        False,
        description="Sampling only: encode every prompt of the run first, then free the encoder's weights "
        "(loaded again only if a later run needs them), so the diffusion model and VAE run without it.",
    )


class T5Config(_PlacementFields):
    """T5 encoder: per-token embeddings [B, 1, L, 4096] and mask [B, L]."""

    type: Literal["t5"]
    from_pretrained: str = Field(
        "DeepFloyd/t5-v1_1-xxl",
        description='Hub id or local folder; "debug/tiny-t5" builds a tiny random T5 in code (tests).',
    )
    model_max_length: PosInt = Field(120, description="Caption tokens (1.0: 120, 1.1: 200).")
    shardformer: Bool = Field(False, description="Use ColossalAI ShardFormer fused T5 (train configs).")
    local_cache: Bool = Field(False, description="Open-Sora 1.0: load from `cache_dir` without downloading.")
    subfolder: str | None = Field(None, description="Subfolder of the repo/folder holding the encoder.")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder.")
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")


class ClipConfig(_PlacementFields):
    """CLIP text encoder: pooled embedding [B, 1, 1, 512] (DiT / Latte text configs)."""

    type: Literal["clip"]
    from_pretrained: str = Field("openai/clip-vit-base-patch32", description="Hub id or local folder.")
    model_max_length: PosInt = Field(77, description="Tokens.")
    subfolder: str | None = Field(None, description="Subfolder of the repo/folder holding the encoder.")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder.")
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")


class ClassesConfig(Section):
    """Class-label "encoder": prompts are class ids; the null class is num_classes."""

    type: Literal["classes"]
    num_classes: PosInt = Field(..., description="Number of classes (ImageNet 1000, UCF-101 101).")


# ------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class TextEncoderCaps:
    """output: what `encode` returns as `y`, matched against the model's `ModelCaps.conditioning`.

    "caption": per-token embeddings [B, 1, L, D] plus a mask [B, L] (models conditioned on "caption");
    "pooled_text": one pooled embedding [B, 1, 1, D] (text_or_class models with condition "text");
    "class_ids": class ids [B] (text_or_class models with condition "label_N").
    """

    output: Literal["caption", "pooled_text", "class_ids"]


TEXT_ENCODERS: dict[str, Entry[TextEncoderCaps]] = {
    "t5": Entry(T5Config, "opensora_core.models.text_encoders:build_t5", TextEncoderCaps("caption")),
    "clip": Entry(
        ClipConfig, "opensora_core.models.text_encoders:build_clip", TextEncoderCaps("pooled_text")
    ),
    "classes": Entry(
        ClassesConfig, "opensora_core.models.text_encoders:build_classes", TextEncoderCaps("class_ids")
    ),
}


def text_encoder_caps(name: str) -> TextEncoderCaps:
    """Capabilities of text encoder type `name` (ValueError listing the text encoder types when unknown)."""
    return lookup(TEXT_ENCODERS, name, "text encoder").caps
