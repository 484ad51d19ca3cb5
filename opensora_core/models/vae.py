"""Video VAEs: the frozen autoencoders that map videos ``[B, C, T, H, W]`` to latents and back.

Open-Sora 1.0/1.1 use the Stable Diffusion image VAE frame by frame (``VideoAutoencoderKL``):

- ``encode(x [B,3,T,H,W]) -> z [B,4,T,H/8,W/8]``: frames are flattened to ``[B*T,3,H,W]``, encoded in chunks of
  ``micro_batch_size`` frames (None = all at once), the posterior is sampled (or its mean taken when
  ``sample_posterior=False``) and scaled by ``scaling_factor`` (0.18215).
- ``decode(z) -> x``: divide by the scaling factor and decode, same chunking. Chunking bounds activation
  memory (see ``benchmarks/vae_decode.py``) and never changes the result.

Also available: ``VideoAutoencoderKLTemporalDecoder`` (the SVD temporal decoder; decode only) and ``identity``
(latents are pixels; for pixel-space debugging and tiny demos). Open-Sora 1.2's video VAE (``OpenSoraVAE_V1_2``,
``VideoAutoencoderPipeline``) is in :mod:`opensora_core.models.vae_v1_2`, its temporal VAE (``VAE_Temporal``,
``VAE_Temporal_SD``) in :mod:`opensora_core.models.vae_temporal`; ``build_vae`` builds them all.

The contract the sampler and trainer use: ``encode(x, generator=None) -> z``, ``decode(z, num_frames=None) -> x``
(``num_frames``: the pixel frames wanted, needed where latent frames are compressed), ``get_latent_size``,
``out_channels``.

The VAE is frozen: modules are put in eval mode with gradients off and ``encode``/``decode`` run under
``torch.no_grad``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from opensora_core.models.pretrained import (
    call_hub,
    hub_kwargs,
    is_debug_id,
    looks_like_local_path,
    parse_typed_config,
    resolve_local_folder,
)
from opensora_core.models.vae_registry import (
    SD_VAE_SCALING_FACTOR,
    TEMPORAL_VAES,
    VAES,
    IdentityVAEConfig,
    VideoAutoencoderKLConfig,
    VideoAutoencoderKLTemporalDecoderConfig,
)
from opensora_core.utils.modules import module_dtype

VAEConfig = VideoAutoencoderKLConfig | VideoAutoencoderKLTemporalDecoderConfig | IdentityVAEConfig
_BUILDABLE = {**VAES, **TEMPORAL_VAES}


class VAEOperationError(RuntimeError):
    """The VAE cannot do what was asked (e.g. encoding with a decode-only VAE)."""


# ------------------------------------------------------------------------------------------------ helpers
def _check_video(x: torch.Tensor, channels: int, what: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{what} expects a 5-D tensor [B, C, T, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{what} expects {channels} channels in dim 1 of [B, C, T, H, W], got shape {tuple(x.shape)}"
        )


def _check_frames(z: torch.Tensor, num_frames: int | None, what: str) -> None:
    """Frame-wise VAEs keep T: ``decode(z, num_frames=)`` (the video-VAE contract) must ask for T frames."""
    if num_frames is not None and num_frames != z.shape[2]:
        raise ValueError(f"{what}: num_frames={num_frames} but the latents have {z.shape[2]} frames (frame-wise VAE)")


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _videos(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W]."""
    _, c, h, w = frames.shape
    return frames.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``: float32 from ``generator`` (else the global RNG of ``like``'s
    device), cast to ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    noise = torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


def _chunks(n: int, size: int | None) -> list[slice]:
    """Slices covering ``range(n)`` in pieces of ``size`` (one piece when size is None)."""
    step = n if size is None else size
    return [slice(i, min(i + step, n)) for i in range(0, n, max(step, 1))]


