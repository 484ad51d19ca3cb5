"""Latent autoencoders: each VAE's typed config, builder and capabilities, declared once.

`VAES` maps a `vae = dict(type=NAME, ...)` name to its config class, its builder in `models/vae.py` (imported on
first build) and its :class:`VAECaps`. `opensora_core.config` builds `RunConfig.vae` from this table and
`build_vae` dispatches through it. Imports pydantic only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from opensora_core.entry import Entry, lookup
from opensora_core.fields import Bool, Float, PosFloat, PosInt, Section

# ------------------------------------------------------------------------------------------- configs

SD_VAE_SCALING_FACTOR = 0.18215


class _VAEBase(Section):
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
    scaling_factor: PosFloat = Field(SD_VAE_SCALING_FACTOR, description="Latent scale (SD VAE: 0.18215).")
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
    scaling_factor: PosFloat = Field(SD_VAE_SCALING_FACTOR, description="Latent scale (SD VAE: 0.18215).")
    subfolder: str | None = Field(None, description='Subfolder holding the VAE (e.g. "vae").')
    cache_dir: str | None = Field(None, description="Hugging Face cache folder.")
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")


class IdentityVAEConfig(_VAEBase):
    """Ours: no VAE, latent = pixels (3 channels, stride 1); for tiny CPU runs and tests."""

    type: Literal["identity"]
    in_channels: PosInt = Field(3, description="Pixel (= latent) channels.")
    micro_batch_size: PosInt | None = Field(None, description="Accepted for symmetry; nothing to chunk.")

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the diffusion model sees (= the pixels')."""
        return self.in_channels


# Open-Sora 1.2: the temporal VAE (a stage of the pipeline below, not a run's `vae` on its own) ...
class VAETemporalConfig(Section):
    """Causal temporal VAE over SD latents, every size configurable (tiny variants for tests / CPU debugging)."""

    type: Literal["VAE_Temporal"]
    in_out_channels: PosInt = Field(4, description="Channels in and out (the spatial VAE's latent channels).")
    latent_embed_dim: PosInt = Field(4, description="Channels between encoder/decoder and the quant convs.")
    embed_dim: PosInt = Field(4, description="Latent channels (the posterior's).")
    filters: PosInt = Field(128, description="Width of the first level.")
    num_res_blocks: PosInt = Field(4, description="Residual blocks per level.")
    channel_multipliers: tuple[PosInt, ...] = Field(
        (1, 2, 2, 4), min_length=1, description="Width of each level, in multiples of `filters`."
    )
    temporal_downsample: tuple[Bool, ...] = Field(
        (True, True, False),
        description="Per level transition (len(channel_multipliers) - 1 entries): halve the frames there.",
    )
    num_groups: PosInt = Field(32, description="GroupNorm groups (must divide every level's width).")
    activation_fn: Literal["swish", "relu"] = Field("swish", description="Activation of the blocks.")


class VAETemporalSDConfig(Section):
    """The Open-Sora 1.2 temporal VAE: 4 -> 4 channels, frames / 4 (VAE_Temporal with the sizes below)."""

    ARCHITECTURE: ClassVar[dict[str, Any]] = dict(
        in_out_channels=4,
        latent_embed_dim=4,
        embed_dim=4,
        filters=128,
        num_res_blocks=4,
        channel_multipliers=(1, 2, 2, 4),
        temporal_downsample=(False, True, True),
    )

    type: Literal["VAE_Temporal_SD"]
    from_pretrained: str | None = Field(None, description="Checkpoint file/folder of the temporal VAE alone.")


TemporalVAEConfig = Annotated[VAETemporalConfig | VAETemporalSDConfig, Field(discriminator="type")]


# ... and the full 1.2 video VAE: the spatial VAE frame by frame, then the temporal VAE.
OPENSORA_V1_2_SHIFT = (-0.10, 0.34, 0.27, 0.98)
OPENSORA_V1_2_SCALE = (3.85, 2.32, 2.33, 3.06)
OPENSORA_V1_2_SPATIAL = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"


