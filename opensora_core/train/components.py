"""Building what a training run needs from a RunConfig: text encoder, VAE, model, scheduler and data.

The model is always built in fp32 (the backend keeps fp32 master weights and autocasts to the compute dtype).
Its ``input_size`` is the VAE latent size of the dataset's clips (``(None, None, None)`` for bucketed data),
``in_channels`` the VAE's latent channels, and ``caption_channels`` / ``model_max_length`` come from the text
encoder unless the config sets them.

Data randomness is keyed (:func:`opensora_core.utils.seeding.derive_seed`): :class:`KeyedDataset` gives each item its
own ``random.Random(seed, epoch, index)``, so a sample's temporal crop does not depend on the worker that loads
it, on prefetching, or on where a resumed run started.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opensora_core.config import RunConfig
from opensora_core.io import storage
from opensora_core.models.registry import model_caps
from opensora_core.parallel.backends import DTYPES
from opensora_core.utils.seeding import derive_seed

logger = logging.getLogger(__name__)

SYNTHETIC_MARKER_DIR = "synthetic"
SYNTHETIC_NUM_CLIPS = 64


@dataclass
class Components:
    """The frozen encoders, the trainable model and the training scheduler."""

    text_encoder: Any
    vae: nn.Module
    model: nn.Module
    scheduler: Any
    patch_size: tuple[int, int, int]
    video_info: tuple[str, ...]  # size-conditioning inputs the model takes (its ModelCaps.video_info)


def compute_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype:
    """dtype for the frozen encoders: the config dtype on CUDA, fp32 on CPU."""
    if device.type != "cuda":
        return torch.float32
    return DTYPES.get(cfg.dtype, torch.float32)


def model_input_size(cfg: RunConfig, vae: Any) -> tuple[int | None, int | None, int | None]:
    """Latent (T, H, W) the model is built for."""
    if cfg.model.input_size is not None:
        return tuple(cfg.model.input_size)  # type: ignore[return-value]
    ds = cfg.dataset
    num_frames = getattr(ds, "num_frames", None)
    image_size = getattr(ds, "image_size", None)
    if num_frames is None or image_size is None or None in tuple(image_size):
        return (None, None, None)
    return tuple(vae.get_latent_size((num_frames, *image_size)))  # type: ignore[return-value]


def model_build_kwargs(cfg: RunConfig, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """Keyword arguments for ``build_model(cfg.model.type, ...)`` in training (see the module docstring)."""
    kwargs = cfg.model.build_kwargs()
    fields = type(cfg.model).model_fields
    if kwargs.get("dtype", "fp32") != "fp32":
        logger.info(
            "model.dtype=%s: parameters stay fp32 (master weights); dtype=%s sets the compute precision",
            kwargs["dtype"],
            cfg.dtype,
        )
    kwargs["dtype"] = torch.float32
    kwargs["input_size"] = model_input_size(cfg, vae)
    kwargs.setdefault("in_channels", int(vae.out_channels))
    if "caption_channels" in fields and getattr(text_encoder, "output_dim", None):
        kwargs.setdefault("caption_channels", int(text_encoder.output_dim))
    if "model_max_length" in fields and getattr(text_encoder, "model_max_length", None):
        kwargs.setdefault("model_max_length", int(text_encoder.model_max_length))
    kwargs["grad_checkpointing"] = bool(cfg.grad_checkpoint)
    return kwargs


def build_components(cfg: RunConfig, device: torch.device, load_pretrained: bool = True) -> Components:
    """Build text encoder and VAE (frozen, eval) and the model (fp32, train mode) on ``device``.

    The model's initial weights come from ``seed_everything(cfg.seed)`` right before it is built, so they
    are the same on every rank and in every process. ``load_pretrained``: load ``model.from_pretrained``
    (skipped when resuming from a checkpoint).
    """
    from opensora_core.models import build_model
    from opensora_core.models.checkpoint import load_checkpoint
    from opensora_core.models.text_encoders import build_text_encoder
    from opensora_core.models.vae import build_vae
    from opensora_core.schedulers import build_scheduler
    from opensora_core.train.rng import seed_everything

    enc_dtype = compute_dtype(cfg, device)
    text_encoder = build_text_encoder(cfg.text_encoder.as_dict(), device=device, dtype=enc_dtype)
    vae = build_vae(cfg.vae.as_dict()).to(device=device, dtype=enc_dtype).eval()
    kwargs = model_build_kwargs(cfg, vae, text_encoder)
    seed_everything(cfg.seed)
    model = build_model(cfg.model.type, **kwargs)
    if load_pretrained and cfg.model.from_pretrained:
        load_checkpoint(model, cfg.model.from_pretrained)
    model = model.to(device).train()
    if cfg.compile:
        from opensora_core.models.compile import compile_blocks

        logger.info("compile: torch.compile of %d transformer blocks (inductor)", compile_blocks(model))
    scheduler = build_scheduler(cfg.scheduler.type, **cfg.scheduler.build_kwargs())
    patch = tuple(int(p) for p in getattr(model, "patch_size", (1, 1, 1)))
    return Components(
        text_encoder=text_encoder,
        vae=vae,
        model=model,
        scheduler=scheduler,
        patch_size=patch,  # type: ignore[arg-type]
        video_info=model_caps(cfg.model.type).video_info,
    )


# ----------------------------------------------------------------------------------------------- data


class KeyedDataset(torch.utils.data.Dataset):
    """Wraps a video dataset so that item ``index`` of epoch ``e`` draws from ``Random(seed, e, index)``."""

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (before creating the DataLoader iterator)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        self.dataset.rng = random.Random(derive_seed(self.seed, "sample", self.epoch, str(index)))
        return self.dataset[index]


def is_synthetic_path(data_path: str) -> bool:
    """True for ``.../synthetic/meta.csv``: the trainer may generate the synthetic set there."""
    p = Path(data_path)
    return p.name == "meta.csv" and p.parent.name == SYNTHETIC_MARKER_DIR and "://" not in data_path


def ensure_synthetic_data(cfg: RunConfig) -> bool:
    """Generate the synthetic clip set when ``dataset.data_path`` is a missing ``.../synthetic/meta.csv``.

    Writes 64 clips at the dataset's size (at least 16 frames) with ``opensora_core.data.synthetic.generate``
    and returns True; any other path is left alone (False) for the dataset to report. The trainer calls this
    on rank 0 only while the other ranks wait.
    """
    data_path = cfg.dataset.data_path if cfg.dataset is not None else None
    if not data_path or not is_synthetic_path(data_path) or Path(data_path).exists():
        return False
    from opensora_core.data.synthetic import generate

    image_size = getattr(cfg.dataset, "image_size", None) or (32, 32)
    sizes = [s for s in tuple(image_size) if s]
    size = max(sizes) if sizes else 32
    size += size % 2
    frames = max(16, (getattr(cfg.dataset, "num_frames", None) or 16) * cfg.dataset.frame_interval)
    logger.info(
        "%s does not exist: generating the synthetic set there (%d clips, %dx%d, %d frames)",
        data_path,
        SYNTHETIC_NUM_CLIPS,
        size,
        size,
        frames,
    )
    generate(Path(data_path).parent, SYNTHETIC_NUM_CLIPS, size=size, num_frames=frames, seed=cfg.seed)
    return True


def _converted_table(data_path: str, root: str | None, headerless: bool) -> str:
    """A local csv with ``path,text`` header and root-joined paths (Open-Sora 1.0 CSVs, ``root``)."""
    import pandas as pd

    if headerless:
        with storage.open_read(data_path) as f:
            lines = f.read().decode("utf-8").splitlines()
        rows = [r for r in csv.reader(lines) if r]
        if any(len(r) < 2 for r in rows):
            raise ValueError(
                f"dataset.data_path {data_path}: every row needs 'path,caption' (headerless CSV)"
            )
        table = pd.DataFrame({"path": [r[0] for r in rows], "text": [r[1] for r in rows]})
    else:
        from opensora_core.data.datasets import read_table

        table = read_table(data_path)

    def absolute(path: str, base: str) -> str:
        if os.path.isabs(path) or "://" in path:
            return path
        return storage.join(base, path) if "://" in base else str(Path(base).resolve() / path)

    if root:  # Open-Sora: root joined to every relative path
        table["path"] = [absolute(str(p), root) for p in table["path"]]
    elif storage.parse_uri(data_path).is_local:  # ours: relative to the table's folder
        folder = str(storage.parse_uri(data_path).local_path.resolve().parent)
        table["path"] = [absolute(str(p), folder) for p in table["path"]]
    out = Path(tempfile.mkdtemp(prefix="opensora-data-")) / "meta.csv"
    table.to_csv(out, index=False)
    return str(out)


def build_dataset(cfg: RunConfig) -> Any:
    """The dataset of ``cfg.dataset`` (VideoTextDataset, VariableVideoTextDataset, or a 1.0 CSV)."""
    from opensora_core.data.datasets import VariableVideoTextDataset, VideoTextDataset

    ds = cfg.dataset
    if ds is None or ds.data_path is None:
        raise ValueError("dataset.data_path is not set: pass --data-path or set dataset.data_path")
    data_path = ds.data_path
    if ds.type == "DatasetFromCSV" or ds.root:
        data_path = _converted_table(data_path, ds.root, headerless=ds.type == "DatasetFromCSV")
    if ds.type == "VariableVideoTextDataset":
        return VariableVideoTextDataset(
            data_path, frame_interval=ds.frame_interval, transform_name=ds.transform_name
        )
    return VideoTextDataset(
        data_path,
        num_frames=ds.num_frames,
        frame_interval=ds.frame_interval,
        image_size=tuple(ds.image_size),
        transform_name=ds.transform_name,
    )


@dataclass
class DataPipeline:
    """Dataset wrapper, sampler and DataLoader of one rank."""

    dataset: KeyedDataset
    sampler: Any
    loader: torch.utils.data.DataLoader
    variable: bool

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the sampler and the keyed dataset."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def sampler_state(self, num_steps: int, batch_size: int | None) -> dict[str, int]:
        """Sampler state after ``num_steps`` batches of the current iterator."""
        if self.variable:
            return self.sampler.state_dict(num_steps)
        return self.sampler.state_dict(num_steps, batch_size)


def build_data(cfg: RunConfig, dp_size: int, dp_rank: int, device: torch.device) -> DataPipeline:
    """Dataset + resumable sampler over the data-parallel group + DataLoader (drop_last, as the reference)."""
    from opensora_core.data.sampler import StatefulDistributedSampler, VariableVideoBatchSampler

    dataset = build_dataset(cfg)
    keyed = KeyedDataset(dataset, cfg.seed)
    common: dict[str, Any] = {
        "num_workers": cfg.num_workers,
        "pin_memory": device.type == "cuda",
    }
    if cfg.dataset is not None and cfg.dataset.type == "VariableVideoTextDataset":
        sampler = VariableVideoBatchSampler(
            dataset,
            cfg.bucket_config,
            num_replicas=dp_size,
            rank=dp_rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
            num_bucket_build_workers=cfg.num_bucket_build_workers,
        )
        loader = torch.utils.data.DataLoader(keyed, batch_sampler=sampler, **common)
        return DataPipeline(keyed, sampler, loader, variable=True)
    sampler = StatefulDistributedSampler(
        dataset, num_replicas=dp_size, rank=dp_rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = torch.utils.data.DataLoader(
        keyed, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, **common
    )
    return DataPipeline(keyed, sampler, loader, variable=False)