def _latent_size(
    input_size: Sequence[int | None], patch_size: tuple[int, int, int]
) -> tuple[int | None, ...]:
    if len(input_size) != 3:
        raise ValueError(f"get_latent_size expects (T, H, W), got {tuple(input_size)}")
    return tuple(None if s is None else s // p for s, p in zip(input_size, patch_size, strict=True))


def _frame_patch_size(config: Any) -> tuple[int, int, int]:
    """Latent patch ``(1, f, f)`` of a frame-wise diffusers VAE: every block after the first halves H and W."""
    factor = 2 ** (len(config.block_out_channels) - 1)
    return (1, factor, factor)


def _load_diffusers(model_cls: Any, name: str, what: str, cfg: Any) -> nn.Module:
    # Without accelerate, diffusers warns unless low_cpu_mem_usage is off explicitly.
    low_mem = importlib.util.find_spec("accelerate") is not None
    if looks_like_local_path(name):
        folder = resolve_local_folder(name, cfg.subfolder, what)
        return call_hub(
            model_cls.from_pretrained, str(folder), what, cfg.subfolder, low_cpu_mem_usage=low_mem
        )
    kwargs = hub_kwargs(cfg.cache_dir, cfg.local_files_only, cfg.subfolder)
    return call_hub(model_cls.from_pretrained, name, what, cfg.subfolder, low_cpu_mem_usage=low_mem, **kwargs)


# -------------------------------------------------------------------------------------------------- VAEs
class VideoAutoencoderKL(nn.Module):
    """Frame-wise video wrapper around a diffusers ``AutoencoderKL`` (the SD image VAE).

    ``chunked_noise``: draw the posterior noise chunk by chunk, in Open-Sora's order (a seeded run then
    reproduces the reference, and the sample depends on ``micro_batch_size``); the 1.2 pipeline uses it.
    ``decode_gradients`` (attribute, default False): let gradients flow through ``decode`` to its input.
    """

    def __init__(
        self,
        module: nn.Module,
        micro_batch_size: int | None = None,
        scaling_factor: float = SD_VAE_SCALING_FACTOR,
        sample_posterior: bool = True,
        chunked_noise: bool = False,
    ):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = float(scaling_factor)
        self.sample_posterior = sample_posterior
        self.chunked_noise = chunked_noise
        self.decode_gradients = False
        config = module.config
        self.in_channels = int(config.in_channels)
        self.out_channels = int(config.latent_channels)
        self.patch_size = _frame_patch_size(config)

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.module)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, C, T, H, W]`` pixels in [-1, 1] -> scaled latents ``[B, 4, T, H/8, W/8]``.

        The posterior noise comes from ``generator`` when given, else torch's global RNG on the VAE's device
        (as diffusers draws it). It is drawn once for the whole batch, so the result does not depend on
        ``micro_batch_size``, unless ``chunked_noise`` (then once per chunk, as the reference).
        """
        _check_video(x, self.in_channels, "VideoAutoencoderKL.encode")
        b, t = x.shape[0], x.shape[2]
        frames = _frames(x.to(module_dtype(self.module)))  # [B*T, C, H, W]
        parts, stds = [], []
        for part in _chunks(frames.shape[0], self.micro_batch_size):
            posterior = self.module.encode(frames[part]).latent_dist
            if self.sample_posterior and self.chunked_noise:
                parts.append(posterior.mean + posterior.std * _noise(posterior.mean, generator))  # [mb, 4, h, w]
            else:
                parts.append(posterior.mean)  # [mb, 4, h, w]
                stds.append(posterior.std)
        z = torch.cat(parts)  # [B*T, 4, h, w]
        if self.sample_posterior and not self.chunked_noise:
            z = z + torch.cat(stds) * _noise(z, generator)
        return _videos(z * self.scaling_factor, b, t)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latents ``[B, 4, T, h, w]`` -> pixels ``[B, 3, T, 8h, 8w]`` (``num_frames``, if given, must be T).

        Runs without autograd unless ``decode_gradients`` (the 1.2 pipeline's VAE training: the weights stay
        frozen, but the loss on pixels reaches the temporal VAE through this decoder).
        """
        _check_video(z, self.out_channels, "VideoAutoencoderKL.decode")
        _check_frames(z, num_frames, "VideoAutoencoderKL.decode")
        b, t = z.shape[0], z.shape[2]
        with torch.set_grad_enabled(self.decode_gradients and torch.is_grad_enabled()):
            latents = _frames(z.to(module_dtype(self.module))) / self.scaling_factor  # [B*T, 4, h, w]
            pixels = [
                self.module.decode(latents[part]).sample
                for part in _chunks(latents.shape[0], self.micro_batch_size)
            ]
        return _videos(torch.cat(pixels), b, t)

    def get_latent_size(self, input_size: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(T, H, W) -> (T, H/8, W/8)`` (floor division, as the reference); None entries pass through."""
        return _latent_size(input_size, self.patch_size)


class VideoAutoencoderKLTemporalDecoder(nn.Module):
    """The Stable Video Diffusion VAE decoder (temporal layers across the frames of each video); decode only.

    ``micro_batch_size`` counts frames as for the image VAE, but chunks hold whole videos (the decoder mixes
    frames of a video): ``max(1, micro_batch_size // T)`` videos per chunk.
    """

    def __init__(
        self,
        module: nn.Module,
        micro_batch_size: int | None = None,
        scaling_factor: float = SD_VAE_SCALING_FACTOR,
    ):
        super().__init__()
        self.module = module.eval().requires_grad_(False)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = float(scaling_factor)
        config = module.config
        self.out_channels = int(config.latent_channels)
        self.patch_size = _frame_patch_size(config)

    @property
    def dtype(self) -> torch.dtype:
        return module_dtype(self.module)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Not available: this VAE only decodes."""
        raise VAEOperationError(
            "VideoAutoencoderKLTemporalDecoder only decodes (as in Open-Sora); encode videos with "
            "vae=dict(type='VideoAutoencoderKL', from_pretrained='stabilityai/sd-vae-ft-ema'), whose latents it decodes"
        )

    @torch.no_grad()
    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latents ``[B, 4, T, h, w]`` -> pixels ``[B, 3, T, 8h, 8w]`` (``num_frames``, if given, must be T)."""
        _check_video(z, self.out_channels, "VideoAutoencoderKLTemporalDecoder.decode")
        _check_frames(z, num_frames, "VideoAutoencoderKLTemporalDecoder.decode")
        b, t = z.shape[0], z.shape[2]
        videos_per_chunk = None if self.micro_batch_size is None else max(1, self.micro_batch_size // t)
        latents = z.to(module_dtype(self.module)) / self.scaling_factor
        outputs = []
        for part in _chunks(b, videos_per_chunk):
            frames = _frames(latents[part])  # [b_part*T, 4, h, w]
            pixels = self.module.decode(frames, num_frames=t).sample  # [b_part*T, 3, H, W]
            outputs.append(_videos(pixels, frames.shape[0] // t, t))
        return torch.cat(outputs)

    def get_latent_size(self, input_size: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(T, H, W) -> (T, H/8, W/8)``; None entries pass through."""
        return _latent_size(input_size, self.patch_size)


class IdentityVAE(nn.Module):
    """Latents are pixels (``patch_size (1,1,1)``): train and sample directly in pixel space."""

    def __init__(self, in_channels: int = 3, micro_batch_size: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels
        self.patch_size = (1, 1, 1)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = 1.0

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return ``x`` unchanged (shape checked)."""
        _check_video(x, self.in_channels, "IdentityVAE.encode")
        return x

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Return ``z`` unchanged (shape checked; ``num_frames``, if given, must be T)."""
        _check_video(z, self.out_channels, "IdentityVAE.decode")
        _check_frames(z, num_frames, "IdentityVAE.decode")
        return z

    def get_latent_size(self, input_size: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(T, H, W)`` unchanged."""
        return _latent_size(input_size, self.patch_size)


# ------------------------------------------------------------------------------------------------ factory
def load_kl_module(cfg: VideoAutoencoderKLConfig) -> nn.Module:
    """The diffusers ``AutoencoderKL`` named by ``cfg.from_pretrained`` (debug id, folder or hub id)."""
    if is_debug_id(cfg.from_pretrained):
        from opensora_core.models import tiny

        return tiny.load_debug_vae(cfg.from_pretrained, cfg.type)
    from diffusers import AutoencoderKL

    return _load_diffusers(AutoencoderKL, cfg.from_pretrained, "VAE", cfg)


def build_kl(
    cfg: VideoAutoencoderKLConfig, chunked_noise: bool = False, module: nn.Module | None = None
) -> VideoAutoencoderKL:
    """The SD image VAE of a validated config (the `VideoAutoencoderKL` entry of VAES); ``module``: a ready
    diffusers ``AutoencoderKL`` to wrap instead of loading ``cfg.from_pretrained`` (the 1.2 pipeline passes
    one when its own checkpoint overwrites every weight)."""
    if module is None:
        module = load_kl_module(cfg)
    return VideoAutoencoderKL(module, cfg.micro_batch_size, cfg.scaling_factor, cfg.sample_posterior, chunked_noise)


def build_temporal_decoder(cfg: VideoAutoencoderKLTemporalDecoderConfig) -> VideoAutoencoderKLTemporalDecoder:
    """The SVD temporal-decoder VAE of a validated config (decode only)."""
    if is_debug_id(cfg.from_pretrained):
        from opensora_core.models import tiny

        module = tiny.load_debug_vae(cfg.from_pretrained, cfg.type)
    else:
        from diffusers import AutoencoderKLTemporalDecoder

        module = _load_diffusers(
            AutoencoderKLTemporalDecoder, cfg.from_pretrained, "temporal-decoder VAE", cfg
        )
    return VideoAutoencoderKLTemporalDecoder(module, cfg.micro_batch_size, cfg.scaling_factor)


def build_identity(cfg: IdentityVAEConfig) -> IdentityVAE:
    """The pixel-space identity VAE of a validated config."""
    return IdentityVAE(cfg.in_channels, cfg.micro_batch_size)


def parse_vae_config(cfg: dict[str, Any] | BaseModel) -> BaseModel:
    """Validate a ``vae`` config dict against its ``VAES`` / ``TEMPORAL_VAES`` entry (clear errors for unknown
    types/keys)."""
    choices = {name: entry.config for name, entry in _BUILDABLE.items()}
    return parse_typed_config(cfg, choices, "vae")  # type: ignore[arg-type]


def build_vae(cfg: dict[str, Any] | BaseModel) -> nn.Module:
    """Build the VAE described by an Open-Sora ``vae`` config dict (on CPU, fp32; move it with ``.to``).

    Every ``VAES`` type, and the temporal VAEs of ``TEMPORAL_VAES`` (whose ``encode`` returns a posterior).

    >>> vae = build_vae(dict(type="VideoAutoencoderKL", from_pretrained="debug/tiny-vae", micro_batch_size=4))
    >>> vae.get_latent_size((16, 256, 256))
    (16, 32, 32)
    """
    parsed = parse_vae_config(cfg)
    return _BUILDABLE[parsed.type].load_builder()(parsed)  # type: ignore[attr-defined,no-any-return]


__all__ = [
    "IdentityVAE",
    "IdentityVAEConfig",
    "SD_VAE_SCALING_FACTOR",
    "VAEOperationError",
    "VideoAutoencoderKL",
    "VideoAutoencoderKLConfig",
    "VideoAutoencoderKLTemporalDecoder",
    "VideoAutoencoderKLTemporalDecoderConfig",
    "build_identity",
    "build_kl",
    "build_temporal_decoder",
    "build_vae",
    "load_kl_module",
    "parse_vae_config",
]
