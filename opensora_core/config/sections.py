"""Typed sub-configs: `model`, `vae`, `text_encoder`, `scheduler`, `dataset`, `tracking`.

Each family is a pydantic model with `extra="forbid"` and a literal `type`; the RunConfig fields are
discriminated unions on `type`, so `model = dict(type="STDiT-XL/2", ...)` from an Open-Sora config file
selects `STDiTConfig`. Field names are Open-Sora's constructor argument names. Model fields default to None,
meaning "use the model's own default" (listed in `defaults`); `build_kwargs()` passes only what was set.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from opensora_core.config.types import (
    Bool,
    DType,
    NonNegFloat,
    OptSize2,
    OptSize3,
    PosFloat,
    PosInt,
    Prob,
    Size2,
    Size3,
)


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, field names (and aliases) both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the matching builder: every field but `type` that is not None."""
        return self.model_dump(exclude={"type"}, exclude_none=True)

    def as_dict(self) -> dict[str, Any]:
        """The section as an Open-Sora style dict (with `type`, without unset fields), e.g. for build_vae."""
        return self.model_dump(exclude_none=True)


# --------------------------------------------------------------------------------------------- models

_XL = {"depth": 28, "hidden_size": 1152, "num_heads": 16, "mlp_ratio": 4.0, "in_channels": 4}


class _ModelBase(Section):
    """Arguments every Open-Sora model constructor shares."""

    # True: positional embeddings have a fixed grid, so the latent size must be a multiple of the patch.
    fixed_grid: ClassVar[bool] = True
    # True: forward accepts a per-frame mask `x_mask` (needed by mask_ratios / mask_strategy).
    supports_frame_mask: ClassVar[bool] = False
    # True: conditioned on T5-style caption embeddings (not CLIP pooled text or class labels).
    t5_conditioned: ClassVar[bool] = True
    # True: size/aspect-ratio embedders of width hidden_size / 3 (hidden_size must be divisible by 3).
    size_conditioned: ClassVar[bool] = False

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

    def model_defaults(self) -> dict[str, Any]:
        """Open-Sora's XL defaults for this type (used for cross-field checks when a field is unset)."""
        return {**_XL, "patch_size": (2, 2, 2) if self.type.endswith("x2") else (1, 2, 2)}

    def effective(self, name: str) -> Any:
        """The value of `name`, or the Open-Sora default when it is unset."""
        value = getattr(self, name, None)
        return self.model_defaults().get(name) if value is None else value

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


class STDiTConfig(_ScaleMixin, _CaptionModelMixin, _ModelBase):
    """Open-Sora 1.0 STDiT-XL/2 (fixed-size sincos positional embeddings)."""

    supports_frame_mask: ClassVar[bool] = True

    type: Literal["STDiT-XL/2"]
    enable_sequence_parallelism: Bool | None = Field(
        None, description="Open-Sora 1.0 sequence parallelism flag; needs plugin zero2-seq and sp_size > 1."
    )


