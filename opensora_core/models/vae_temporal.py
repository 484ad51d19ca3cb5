"""The Open-Sora 1.2 temporal VAE: causal 3-D convolutions that compress the time axis of SD latents.

``VAE_Temporal`` works on the 4-channel latents of the spatial (SD-XL) VAE, ``[B, 4, T, h, w]``; H and W are
kept, time is divided by ``2 ** sum(temporal_downsample)`` (4 for ``VAE_Temporal_SD``):

- ``encode(x [B, C, T, h, w]) -> posterior`` over ``[B, embed_dim, ceil(T/4), h, w]``: the clip is first
  padded at the *front* with zero frames up to a multiple of the factor (17 -> 20 frames -> 5 latent frames).
  The posterior (:class:`DiagonalGaussian`) has ``.mean``, ``.std``, ``.sample(generator=None)``, ``.mode()``
  and ``.kl()``.
- ``decode(z, num_frames) -> x [B, C, num_frames, h, w]``: the padded frames are cut from the front again.

Every convolution is causal in time (:class:`CausalConv3d`: all temporal padding before the first frame),
so a frame never sees later frames. Layer names and shapes follow the official
``hpcai-tech/OpenSora-VAE-v1.2`` checkpoint (``temporal_vae.*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from opensora_core.models.vae_registry import VAETemporalConfig, VAETemporalSDConfig

_ACTIVATIONS: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "relu": nn.ReLU}


class DiagonalGaussian:
    """A diagonal Gaussian posterior from ``moments [B, 2C, ...]`` (mean and log-variance halves on dim 1).

    The log-variance is clamped to [-30, 20] as in the reference. :meth:`sample` draws float32 noise on
    the CPU (or on ``generator``'s device) and moves it to the moments' device, so a seeded run draws the
    same numbers as Open-Sora 1.2 on any device.
    """

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = torch.chunk(moments, 2, dim=1)  # [B, C, ...] each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean + std * noise`` (noise from ``generator``, else torch's global CPU RNG)."""
        device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(device=self.mean.device, dtype=self.mean.dtype)

    def mode(self) -> torch.Tensor:
        """The posterior mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL divergence to the standard normal, summed per sample: ``[B]``."""
        dims = list(range(1, self.mean.ndim))
        return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)


class CausalConv3d(nn.Module):
    """``Conv3d`` with zero padding: ``(kt - 1) * dilation + 1 - stride_t`` frames before the clip, none after;
    H and W padded symmetrically (odd kernels). The weights live in ``.conv`` (checkpoint layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        bias: bool = True,
    ):
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"CausalConv3d needs odd spatial kernels, got {(kt, kh, kw)}")
        front = kt - 1 + 1 - stride[0]
        self.padding = (kw // 2, kw // 2, kh // 2, kh // 2, front, 0)  # F.pad order: W, H, T
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T', H, W]`` (T' = T for stride 1)."""
        return self.conv(F.pad(x, self.padding))


