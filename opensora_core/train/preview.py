"""The training preview: every ``preview_every`` steps, a labelled grid of a few fixed prompts.

Rank 0 samples ``preview_prompts`` from the current weights (the EMA when the run keeps one) with the
training scheduler respaced to ``preview_sampling_steps`` (``iddpm-speed`` samples as ``iddpm``), the config's
guidance scale, fixed noise per prompt (``derive_seed(seed, "preview", i)``) and a fixed sampler generator,
so the grids of one run, and of two runs with the same seed, differ only by their weights. The latents are
decoded with the run's VAE and drawn by :func:`opensora_core.utils.grid.labelled_grid` (each prompt above its
row, frames left to right); the trainer logs the grid as MLflow image ``preview`` at the global step (the
image panel's step slider) and writes it to ``{experiment}/preview/global_step{G}.png``.

The preview model is a plain (unsharded, eval-mode) copy of the architecture built once on rank 0; the
weights reach it through the state dict every rank gathers (a collective under sharded backends), so
sampling never runs through the distributed wrappers. Sampling does not touch the global RNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from opensora_core.config import RunConfig
from opensora_core.data.conditioning import video_info
from opensora_core.schedulers import build_scheduler
from opensora_core.utils.grid import labelled_grid, to_uint8_frames
from opensora_core.utils.modules import module_dtype
from opensora_core.utils.seeding import derive_seed

PREVIEW_KEY = "preview"  # the MLflow image key and the experiment sub-folder


def preview_size(cfg: RunConfig) -> tuple[int, tuple[int, int]]:
    """``(num_frames, (H, W))`` the preview samples at: the config's sampling size when set, else the
    dataset's clip size (config validation requires one of them)."""
    ds = cfg.dataset
    num_frames = cfg.num_frames or getattr(ds, "num_frames", None)
    image_size = cfg.image_size or getattr(ds, "image_size", None)
    if num_frames is None or image_size is None or None in tuple(image_size):
        raise ValueError("preview_every needs num_frames and image_size (or a fixed-size dataset)")
    return int(num_frames), (int(image_size[0]), int(image_size[1]))


def preview_scheduler(cfg: RunConfig) -> Any:
    """The training scheduler as a sampler with ``preview_sampling_steps`` steps."""
    name = "iddpm" if cfg.scheduler.type == "iddpm-speed" else cfg.scheduler.type
    kwargs = cfg.scheduler.build_kwargs()
    kwargs.pop("timestep_respacing", None)  # a training respacing would conflict with the step count
    kwargs["num_sampling_steps"] = cfg.preview_sampling_steps
    return build_scheduler(name, **kwargs)


class PreviewSampler:
    """Samples the preview grid from a state dict (rank 0; see the module docstring)."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, vae: Any, text_encoder: Any) -> None:
        self.cfg = cfg
        self.model = model.eval().requires_grad_(False)  # [B, C, T, h, w] -> [B, C_out, T, h, w]
        self.vae = vae
        self.text_encoder = text_encoder
        self.scheduler = preview_scheduler(cfg)
        self.num_frames, self.image_size = preview_size(cfg)
        self.latent_size = tuple(vae.get_latent_size((self.num_frames, *self.image_size)))

    @torch.no_grad()
    def grid(self, state: dict[str, torch.Tensor], autocast: Any) -> np.ndarray:
        """Load ``state`` (a full model state dict) and return the uint8 grid ``[H', W', 3]``; ``autocast``
        is the training backend's autocast context factory."""
        cfg, prompts = self.cfg, list(self.cfg.preview_prompts)
        device = next(self.model.parameters()).device
        self.model.load_state_dict(state, strict=True)
        n = len(prompts)
        noise = [
            torch.randn(
                (self.vae.out_channels, *self.latent_size),
                generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "preview", i)),
            )
            for i in range(n)
        ]
        z = torch.stack(noise).to(device)  # [B, C, T, h, w]
        enc = self.text_encoder.encode(prompts)
        info = video_info(cfg.model.type, self.image_size, self.num_frames, cfg.fps, n, device)
        generator = torch.Generator(device).manual_seed(derive_seed(cfg.seed, "preview", "sampler"))
        with autocast():
            latents = self.scheduler.sample(
                self.model,
                z,
                enc["y"],
                mask=enc.get("mask"),
                y_null=self.text_encoder.null(n, model=self.model),
                generator=generator,
                **info,
            )
        pixels = self.vae.decode(
            latents.to(module_dtype(self.vae, torch.float32)), num_frames=self.num_frames
        )  # [B, 3, T, H, W]
        return labelled_grid([to_uint8_frames(v) for v in pixels], prompts)
