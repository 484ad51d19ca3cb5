"""Video-text datasets over a metadata table (Open-Sora v1.1 ``VideoTextDataset`` / ``VariableVideoTextDataset``).

The table (csv or parquet, written by :mod:`opensora_core.data.prepare`) has at least ``path`` and ``text``;
the variable-size dataset also needs ``num_frames``, ``height`` and ``width``. Relative paths are resolved
against the table's folder; ``s3://`` paths are read through the storage layer.

Each item is a dict:

* ``video``: float32 ``[3, T, H, W]`` in [-1, 1];
* ``text``: the caption;
* ``num_frames``, ``height``, ``width``: the output clip size;
* ``ar``: ``width / height`` of the output clip (the reference training convention; note the metadata column
  ``aspect_ratio`` is the opposite, H/W);
* ``fps``: the file's frame rate (24 when the file reports none; 120 for images, as the reference).

A file that fails to load is logged with its path and replaced by another sample (up to ``max_retries``
different samples); the failures are counted in :attr:`VideoTextDataset.num_failed` (shared with DataLoader
worker processes) and listed per process in ``failed_paths``.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from opensora_core.data.prepare import fetch_to_local, is_uri, read_local_table
from opensora_core.data.transforms import TRANSFORM_NAMES, get_transform
from opensora_core.data.video_io import IMAGE_FPS, is_image_path, read_clip, read_image

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "text")
VARIABLE_COLUMNS = ("num_frames", "height", "width")


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a metadata table (``.csv``, ``.parquet``/``.pq``; local or a storage URI)."""
    path = str(path)
    lower = path.lower()
    if not lower.endswith((".csv", ".parquet", ".pq")):
        raise ValueError(f"metadata table {path} must end in .csv, .parquet or .pq")
    if is_uri(path):
        with fetch_to_local(path) as local:
            return read_table(local)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"metadata table {path} does not exist; create it with python -m opensora_core.data.prepare"
        )
    return read_local_table(path)


def load_metadata(
    data_path: str | os.PathLike[str], required: tuple[str, ...] = REQUIRED_COLUMNS
) -> pd.DataFrame:
    """Read the table, check required columns and resolve relative ``path`` entries against its folder."""
    data = read_table(data_path)
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise ValueError(
            f"metadata table {data_path} lacks columns {missing} (has {list(data.columns)}); "
            "regenerate it with python -m opensora_core.data.prepare"
        )
    data = data.reset_index(drop=True)
    data["text"] = data["text"].fillna("").astype(str)
    if not is_uri(str(data_path)):
        root = Path(data_path).resolve().parent
        data["path"] = [
            p if (is_uri(p) or os.path.isabs(p)) else str(root / p) for p in data["path"].astype(str)
        ]
    return data