class ResBlock(nn.Module):
    """GroupNorm -> act -> causal 3x3x3 conv, twice, plus a (1x1x1 conv when widths differ) shortcut; no biases."""

    def __init__(self, in_channels: int, out_channels: int, activation: type[nn.Module], num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False)
        self.act = activation()
        self.conv3 = (
            CausalConv3d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return h + (x if self.conv3 is None else self.conv3(x))


def _res_blocks(
    n: int, in_channels: int, out_channels: int, act: type[nn.Module], groups: int
) -> nn.ModuleList:
    return nn.ModuleList(
        ResBlock(in_channels if i == 0 else out_channels, out_channels, act, groups) for i in range(n)
    )


class Encoder(nn.Module):
    """``[B, C, T, H, W] -> [B, 2 * latent_embed_dim, T / 2**k, H, W]`` (k = downsampling levels).

    Level i has ``num_res_blocks`` blocks of width ``filters * channel_multipliers[i]``; between levels a
    stride-(2,1,1) causal conv when ``temporal_downsample[i]``, else an identity (a parameter-free slot).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        filters: int,
        num_res_blocks: int,
        channel_multipliers: Sequence[int],
        temporal_downsample: Sequence[bool],
        num_groups: int,
        activation: type[nn.Module],
    ):
        super().__init__()
        widths = [filters * m for m in channel_multipliers]
        self.conv_in = CausalConv3d(in_channels, filters, 3, bias=False)
        self.block_res_blocks = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        prev = filters
        for i, width in enumerate(widths):
            self.block_res_blocks.append(_res_blocks(num_res_blocks, prev, width, activation, num_groups))
            prev = width
            if i < len(widths) - 1:
                down = (
                    CausalConv3d(prev, width, 3, stride=(2, 1, 1))
                    if temporal_downsample[i]
                    else nn.Identity()
                )
                self.conv_blocks.append(down)
        self.res_blocks = _res_blocks(num_res_blocks, prev, prev, activation, num_groups)
        self.norm1 = nn.GroupNorm(num_groups, prev)
        self.act = activation()
        self.conv2 = CausalConv3d(prev, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # [B, filters, T, H, W]
        for i, blocks in enumerate(self.block_res_blocks):
            for block in blocks:
                x = block(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)  # T halves at downsampling levels
        for block in self.res_blocks:
            x = block(x)
        return self.conv2(self.act(self.norm1(x)))  # [B, out_channels, T', H, W]


class Decoder(nn.Module):
    """``[B, latent_embed_dim, T', H, W] -> [B, C, T' * 2**k, H, W]``, the encoder's levels in reverse.

    Upsampling in time: a causal conv doubles the channels, then depth-to-time moves them into frames
    (channel ``c * 2 + j`` becomes frame ``2t + j`` of channel ``c``).
    """

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        filters: int,
        num_res_blocks: int,
        channel_multipliers: Sequence[int],
        temporal_downsample: Sequence[bool],
        num_groups: int,
        activation: type[nn.Module],
    ):
        super().__init__()
        widths = [filters * m for m in channel_multipliers]
        self.upsample = [bool(temporal_downsample[i - 1]) for i in range(1, len(widths))]
        top = widths[-1]
        self.conv1 = CausalConv3d(latent_channels, top, 3)
        self.res_blocks = _res_blocks(num_res_blocks, top, top, activation, num_groups)
        # Level i is stored at index i (built from the top level down); conv_blocks[i - 1] follows level i.
        levels: list[nn.ModuleList] = []
        ups: list[nn.Module] = []
        prev = top
        for i in reversed(range(len(widths))):
            levels.insert(0, _res_blocks(num_res_blocks, prev, widths[i], activation, num_groups))
            prev = widths[i]
            if i > 0:
                ups.insert(0, CausalConv3d(prev, prev * 2, 3) if self.upsample[i - 1] else nn.Identity())
        self.block_res_blocks = nn.ModuleList(levels)
        self.conv_blocks = nn.ModuleList(ups)
        self.norm1 = nn.GroupNorm(num_groups, prev)
        self.act = activation()
        self.conv_out = CausalConv3d(prev, out_channels, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)  # [B, top, T', H, W]
        for block in self.res_blocks:
            x = block(x)
        for i in reversed(range(len(self.block_res_blocks))):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
                if self.upsample[i - 1]:
                    b, c2, t, h, w = x.shape  # [B, 2C, T, H, W] -> [B, C, 2T, H, W]
                    x = (
                        x.reshape(b, c2 // 2, 2, t, h, w)
                        .permute(0, 1, 3, 2, 4, 5)
                        .reshape(b, c2 // 2, 2 * t, h, w)
                    )
        return self.conv_out(self.act(self.norm1(x)))  # [B, out_channels, T, H, W]


class VAE_Temporal(nn.Module):  # noqa: N801 - Open-Sora's type name
    """Causal temporal VAE (MAGVIT-style); constructor arguments as Open-Sora 1.2's (see the module docstring)."""

    def __init__(
        self,
        in_out_channels: int = 4,
        latent_embed_dim: int = 4,
        embed_dim: int = 4,
        filters: int = 128,
        num_res_blocks: int = 4,
        channel_multipliers: Sequence[int] = (1, 2, 2, 4),
        temporal_downsample: Sequence[bool] = (True, True, False),
        num_groups: int = 32,
        activation_fn: str = "swish",
    ):
        super().__init__()
        if len(temporal_downsample) != len(channel_multipliers) - 1:
            raise ValueError(
                f"temporal_downsample needs one entry per level transition ({len(channel_multipliers) - 1}), "
                f"got {tuple(temporal_downsample)}"
            )
        if activation_fn not in _ACTIVATIONS:
            raise ValueError(f"activation_fn must be one of {sorted(_ACTIVATIONS)}, got {activation_fn!r}")
        act = _ACTIVATIONS[activation_fn]
        levels = dict(
            filters=filters,
            num_res_blocks=num_res_blocks,
            channel_multipliers=tuple(channel_multipliers),
            temporal_downsample=tuple(bool(d) for d in temporal_downsample),
            num_groups=num_groups,
            activation=act,
        )
        self.time_downsample_factor = 2 ** sum(levels["temporal_downsample"])
        self.patch_size = (self.time_downsample_factor, 1, 1)
        self.in_channels = self.out_channels = in_out_channels
        self.embed_dim = embed_dim
        self.encoder = Encoder(in_out_channels, 2 * latent_embed_dim, **levels)
        self.quant_conv = CausalConv3d(2 * latent_embed_dim, 2 * embed_dim, 1)
        self.post_quant_conv = CausalConv3d(embed_dim, latent_embed_dim, 1)
        self.decoder = Decoder(in_out_channels, latent_embed_dim, **levels)

    def _front_padding(self, num_frames: int) -> int:
        return -num_frames % self.time_downsample_factor

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """``[B, C, T, h, w]`` -> posterior over ``[B, embed_dim, ceil(T / factor), h, w]``."""
        x = F.pad(x, (0, 0, 0, 0, self._front_padding(x.shape[2]), 0))  # zero frames in front
        moments = self.quant_conv(self.encoder(x)).to(x.dtype)  # [B, 2 * embed_dim, T', h, w]
        return DiagonalGaussian(moments)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """``[B, embed_dim, T', h, w]`` -> ``[B, C, num_frames, h, w]`` (default ``T' * factor``)."""
        if num_frames is not None and self.get_latent_size((num_frames, None, None))[0] != z.shape[2]:
            raise ValueError(
                f"num_frames={num_frames} encodes to {self.get_latent_size((num_frames, None, None))[0]} latent "
                f"frames, but z has {z.shape[2]}"
            )
        x = self.decoder(self.post_quant_conv(z))  # [B, C, T' * factor, h, w]
        return x if num_frames is None else x[:, :, self._front_padding(num_frames) :]

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True
    ) -> tuple[torch.Tensor, DiagonalGaussian, torch.Tensor]:
        """Reconstruction, posterior and latent: ``(x_rec [B, C, T, h, w], posterior, z)``."""
        posterior = self.encode(x)
        z = posterior.sample() if sample_posterior else posterior.mode()
        return self.decode(z, num_frames=x.shape[2]), posterior, z

    def get_latent_size(self, input_size: Sequence[int | None]) -> tuple[int | None, ...]:
        """``(T, h, w) -> (ceil(T / factor), h, w)``; None entries pass through."""
        if len(input_size) != 3:
            raise ValueError(f"get_latent_size expects (T, H, W), got {tuple(input_size)}")
        t, h, w = input_size
        return (None if t is None else -(-t // self.time_downsample_factor), h, w)


# ------------------------------------------------------------------------------------------------ factory
def build_vae_temporal(cfg: VAETemporalConfig) -> VAE_Temporal:
    """A configurable temporal VAE (random init from torch's global RNG, as the reference)."""
    return VAE_Temporal(**cfg.build_kwargs())


def build_vae_temporal_sd(cfg: VAETemporalSDConfig) -> VAE_Temporal:
    """The 1.2 temporal VAE (4 -> 4 channels, 4x in time), optionally loaded from ``from_pretrained``."""
    model = VAE_Temporal(**VAETemporalSDConfig.ARCHITECTURE)
    if cfg.from_pretrained is not None:
        from opensora_core.models.checkpoint import load_checkpoint

        load_checkpoint(model, cfg.from_pretrained, strict=True)
    return model


__all__ = [
    "CausalConv3d",
    "DiagonalGaussian",
    "VAE_Temporal",
    "build_vae_temporal",
    "build_vae_temporal_sd",
]
