"""Latent autoencoders: each VAE's typed config, builder and capabilities, declared once.

`VAES` maps a `vae = dict(type=NAME, ...)` name to its config class, its builder in `models/vae.py` (imported on
first build) and its :class:`VAECaps`. `opensora_core.config` builds `RunConfig.vae` from this table and
`build_vae` dispatches through it. Imports pydantic only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from opensora_core.entry import Entry, lookup
from opensora_core.fields import Bool, PosFloat, PosInt, Section

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
}


def vae_caps(name: str) -> VAECaps:
    """Capabilities of VAE type `name` (ValueError listing the VAE types when unknown)."""
    return lookup(VAES, name, "vae").caps
