"""Fréchet video distance (FVD): features of a video network on generated clips against held-out real clips.

    from opensora_core.eval.fvd import fvd, held_out_clips, load_video_extractor
    extractor = load_video_extractor("pretrained_models/i3d_torchscript.pt")   # or "MCG-NJU/videomae-base"
    generated = extractor.features(videos)                  # uint8 [T, H, W, 3] each -> [N, D] float64
    real = extractor.features(held_out_clips("meta.eval.csv", num_frames=16, frame_interval=3, seed=0))
    fvd(generated, real)                                    # Fréchet distance of the two fitted Gaussians

Two kinds of extractor, chosen by ``load_video_extractor(name)``:

- **a TorchScript file** (``name`` is an existing file or ends in ``.pt`` / ``.pth`` / ``.jit`` /
  ``.torchscript``; local or ``s3://``), e.g. the I3D ``i3d_torchscript.pt`` most FVD implementations use.
  Loading it *executes the TorchScript graph stored in the file*: use only files from a source you trust.
  Each clip is scaled to [0, 1], its shorter side resized to ``resolution`` (224, bilinear), centre-cropped to
  ``resolution`` x ``resolution`` and mapped to [-1, 1]; a batch ``[B, 3, T, 224, 224]`` goes to ``forward``
  with those of ``rescale=False, resize=False, return_features=True`` its signature names (the I3D file's
  raw 400-d features before the softmax; a plain ``forward(x)`` gets ``x`` only). The output must be
  ``[B, D]``.
- **a transformers video model** (a hub id or a local folder; weights only, no remote code), e.g. VideoMAE:
  the model's own image processor (PIL backend) on the clip's frames, resampled evenly to the model's
  ``num_frames`` when its config has one, and the mean over tokens of ``last_hidden_state``.

The real clips are the rows of the held-out metadata table: ``num_frames`` frames ``frame_interval`` apart
from a window chosen by a generator keyed by ``(seed, path)`` (deterministic, independent of row order); an
image row is repeated ``num_frames`` times; a clip shorter than the window is skipped and counted. The
distance is :func:`opensora_core.eval.frechet.frechet_distance` of the Gaussians fitted to the two feature sets
(each needs at least two clips).
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from opensora_core.eval.frechet import frechet_distance, gaussian

logger = logging.getLogger(__name__)

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".torchscript")
I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}
BATCH = 8


def fvd(generated: np.ndarray, real: np.ndarray) -> float:
    """FVD of generated features ``[N, D]`` against real features ``[M, D]`` (N, M >= 2)."""
    return frechet_distance(*gaussian(real), *gaussian(generated))


def _batches(videos: Iterable[Any], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for video in videos:
        arr = np.asarray(video)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"videos must be uint8 [T, H, W, 3], got {arr.dtype} {arr.shape}")
        batch.append(arr)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class TorchScriptExtractor:
    """A TorchScript video network (module docstring); ``features(videos) -> [N, D]``."""

    module: Any
    device: Any
    resolution: int = 224

    def _kwargs(self) -> dict[str, bool]:
        names = {a.name for a in self.module.forward.schema.arguments}
        return {k: v for k, v in I3D_KWARGS.items() if k in names}

    def preprocess(self, video: np.ndarray) -> Any:
        """uint8 ``[T, H, W, 3]`` -> float ``[3, T, R, R]`` in [-1, 1] (shorter side resized, centre crop)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255.0  # [T, 3, H, W]
        h, w = x.shape[-2:]
        r = self.resolution
        scale = r / min(h, w)
        size = (r, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), r)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        top, left = (x.shape[-2] - r) // 2, (x.shape[-1] - r) // 2
        x = x[:, :, top : top + r, left : left + r]
        return (x * 2.0 - 1.0).permute(1, 0, 2, 3).contiguous()  # [3, T, R, R]

    def features(self, videos: Iterable[np.ndarray]) -> np.ndarray:
        """Features ``[N, D]`` (float64) of uint8 ``[T, H, W, 3]`` clips (clips of a batch share T)."""
        import torch

        kwargs, out = self._kwargs(), []
        with torch.no_grad():
            for batch in _batches(videos, BATCH):
                x = torch.stack([self.preprocess(v) for v in batch]).to(self.device)  # [B, 3, T, R, R]
                feats = self.module(x, **kwargs)
                if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != len(batch):
                    shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
                    raise ValueError(f"the TorchScript extractor must return [B, D] features, got {shape}")
                out.append(feats.detach().double().cpu().numpy())
        return _stack(out)


@dataclass
class TransformersVideoExtractor:
    """A transformers video model (module docstring); ``features(videos) -> [N, D]``."""

    model: Any
    processor: Any
    device: Any

    def features(self, videos: Iterable[np.ndarray]) -> np.ndarray:
        """Mean-pooled ``last_hidden_state`` ``[N, D]`` (float64) of uint8 ``[T, H, W, 3]`` clips."""
        import torch

        want = getattr(self.model.config, "num_frames", None)
        out = []
        with torch.no_grad():
            for batch in _batches(videos, BATCH):
                if want:
                    batch = [v[np.linspace(0, len(v) - 1, int(want)).round().astype(int)] for v in batch]
                pixels = self.processor([list(v) for v in batch], return_tensors="pt")["pixel_values"]
                hidden = self.model(pixel_values=pixels.to(self.device)).last_hidden_state  # [B, L, D]
                out.append(hidden.mean(dim=1).double().cpu().numpy())
        return _stack(out)


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def is_torchscript_name(name: str) -> bool:
    """True when ``name`` names a TorchScript file rather than a transformers model."""
    return name.lower().endswith(TORCHSCRIPT_SUFFIXES) or os.path.isfile(os.path.expanduser(name))