class _PipelineBase(_VAEBase):
    micro_frame_size: PosInt | None = Field(
        17, description="Frames per temporal-VAE chunk (17 frames -> 5 latent frames); None = whole clip."
    )
    from_pretrained: str | None = Field(
        None,
        description="Weights of the whole VAE (hub id such as hpcai-tech/OpenSora-VAE-v1.2, folder or file); "
        "None = the spatial VAE's own weights and a random temporal VAE.",
    )
    freeze_vae_2d: Literal[True] = Field(
        True, description="The spatial VAE is frozen (training it, freeze_vae_2d=False, is not supported)."
    )
    cal_loss: Bool = Field(
        False,
        description="VAE-training mode of the reference: encode returns (z, posterior, x_z) unnormalised and "
        "decode (x, x_z); the sampler and trainer need False.",
    )

    def temporal_chunk(self) -> tuple[int, int] | None:
        """``(pixel frames, latent frames)`` of one temporal-VAE chunk ((17, 5) in Open-Sora 1.2); None when the
        clip is one chunk (``micro_frame_size=None``). Each subclass has ``time_downsample_factor()``."""
        if self.micro_frame_size is None:
            return None
        factor = self.time_downsample_factor()  # type: ignore[attr-defined]
        return self.micro_frame_size, -(-self.micro_frame_size // factor)

    def as_dict(self) -> dict[str, Any]:
        """As :meth:`Section.as_dict`, but a chunk size of None (= no chunks, not the default) is kept."""
        out = super().as_dict()
        for key in ("micro_frame_size", "micro_batch_size"):
            if key in type(self).model_fields and getattr(self, key) is None:
                out[key] = None
        return out


class VideoAutoencoderPipelineConfig(_PipelineBase):
    """Spatial VAE (`vae_2d`) then temporal VAE (`vae_temporal`); latent = (z - shift) / scale."""

    type: Literal["VideoAutoencoderPipeline"]
    vae_2d: VideoAutoencoderKLConfig = Field(..., description="The frame-wise spatial VAE.")
    vae_temporal: TemporalVAEConfig = Field(..., description="The temporal VAE on the spatial latents.")
    micro_frame_size: PosInt | None = Field(
        None, description="Frames per temporal-VAE chunk (17 in Open-Sora 1.2); None = whole clip."
    )
    shift: Float | tuple[Float, ...] = Field(0.0, description="Latent shift (one value or one per channel).")
    scale: Float | tuple[Float, ...] = Field(1.0, description="Latent scale (one value or one per channel).")

    @property
    def latent_channels(self) -> int:
        """Channels of the latent the diffusion model sees (the temporal VAE's posterior)."""
        t = self.vae_temporal
        return t.embed_dim if isinstance(t, VAETemporalConfig) else int(t.ARCHITECTURE["embed_dim"])

    def time_downsample_factor(self) -> int:
        """2 ** (halvings of `vae_temporal.temporal_downsample`)."""
        t = self.vae_temporal
        halvings = (
            t.temporal_downsample
            if isinstance(t, VAETemporalConfig)
            else t.ARCHITECTURE["temporal_downsample"]
        )
        return 2 ** sum(bool(h) for h in halvings)


class OpenSoraVAEV12Config(_PipelineBase):
    """Open-Sora 1.2 VAE: SD-XL VAE + VAE_Temporal_SD, official shift/scale (4 channels, 17 -> 5 frames, H/W / 8)."""

    type: Literal["OpenSoraVAE_V1_2"]
    micro_batch_size: PosInt | None = Field(
        4, description="Frames per spatial-VAE chunk (None = all at once)."
    )
    local_files_only: Bool = Field(False, description="Never download; use the local cache only.")

    def time_downsample_factor(self) -> int:
        """4: VAE_Temporal_SD (and the tiny debug VAE, which keeps its layout) halves the frames twice."""
        return 2 ** sum(VAETemporalSDConfig.ARCHITECTURE["temporal_downsample"])


# ------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class VAECaps:
    """spatial_stride: pixels per latent cell along H and W (the latent is [B, C, T, H/s, W/s])."""

    spatial_stride: int


VAES: dict[str, Entry[VAECaps]] = {
    "VideoAutoencoderKL": Entry(
        VideoAutoencoderKLConfig, "opensora_core.models.vae:build_kl", VAECaps(spatial_stride=8)
    ),
    "VideoAutoencoderKLTemporalDecoder": Entry(
        VideoAutoencoderKLTemporalDecoderConfig,
        "opensora_core.models.vae:build_temporal_decoder",
        VAECaps(spatial_stride=8),
    ),
    "identity": Entry(
        IdentityVAEConfig, "opensora_core.models.vae:build_identity", VAECaps(spatial_stride=1)
    ),
    "OpenSoraVAE_V1_2": Entry(
        OpenSoraVAEV12Config,
        "opensora_core.models.vae_v1_2:build_opensora_vae_v1_2",
        VAECaps(spatial_stride=8),
    ),
    "VideoAutoencoderPipeline": Entry(
        VideoAutoencoderPipelineConfig,
        "opensora_core.models.vae_v1_2:build_pipeline",
        VAECaps(spatial_stride=8),
    ),
}

# Stages of VideoAutoencoderPipeline: `build_vae` builds them, but their `encode` returns a posterior (not a
# latent tensor), so they are not a run's `vae` and RunConfig does not offer them.
TEMPORAL_VAES: dict[str, Entry[VAECaps]] = {
    "VAE_Temporal": Entry(
        VAETemporalConfig, "opensora_core.models.vae_temporal:build_vae_temporal", VAECaps(spatial_stride=1)
    ),
    "VAE_Temporal_SD": Entry(
        VAETemporalSDConfig,
        "opensora_core.models.vae_temporal:build_vae_temporal_sd",
        VAECaps(spatial_stride=1),
    ),
}


def carried_frames(vae: Any, condition_frame_length: int) -> int:
    """Pixel frames of ``condition_frame_length`` latent frames (the frames a loop carries over, which stitching
    drops from every later clip): the same number without temporal compression, whole chunks with it
    (Open-Sora 1.2: 5 latent frames = 17 frames). ``vae``: a validated vae config.

    Raises ValueError when the length is not whole chunks of a compressing VAE (the chunks decode together).
    """
    chunk = getattr(vae, "temporal_chunk", None)
    if chunk is None:
        return condition_frame_length
    sizes = chunk()
    if sizes is None:
        raise ValueError(
            f"condition_frame_length with vae.type {vae.type!r} needs vae.micro_frame_size (loops carry whole "
            "temporal chunks); set micro_frame_size=17 as Open-Sora 1.2 does"
        )
    pixels, latents = sizes
    if condition_frame_length % latents:
        raise ValueError(
            f"condition_frame_length={condition_frame_length} counts latent frames; with vae.type {vae.type!r} "
            f"({pixels} frames -> {latents} latent frames per chunk) it must be a multiple of {latents} "
            f"({latents} = the last {pixels} frames of the previous clip)"
        )
    return condition_frame_length // latents * pixels


def vae_caps(name: str) -> VAECaps:
    """Capabilities of VAE type `name` (ValueError listing the VAE types when unknown)."""
    return lookup(VAES, name, "vae").caps