class STDiT2Config(_CaptionModelMixin, _ModelBase):
    """Open-Sora 1.1 STDiT2-XL/2 (dynamic size, video-info conditioning, temporal RoPE, optional QK-norm)."""

    fixed_grid: ClassVar[bool] = False
    supports_frame_mask: ClassVar[bool] = True
    size_conditioned: ClassVar[bool] = True

    type: Literal["STDiT2-XL/2"]
    input_sq_size: PosInt | None = Field(
        None, description="Square size (pixels) the spatial pos-emb scale refers to; released models: 512."
    )
    qk_norm: Bool | None = Field(None, description="RMS-normalise q and k (released 1.1 models: True).")
    enable_sequence_parallelism: Bool | None = Field(
        None, description="Sequence parallelism flag (needs plugin zero2-seq and sp_size > 1)."
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


class DiTConfig(_ClassOrTextMixin, _ModelBase):
    """DiT-XL/2 and DiT-XL/2x2 (full spatio-temporal attention, adaLN-Zero, CLIP text or class labels)."""

    t5_conditioned: ClassVar[bool] = False

    type: Literal["DiT-XL/2", "DiT-XL/2x2"]


class LatteConfig(_ClassOrTextMixin, _ModelBase):
    """Latte-XL/2 and Latte-XL/2x2 (alternating spatial / temporal blocks)."""

    t5_conditioned: ClassVar[bool] = False

    type: Literal["Latte-XL/2", "Latte-XL/2x2"]


class PixArtConfig(_ScaleMixin, _CaptionModelMixin, _ModelBase):
    """PixArt-XL/2 (T2I blocks applied per frame, T5 cross-attention)."""

    type: Literal["PixArt-XL/2"]


class PixArtMSConfig(_ScaleMixin, _CaptionModelMixin, _ModelBase):
    """PixArtMS-XL/2 (multi-scale PixArt: size and aspect-ratio conditioning)."""

    fixed_grid: ClassVar[bool] = False
    size_conditioned: ClassVar[bool] = True

    type: Literal["PixArtMS-XL/2"]


ModelConfig = Annotated[
    STDiTConfig | STDiT2Config | DiTConfig | LatteConfig | PixArtConfig | PixArtMSConfig,
    Field(discriminator="type"),
]
MODEL_TYPES: dict[str, type[_ModelBase]] = {
    "STDiT-XL/2": STDiTConfig,
    "STDiT2-XL/2": STDiT2Config,
    "DiT-XL/2": DiTConfig,
    "DiT-XL/2x2": DiTConfig,
    "Latte-XL/2": LatteConfig,
    "Latte-XL/2x2": LatteConfig,
    "PixArt-XL/2": PixArtConfig,
    "PixArtMS-XL/2": PixArtMSConfig,
}

# ------------------------------------------------------------------------------------------------ VAE


_SD_VAE_SCALING = 0.18215


class _VAEBase(Section):
    spatial_stride: ClassVar[int] = 8

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the diffusion model sees."""
        return 4


class VideoAutoencoderKLConfig(_VAEBase):
    """Image VAE (SD) applied frame by frame: latent = 4 x T x H/8 x W/8, scaled by 0.18215."""

    type: Literal["VideoAutoencoderKL"]
    from_pretrained: str = Field(
        "stabilityai/sd-vae-ft-ema", description="diffusers AutoencoderKL id or path."
    )
    micro_batch_size: PosInt | None = Field(
        None, description="Frames encoded/decoded per chunk (None = all at once)."
    )
    scaling_factor: PosFloat = Field(_SD_VAE_SCALING, description="Latent scale (SD VAE: 0.18215).")
    sample_posterior: Bool = Field(
        True, description="Encode to a posterior sample (reference); False = the posterior mean."
    )
    subfolder: str | None = Field(None, description="Subfolder of the repo/folder holding the VAE.")
    cache_dir: str | None = Field(None, description="Hugging Face cache folder.")
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")


class VideoAutoencoderKLTemporalDecoderConfig(_VAEBase):
    """SVD temporal-decoder VAE (decode only)."""

    type: Literal["VideoAutoencoderKLTemporalDecoder"]
    from_pretrained: str = Field(..., description="Path or id of the temporal-decoder VAE weights.")
    micro_batch_size: PosInt | None = Field(None, description="Frames decoded per chunk.")
    scaling_factor: PosFloat = Field(_SD_VAE_SCALING, description="Latent scale (SD VAE: 0.18215).")
    subfolder: str | None = Field(None, description='Subfolder holding the VAE (e.g. "vae").')
    cache_dir: str | None = Field(None, description="Hugging Face cache folder.")
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")


class IdentityVAEConfig(_VAEBase):
    """Ours: no VAE, latent = pixels (3 channels, stride 1); for tiny CPU runs and tests."""

    spatial_stride: ClassVar[int] = 1

    type: Literal["identity"]
    in_channels: PosInt = Field(3, description="Pixel (= latent) channels.")
    micro_batch_size: PosInt | None = Field(None, description="Accepted for symmetry; nothing to chunk.")

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the diffusion model sees (= the pixels')."""
        return self.in_channels


VAEConfig = Annotated[
    VideoAutoencoderKLConfig | VideoAutoencoderKLTemporalDecoderConfig | IdentityVAEConfig,
    Field(discriminator="type"),
]
VAE_TYPES: dict[str, type[_VAEBase]] = {
    "VideoAutoencoderKL": VideoAutoencoderKLConfig,
    "VideoAutoencoderKLTemporalDecoder": VideoAutoencoderKLTemporalDecoderConfig,
    "identity": IdentityVAEConfig,
}

# --------------------------------------------------------------------------------------- text encoders


class T5Config(Section):
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


class ClipConfig(Section):
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


TextEncoderConfig = Annotated[T5Config | ClipConfig | ClassesConfig, Field(discriminator="type")]
TEXT_ENCODER_TYPES: dict[str, type[Section]] = {"t5": T5Config, "clip": ClipConfig, "classes": ClassesConfig}

# ----------------------------------------------------------------------------------------- schedulers

_RESPACING_RE = re.compile(r"^$|^ddim[1-9][0-9]*$|^[1-9][0-9]*(,[1-9][0-9]*)*$")


class IDDPMConfig(Section):
    """IDDPM (1000 linear-beta steps, learned range variance); `iddpm-speed` = SpeeDiffusion (training)."""

    type: Literal["iddpm", "iddpm-speed"]
    num_sampling_steps: PosInt | None = Field(
        None, description="Respaced sampling steps (overrides timestep_respacing); e.g. 100."
    )
    timestep_respacing: str | None = Field(
        None, description='"" or None = all 1000 steps (training); "100" or "10,20" sections; "ddimN".'
    )
    cfg_scale: NonNegFloat = Field(4.0, description="Classifier-free guidance scale (STDiT configs: 7.0).")
    cfg_channel: PosInt | None = Field(
        None, description="Guide only the first N output channels; None = C_out/2. Configs use 3."
    )
    noise_schedule: Literal["linear", "squaredcos_cap_v2"] | None = Field(
        None, description='Beta schedule ("linear").'
    )
    diffusion_steps: PosInt | None = Field(None, description="Training diffusion steps (1000).")
    learn_sigma: Bool | None = Field(None, description="The model predicts the variance range (True).")
    sigma_small: Bool | None = Field(None, description="Fixed small variance when not learned (False).")
    predict_xstart: Bool | None = Field(None, description="The model predicts x0 instead of noise (False).")
    use_kl: Bool | None = Field(None, description="Train with the rescaled KL loss (False).")
    rescale_learned_sigmas: Bool | None = Field(None, description="Rescaled MSE loss (False).")
    preserve_reference: Bool | None = Field(
        None, description="Ours: keep mask-0 reference frames exactly in masked sampling (reference: False)."
    )

    @model_validator(mode="after")
    def _check_steps(self) -> IDDPMConfig:
        total = self.diffusion_steps or 1000
        if self.num_sampling_steps is not None and self.num_sampling_steps > total:
            raise ValueError(
                f"num_sampling_steps ({self.num_sampling_steps}) must be at most the {total} diffusion steps"
            )
        return self

    @field_validator("timestep_respacing")
    @classmethod
    def _check_respacing(cls, v: str | None) -> str | None:
        if v is not None and not _RESPACING_RE.match(v.replace(" ", "")):
            raise ValueError(
                f'timestep_respacing must be "", a step count like "100", comma-separated counts like '
                f'"10,20", or "ddimN"; got {v!r}'
            )
        return v


class DPMSolverConfig(Section):
    """DPM-Solver++ (multistep, order 2) on the same discrete VP schedule; sampling only, no frame mask."""

    type: Literal["dpm-solver"]
    num_sampling_steps: PosInt = Field(20, description="Solver steps.")
    cfg_scale: NonNegFloat = Field(4.0, description="Classifier-free guidance scale.")
    noise_schedule: Literal["linear", "squaredcos_cap_v2"] | None = Field(
        None, description='Beta schedule ("linear").'
    )
    diffusion_steps: PosInt | None = Field(None, description="Diffusion steps of the schedule (1000).")
    order: Literal[1, 2] | None = Field(None, description="Multistep order (2).")
    lower_order_final: Bool | None = Field(None, description="Lower the order of the last steps (True).")


SchedulerConfig = Annotated[IDDPMConfig | DPMSolverConfig, Field(discriminator="type")]
SCHEDULER_TYPES: dict[str, type[Section]] = {
    "iddpm": IDDPMConfig,
    "iddpm-speed": IDDPMConfig,
    "dpm-solver": DPMSolverConfig,
}

# ------------------------------------------------------------------------------------------- datasets


class _DatasetBase(Section):
    type: str = Field(..., description="Dataset class (see the list of dataset types).")
    data_path: str | None = Field(
        None, description="Metadata table (csv/parquet; local path or s3://). `--data-path` sets it."
    )
    frame_interval: PosInt = Field(1, description="Take every k-th frame.")
    transform_name: Literal["center", "resize_crop"] = Field(
        "center", description="center: short-side resize + center crop; resize_crop: fill then crop."
    )
    root: str | None = Field(None, description="Folder prepended to relative video paths.")


class DatasetFromCSVConfig(_DatasetBase):
    """Open-Sora 1.0 dataset: headerless CSV (path, caption). Built from the 1.0 top-level keys too."""

    type: Literal["DatasetFromCSV"]
    data_path: str | None = Field(
        None,
        validation_alias=AliasChoices("data_path", "csv_path"),
        description="Headerless CSV of (path, caption) rows (`csv_path` accepted).",
    )
    num_frames: PosInt = Field(16, description="Frames per sample.")
    image_size: Size2 = Field((256, 256), description="(H, W) after crop.")
    use_image_transform: Bool = Field(False, description="Images instead of videos (ADM center crop + flip).")


class VideoTextDatasetConfig(_DatasetBase):
    """Fixed-size video/image dataset over a metadata table with `path` and `text` columns."""

    type: Literal["VideoTextDataset"]
    num_frames: PosInt = Field(16, description="Frames per sample.")
    image_size: Size2 = Field((256, 256), description="(H, W) after crop.")


class VariableVideoTextDatasetConfig(_DatasetBase):
    """Multi-resolution dataset; sizes come from `bucket_config` (needs num_frames/height/width columns)."""

    type: Literal["VariableVideoTextDataset"]
    num_frames: PosInt | None = Field(None, description="Unused (bucket sizes decide); kept for 1.1 configs.")
    image_size: OptSize2 = Field(
        (None, None), description="Unused (bucket sizes decide); kept for 1.1 configs."
    )


DatasetConfig = Annotated[
    DatasetFromCSVConfig | VideoTextDatasetConfig | VariableVideoTextDatasetConfig,
    Field(discriminator="type"),
]
DATASET_TYPES: dict[str, type[Section]] = {
    "DatasetFromCSV": DatasetFromCSVConfig,
    "VideoTextDataset": VideoTextDatasetConfig,
    "VariableVideoTextDataset": VariableVideoTextDatasetConfig,
}

# ------------------------------------------------------------------------------------------- tracking


class TrackingConfig(Section):
    """Ours: experiment tracking (see opensora_core.io.tracking.build_tracker)."""

    backend: Literal["none", "mlflow"] = Field("none", description="none or mlflow.")
    uri: str | None = Field(None, description="Tracking server URI; None = $MLFLOW_TRACKING_URI.")
    experiment: str = Field("opensora", description="Experiment name.")
    run_name: str | None = Field(None, description="Run name (default: generated).")
    request_timeout: PosFloat = Field(
        5.0, description="Seconds per tracking request (never blocks training)."
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and urlsplit(v).password is not None:
            raise ValueError(
                "the URI carries a password; put credentials in MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD environment variables, not in the config"
            )
        return v


# Sections whose value is a discriminated union on `type`, with their valid types.
UNION_SECTIONS: dict[str, dict[str, type[BaseModel]]] = {
    "model": MODEL_TYPES,
    "vae": VAE_TYPES,
    "text_encoder": TEXT_ENCODER_TYPES,
    "scheduler": SCHEDULER_TYPES,
    "dataset": DATASET_TYPES,
}