def load_video_extractor(
    name: str, device: str | None = None
) -> TorchScriptExtractor | TransformersVideoExtractor:
    """The FVD feature extractor ``name`` (a TorchScript file or a transformers video model; module docstring).

    FileNotFoundError for a missing TorchScript file, ValueError for a file that is not TorchScript,
    :class:`~opensora_core.models.pretrained.ModelNotFoundError` for a model that cannot be found.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if is_torchscript_name(name):
        from opensora_core.data.prepare import fetch_to_local, is_uri

        if not is_uri(name) and not os.path.isfile(os.path.expanduser(name)):
            raise FileNotFoundError(
                f"fvd_extractor {name!r} does not exist: give a TorchScript file (e.g. i3d_torchscript.pt) "
                "or a transformers video model id / folder"
            )
        with fetch_to_local(name) as local:
            try:
                module = torch.jit.load(os.path.expanduser(local), map_location=dev)
            except RuntimeError as exc:
                raise ValueError(
                    f"fvd_extractor {name!r} is not a TorchScript archive (write one with "
                    f"torch.jit.script(model).save(path)): {str(exc).splitlines()[0]}"
                ) from None
        return TorchScriptExtractor(module.eval(), dev)
    from transformers import AutoImageProcessor, AutoModel

    from opensora_core.models.pretrained import (
        call_hub,
        hub_kwargs,
        looks_like_local_path,
        resolve_local_folder,
    )

    what = "FVD video model"
    if looks_like_local_path(name):
        source, kwargs = str(resolve_local_folder(name, None, what)), {}
    else:
        source, kwargs = name, hub_kwargs(None, False, None)
    model = call_hub(AutoModel.from_pretrained, source, what, **kwargs)
    processor = call_hub(AutoImageProcessor.from_pretrained, source, what, backend="pil", **kwargs)
    return TransformersVideoExtractor(model.eval().to(dev), processor, dev)


@dataclass
class FvdReference:
    """An extractor with the features of the real held-out clips; :meth:`distance` scores generated videos."""

    extractor: Any
    real: np.ndarray  # [M, D]
    skipped: list[str]

    def distance(self, videos: Iterable[np.ndarray]) -> float:
        """FVD of uint8 ``[T, H, W, 3]`` videos (at least two) against the real clips."""
        return fvd(self.extractor.features(videos), self.real)


def fvd_reference(
    extractor: str, table: str, num_frames: int, frame_interval: int, seed: int, device: str | None = None
) -> FvdReference:
    """Load ``extractor`` and extract the features of the held-out clips of ``table`` (ValueError when fewer
    than two clips can be read)."""
    if not isinstance(num_frames, int) or num_frames < 1 or frame_interval < 1:
        raise ValueError(
            f"FVD reads held-out clips of num_frames={num_frames!r} frames every {frame_interval}: both must be "
            "positive integers (give the evaluation a fixed num_frames, e.g. the override num_frames=16)"
        )
    loaded = load_video_extractor(extractor, device)
    skipped: list[str] = []
    real = loaded.features(held_out_clips(table, num_frames, frame_interval, seed, skipped))
    if len(real) < 2:
        raise ValueError(
            f"FVD needs at least 2 held-out clips of {num_frames} frames (interval {frame_interval}) in {table}; "
            f"got {len(real)} ({len(skipped)} too short)"
        )
    return FvdReference(loaded, real, skipped)


def held_out_clips(
    table: str, num_frames: int, frame_interval: int, seed: int, skipped: list[str] | None = None
) -> Iterator[np.ndarray]:
    """The real clips of the held-out metadata ``table``, one at a time, as uint8 ``[num_frames, H, W, 3]``
    (module docstring); the paths of clips too short for the window are appended to ``skipped``."""
    from opensora_core.data.datasets import load_metadata
    from opensora_core.data.prepare import fetch_to_local
    from opensora_core.data.video_io import VideoDecodeError, is_image_path, read_clip, read_image

    for row in load_metadata(table).to_dict("records"):
        path = str(row["path"])
        with fetch_to_local(path) as source:
            if is_image_path(path):
                yield np.repeat(read_image(source)[None], num_frames, axis=0)
                continue
            total = row.get("num_frames")
            try:
                frames, _ = read_clip(
                    source,
                    num_frames,
                    frame_interval,
                    random.Random(f"{seed}:{path}"),
                    total_frames=int(total) if total and float(total) > 0 else None,
                )
            except VideoDecodeError as exc:
                logger.warning("FVD: skipping held-out clip %s (%s)", path, exc)
                if skipped is not None:
                    skipped.append(path)
                continue
        yield frames


__all__ = [
    "FvdReference",
    "TorchScriptExtractor",
    "TransformersVideoExtractor",
    "fvd",
    "fvd_reference",
    "held_out_clips",
    "is_torchscript_name",
    "load_video_extractor",
]
