"""The Open-Sora 1.2 video VAE: the spatial (SD-XL) VAE frame by frame, then the causal temporal VAE.

``VideoAutoencoderPipeline`` (``vae = dict(type="OpenSoraVAE_V1_2", ...)`` builds the official one):

- ``encode(x [B, 3, T, H, W]) -> z [B, 4, T', H/8, W/8]``: the spatial VAE encodes every frame (chunks of
  ``micro_batch_size`` frames, posterior sampled and scaled by 0.18215), the temporal VAE encodes chunks of
  ``micro_frame_size`` frames (17 -> 5 latent frames; each chunk is padded at the front to a multiple of 4)
  and samples its posterior; the result is normalised, ``(z - shift) / scale`` with 4 per-channel values.
  As in the reference, ``encode`` returns this latent tensor, not a posterior (the temporal VAE's own
  ``encode`` returns the posterior: :class:`~opensora_core.models.vae_temporal.DiagonalGaussian`).
- ``decode(z, num_frames) -> x [B, 3, num_frames, H, W]``: un-normalise, temporal decode per chunk of
  ``micro_z_frame_size`` latent frames (the last chunk to what is left of ``num_frames``), spatial decode.
- ``get_latent_size((T, H, W))``: 17 -> 5, 34 -> 10, 51 -> 15, 16 -> 4 frames; H and W / 8.

Random numbers: with ``generator=None`` the posterior noise is drawn in the reference's order and from the
same global RNGs (spatial chunks on the VAE's device as diffusers does, temporal chunks on the CPU), so a
seeded run reproduces Open-Sora 1.2; with a ``generator`` the same draws come from it.

``cal_loss=True`` is the reference's VAE-training mode: ``encode`` returns ``(z, posterior, x_z)`` (z not
normalised, ``posterior`` of the last chunk, ``x_z`` the spatial latents), ``decode`` returns ``(x, x_z)`` and
expects un-normalised z, ``forward(x)`` runs both, and the temporal VAE keeps gradients (also through the
frozen spatial decoder). Otherwise the pipeline is a frozen latent VAE (eval, no gradients) like the other
VAEs in :mod:`opensora_core.models.vae`. The spatial VAE is always frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from opensora_core.models.pretrained import is_debug_id
from opensora_core.models.vae_registry import (
    OPENSORA_V1_2_SCALE,
    OPENSORA_V1_2_SHIFT,
    OPENSORA_V1_2_SPATIAL,
    TEMPORAL_VAES,
    VAES,
    OpenSoraVAEV12Config,
    VAETemporalSDConfig,
    VideoAutoencoderKLConfig,
    VideoAutoencoderPipelineConfig,
)
from opensora_core.models.vae_temporal import DiagonalGaussian, VAE_Temporal

# The diffusers AutoencoderKL config of PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers (subfolder vae): the
# spatial part of hpcai-tech/OpenSora-VAE-v1.2, built without downloading its own weights when the pipeline
# weights are loaded over it anyway.
SDXL_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=0.13025,
    force_upcast=True,
)


def _channel_buffer(value: float | Sequence[float]) -> torch.Tensor:
    """A scalar, or per-channel values as ``[1, C, 1, 1, 1]``."""
    t = torch.tensor(value, dtype=torch.float32)
    return t if t.ndim == 0 else t[None, :, None, None, None]


class VideoAutoencoderPipeline(nn.Module):
    """Spatial VAE then temporal VAE (see the module docstring); state-dict keys ``spatial_vae.*``,
    ``temporal_vae.*``, ``scale``, ``shift`` as the official checkpoint."""

    def __init__(
        self,
        spatial_vae: nn.Module,
        temporal_vae: VAE_Temporal,
        micro_frame_size: int | None = None,
        shift: float | Sequence[float] = 0.0,
        scale: float | Sequence[float] = 1.0,
        cal_loss: bool = False,
    ):
        super().__init__()
        if spatial_vae.out_channels != temporal_vae.in_channels:
            raise ValueError(
                f"the spatial VAE gives {spatial_vae.out_channels}-channel latents but the temporal VAE takes "
                f"{temporal_vae.in_channels} (vae_temporal.in_out_channels)"
            )
        self.spatial_vae = spatial_vae
        spatial_vae.decode_gradients = cal_loss  # VAE training: pixel losses reach the temporal decoder
        self.temporal_vae = temporal_vae
        self.cal_loss = cal_loss
        self.micro_frame_size = micro_frame_size
        self.micro_z_frame_size = (
            None
            if micro_frame_size is None
            else temporal_vae.get_latent_size((micro_frame_size, None, None))[0]
        )
        self.in_channels = spatial_vae.in_channels
        # Channels of the latent: the posterior's (Open-Sora takes in_out_channels; both are 4 in its VAEs).
        self.out_channels = temporal_vae.embed_dim
        self.register_buffer("scale", _channel_buffer(scale))
        self.register_buffer("shift", _channel_buffer(shift))
        for name, buf in (("scale", self.scale), ("shift", self.shift)):
            if buf.ndim and buf.shape[1] != self.out_channels:
                raise ValueError(
                    f"{name} has {buf.shape[1]} values; give one or {self.out_channels} (one per channel)"
                )
        if not cal_loss:
            self.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _frame_chunks(self, n: int, size: int | None) -> list[slice]:
        step = n if size is None else size
        return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]

    def encode(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """Pixels ``[B, 3, T, H, W]`` in [-1, 1] -> normalised latents ``[B, 4, T', H/8, W/8]`` (see the module
        docstring; a tuple with ``cal_loss``)."""
        with torch.set_grad_enabled(self.cal_loss and torch.is_grad_enabled()):
            x_z = self.spatial_vae.encode(x, generator=generator)  # [B, 4, T, h, w]
            z_parts = []
            for part in self._frame_chunks(x_z.shape[2], self.micro_frame_size):
                posterior = self.temporal_vae.encode(x_z[:, :, part])
                z_parts.append(posterior.sample(generator))  # [B, 4, t', h, w]
            z = torch.cat(z_parts, dim=2)  # [B, 4, T', h, w]
        if self.cal_loss:
            return z, posterior, x_z
        return (z - self.shift) / self.scale

    def decode(
        self, z: torch.Tensor, num_frames: int | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Latents ``[B, 4, T', h, w]`` -> pixels ``[B, 3, num_frames, 8h, 8w]`` (``num_frames`` is required:
        several frame counts share a latent length, e.g. 13..16 -> 4)."""
        if num_frames is None:
            raise ValueError(
                "VideoAutoencoderPipeline.decode needs num_frames= (the frames to return; e.g. 13 to 16 frames "
                "all give 4 latent frames)"
            )
        expected = self.get_latent_size((num_frames, None, None))[0]
        if z.ndim != 5 or z.shape[1] != self.out_channels or z.shape[2] != expected:
            raise ValueError(
                f"decode expects latents [B, {self.out_channels}, {expected}, h, w] for num_frames={num_frames}, "
                f"got shape {tuple(z.shape)}"
            )
        with torch.set_grad_enabled(self.cal_loss and torch.is_grad_enabled()):
            if not self.cal_loss:
                z = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
            parts, left = [], num_frames
            for part in self._frame_chunks(z.shape[2], self.micro_z_frame_size):
                frames = left if self.micro_frame_size is None else min(self.micro_frame_size, left)
                parts.append(self.temporal_vae.decode(z[:, :, part], num_frames=frames))  # [B, 4, f, h, w]
                left -= frames
            x_z = torch.cat(parts, dim=2)  # [B, 4, num_frames, h, w]
            x = self.spatial_vae.decode(x_z)  # [B, 3, num_frames, H, W]
        return (x, x_z) if self.cal_loss else x

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """VAE training step (``cal_loss`` only): ``(x_rec, x_z_rec, z, posterior, x_z)``."""
        if not self.cal_loss:
            raise RuntimeError(
                "VideoAutoencoderPipeline.forward is the VAE-training path; build it with cal_loss=True"
            )
        z, posterior, x_z = self.encode(x)
        x_rec, x_z_rec = self.decode(z, num_frames=x_z.shape[2])
        return x_rec, x_z_rec, z, posterior, x_z

    def get_latent_size(self, input_size: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(T, H, W) -> (T', H/8, W/8)``: whole ``micro_frame_size`` chunks plus the remainder; None passes."""
        t, h, w = self.spatial_vae.get_latent_size(input_size)
        latent_t = self.temporal_vae.get_latent_size((t, None, None))[0]
        if t is not None and self.micro_frame_size is not None:
            whole, rest = divmod(t, self.micro_frame_size)
            latent_t = whole * self.micro_z_frame_size  # type: ignore[operator]
            if rest:
                latent_t += self.temporal_vae.get_latent_size((rest, None, None))[0]  # type: ignore[operator]
        return (latent_t, h, w)

    def get_temporal_last_layer(self) -> torch.Tensor:
        """The temporal decoder's last conv weight (the reference's adaptive GAN-loss weighting uses it)."""
        return self.temporal_vae.decoder.conv_out.conv.weight


# ------------------------------------------------------------------------------------------------ factory
def _load_weights(model: nn.Module, name: str, local_files_only: bool) -> None:
    """Load whole-pipeline weights from a file, a folder or a hub id (strict: every key must match)."""
    from opensora_core.models.checkpoint import load_checkpoint
    from opensora_core.models.pretrained import call_hub, hub_kwargs, looks_like_local_path

    if not looks_like_local_path(name):
        from huggingface_hub import snapshot_download

        name = call_hub(
            snapshot_download,
            name,
            "VAE",
            allow_patterns=["*.safetensors", "*.json"],
            **hub_kwargs(None, local_files_only, None),
        )
    load_checkpoint(model, name, strict=True)


def _spatial(cfg: VideoAutoencoderKLConfig, module: nn.Module | None = None) -> nn.Module:
    """The frame-wise spatial VAE (a ``VideoAutoencoderKL``, built through its VAES entry: this module is a VAES
    builder itself and never imports the dispatcher), drawing posterior noise per micro-batch as the reference."""
    return VAES["VideoAutoencoderKL"].load_builder()(cfg, chunked_noise=True, module=module)


def build_pipeline(cfg: VideoAutoencoderPipelineConfig) -> VideoAutoencoderPipeline:
    """A pipeline from explicit `vae_2d` / `vae_temporal` configs (then `from_pretrained` over both)."""
    temporal = TEMPORAL_VAES[cfg.vae_temporal.type].load_builder()(cfg.vae_temporal)
    model = VideoAutoencoderPipeline(
        _spatial(cfg.vae_2d), temporal, cfg.micro_frame_size, cfg.shift, cfg.scale, cfg.cal_loss
    )
    if cfg.from_pretrained is not None:
        _load_weights(model, cfg.from_pretrained, cfg.vae_2d.local_files_only)
    return model


def build_opensora_vae_v1_2(cfg: OpenSoraVAEV12Config, load_weights: bool = True) -> VideoAutoencoderPipeline:
    """Open-Sora 1.2's VAE. ``from_pretrained``: None = PixArt-Sigma's SD-XL VAE + a random temporal VAE (as the
    reference); a debug id = the tiny in-code VAE; otherwise the whole VAE's weights (the spatial VAE is then
    built from its config, not downloaded, since every weight is overwritten). ``load_weights=False``: the
    architecture only, nothing read or downloaded (the memory plan builds it on the meta device)."""
    spatial_cfg = VideoAutoencoderKLConfig(
        type="VideoAutoencoderKL",
        from_pretrained=OPENSORA_V1_2_SPATIAL,
        subfolder="vae",
        micro_batch_size=cfg.micro_batch_size,
        local_files_only=cfg.local_files_only,
    )
    name = cfg.from_pretrained
    if name is None and load_weights:
        spatial, temporal = _spatial(spatial_cfg), VAE_Temporal(**VAETemporalSDConfig.ARCHITECTURE)
    elif name is not None and is_debug_id(name):
        from opensora_core.models import tiny

        module, temporal = tiny.load_debug_vae(name, cfg.type)
        spatial = _spatial(spatial_cfg, module)
    else:
        from diffusers import AutoencoderKL

        spatial = _spatial(spatial_cfg, AutoencoderKL(**SDXL_VAE_CONFIG))
        temporal = VAE_Temporal(**VAETemporalSDConfig.ARCHITECTURE)
    model = VideoAutoencoderPipeline(
        spatial, temporal, cfg.micro_frame_size, OPENSORA_V1_2_SHIFT, OPENSORA_V1_2_SCALE, cfg.cal_loss
    )
    if load_weights and name is not None and not is_debug_id(name):
        _load_weights(model, name, cfg.local_files_only)
    return model


__all__ = ["SDXL_VAE_CONFIG", "VideoAutoencoderPipeline", "build_opensora_vae_v1_2", "build_pipeline"]