class VideoTextDataset(torch.utils.data.Dataset):
    """Fixed-size clips: ``num_frames`` frames ~``frame_interval`` apart, resized to ``image_size``.

    Images become ``num_frames`` repeated frames (``image_frames="repeat"``, the reference) or one frame
    (``image_frames="single"``). Temporal sampling is the reference ``TemporalRandomCrop`` with ``np.linspace``
    indices, drawn from ``rng`` (default: Python's ``random`` module, which DataLoader seeds per worker).
    """

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        num_frames: int = 16,
        frame_interval: int = 1,
        image_size: tuple[int, int] = (256, 256),
        transform_name: str = "center",
        image_frames: Literal["repeat", "single"] = "repeat",
        max_retries: int = 10,
        rng: random.Random | None = None,
        required_columns: tuple[str, ...] = REQUIRED_COLUMNS,
    ) -> None:
        if frame_interval < 1:
            raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
        if image_frames not in ("repeat", "single"):
            raise ValueError(f"image_frames must be 'repeat' or 'single', got {image_frames!r}")
        self.data_path = str(data_path)
        self.data = load_metadata(data_path, required_columns)
        self.num_frames = int(num_frames) if num_frames is not None else None
        self.frame_interval = int(frame_interval)
        self.image_size = tuple(image_size) if image_size is not None else None
        self.transform_name = transform_name
        self.image_frames = image_frames
        self.max_retries = int(max_retries)
        self.rng = rng
        self._failures = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.failed_paths: list[str] = []
        self._transforms: dict[tuple[str, tuple[int, int]], Callable[[Any], torch.Tensor]] = {}
        if transform_name not in TRANSFORM_NAMES:
            raise ValueError(f"unknown transform_name {transform_name!r}; choose one of {TRANSFORM_NAMES}")
        if self.image_size is not None:
            self._transform(
                transform_name, self.image_size
            )  # configuration errors surface here, not per sample

    def __len__(self) -> int:
        return len(self.data)

    @property
    def num_failed(self) -> int:
        """Number of samples that failed to load and were replaced (all DataLoader workers together)."""
        return int(self._failures.item())

    # ------------------------------------------------------------------ helpers
    def _random(self) -> Any:
        return self.rng if self.rng is not None else random

    def _transform(self, name: str, size: tuple[int, int]) -> Callable[[Any], torch.Tensor]:
        key = (name, (int(size[0]), int(size[1])))
        if key not in self._transforms:
            self._transforms[key] = get_transform(name, key[1])
        return self._transforms[key]

    def _row_total_frames(self, row: pd.Series) -> int | None:
        value = row.get("num_frames")
        try:
            return int(value) if value is not None and float(value) > 0 else None
        except (TypeError, ValueError):
            return None

    def load_sample(
        self, index: int, num_frames: int, size: tuple[int, int], transform_name: str, image_frames: str
    ) -> dict[str, Any]:
        """Decode and transform row ``index`` without error handling (raises on a bad file)."""
        row = self.data.iloc[index]
        path = str(row["path"])
        with fetch_to_local(path) as source:  # the path itself, or a temporary copy of a storage URI
            if is_image_path(path):
                image = read_image(source)[None]  # [1, H, W, 3]
                video = self._transform(transform_name, size)(image)  # [3, 1, h, w]
                if image_frames == "repeat" and num_frames > 1:
                    video = video.repeat(1, num_frames, 1, 1)
                fps = IMAGE_FPS
            else:
                frames, fps = read_clip(
                    source,
                    num_frames,
                    self.frame_interval,
                    self._random(),
                    total_frames=self._row_total_frames(row),
                )
                video = self._transform(transform_name, size)(frames)
        t, h, w = video.shape[1:]
        return {
            "video": video,
            "text": str(row["text"]),
            "num_frames": int(t),
            "height": int(h),
            "width": int(w),
            "ar": float(w) / float(h),
            "fps": float(fps),
        }

    def _with_replacement(
        self,
        index: int,
        load: Callable[[int], dict[str, Any]],
        compatible: Callable[[int], bool] | None = None,
    ) -> dict[str, Any]:
        """Call ``load(index)``; on failure log the path, count it and try other random samples.

        Replacements are drawn deterministically from the requested index; ``compatible(i)`` filters them
        (e.g. a video bucket needs a video with enough frames).
        """
        candidate = index
        errors: list[str] = []
        picker = random.Random(index)
        for attempt in range(self.max_retries + 1):
            try:
                return load(candidate)
            except Exception as exc:  # a bad file must never stop training
                path = str(self.data.iloc[candidate]["path"])
                self._failures.add_(1)
                self.failed_paths.append(path)
                errors.append(f"{path}: {exc}")
                logger.warning("skipping unreadable sample %d (%s): %s; replacing it", candidate, path, exc)
                if attempt == self.max_retries or len(self) < 2:
                    break
                candidate = self._pick_replacement(index, picker, compatible)
        raise RuntimeError(
            f"{len(errors)} consecutive samples failed to load starting at index {index}; last errors: "
            + "; ".join(errors[-3:])
        )

    def _pick_replacement(
        self, index: int, picker: random.Random, compatible: Callable[[int], bool] | None
    ) -> int:
        fallback = -1
        for _ in range(64):
            candidate = picker.randrange(len(self) - 1)
            candidate += candidate >= index  # never the failed index itself
            if compatible is None or compatible(candidate):
                return candidate
            fallback = candidate
        return fallback

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.num_frames is None or self.image_size is None:
            raise ValueError(
                "VideoTextDataset needs num_frames and image_size; use VariableVideoTextDataset for buckets"
            )
        index = int(index)
        return self._with_replacement(
            index,
            lambda i: self.load_sample(
                i, self.num_frames, self.image_size, self.transform_name, self.image_frames
            ),
        )


class VariableVideoTextDataset(VideoTextDataset):
    """Bucketed clips: the index is ``"idx-T-H-W"`` from :class:`~opensora_core.data.sampler.VariableVideoBatchSampler`.

    The clip has T frames (images: 1 frame) resized and cropped (``transform_name``, default ``resize_crop``)
    to H x W. ``data["id"]`` holds the row numbers used to seed the keep_prob draws.
    """

    def __init__(
        self,
        data_path: str | os.PathLike[str],
        num_frames: int | None = None,
        frame_interval: int = 1,
        image_size: tuple[int, int] | None = None,
        transform_name: str = "resize_crop",
        max_retries: int = 10,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            data_path,
            num_frames=num_frames,
            frame_interval=frame_interval,
            image_size=image_size,
            transform_name=transform_name,
            image_frames="single",
            max_retries=max_retries,
            rng=rng,
            required_columns=REQUIRED_COLUMNS + VARIABLE_COLUMNS,
        )
        self.data["id"] = np.arange(len(self.data))

    @staticmethod
    def parse_index(index: str) -> tuple[int, int, int, int]:
        """``"idx-T-H-W"`` -> ``(idx, T, H, W)``."""
        try:
            idx, t, h, w = (int(v) for v in str(index).split("-"))
        except ValueError:
            raise ValueError(
                f"VariableVideoTextDataset index must be 'idx-T-H-W' (from VariableVideoBatchSampler), got {index!r}"
            ) from None
        return idx, t, h, w

    def __getitem__(self, index: str) -> dict[str, Any]:  # type: ignore[override]
        idx, t, h, w = self.parse_index(index)

        def compatible(i: int) -> bool:
            row = self.data.iloc[i]
            if t == 1:
                return True
            frames = self._row_total_frames(row)
            return not is_image_path(str(row["path"])) and frames is not None and frames >= t

        def load(i: int) -> dict[str, Any]:
            sample = self.load_sample(i, t, (h, w), self.transform_name, "single")
            if sample["num_frames"] != t:
                raise ValueError(f"an image cannot fill a {t}-frame bucket")
            return sample

        return self._with_replacement(idx, load, compatible)
