"""Score stage: per-clip quality columns, each computed on a few sampled frames.

``motion``: mean optical-flow magnitude (OpenCV Farneback) between ``num_pairs`` pairs of consecutive frames,
evenly spread over the clip, at ``flow_size`` px on the longer side; in pixels per frame of a 256-px-wide frame
(so the number does not depend on the analysis size). Static clips score ~0, slideshows and cuts score high.

``aesthetic``: the LAION aesthetic predictor: a CLIP image embedding (L2-normalised) through an MLP head
(``layers.0`` ... ``layers.7``: widths d -> 1024 -> 128 -> 64 -> 16 -> 1), averaged over ``num_frames`` frames
(LAION's scale: about 1-10). The CLIP model is a local folder or hub id of a full ``CLIPModel`` (LAION's head
was trained on ``openai/clip-vit-large-patch14``), the head a ``.pth``/``.safetensors`` state dict given by path.

``text_match``: how well the sampled frames match the row's caption (``text``): evaluation's CLIPScore, the mean
over the ``num_frames`` frames of ``100 * max(cos(image, caption), 0)``
(:meth:`opensora_core.models.clip.ClipEmbedder.text_frame_score`), so a filter threshold means the same number
as evaluation's ``clip_score``. Uses the caption the row has when scored (sidecar ``.txt`` or the input table);
a row without one gets NaN, which a ``text_match`` filter rule drops as missing.

Both CLIP scores load their model with :func:`opensora_core.models.clip.load_clip` (one load per worker process
and model, shared when ``aesthetic_clip`` and ``text_match_clip`` name the same one), on the CPU.

``text_area``: burned-in text, the largest share of a frame covered by text boxes the bundled RapidOCR models
detect and read, over the same ``num_frames`` frames analysed at ``text_size`` px on the longer side
(:mod:`opensora_core.data.curate.text_area`); 0.0 without text. Needs the ``rapidocr`` package (checked before
any clip is scored).
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from opensora_core.data.curate.common import (
    StageReport,
    map_items,
    read_stage_input,
    sample_frames,
    sample_indices,
    write_stage,
)
from opensora_core.data.curate.text_area import TextAreaScorer, require_rapidocr
from opensora_core.data.prepare import SCORE_COLUMNS
from opensora_core.models.clip import ClipEmbedder, load_clip

FLOW_REFERENCE_WIDTH = 256


def motion_score(path: str, num_frames: int, num_pairs: int = 4, flow_size: int = 128) -> float:
    """Mean Farneback flow magnitude over ``num_pairs`` consecutive-frame pairs (see the module docstring)."""
    import cv2

    if num_frames < 2:
        return 0.0
    starts = sample_indices(num_frames - 1, num_pairs)
    frames = sample_frames(path, np.concatenate([starts, starts + 1]), max_side=flow_size)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    n = len(starts)
    mags = []
    for a, b in zip(gray[:n], gray[n:], strict=True):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(mags)) * FLOW_REFERENCE_WIDTH / gray[0].shape[1]


class AestheticHead(nn.Module):
    """The LAION aesthetic MLP: ``[N, d]`` normalised CLIP embeddings -> ``[N]`` scores."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.layers(emb).squeeze(-1)  # [N, d] -> [N]


class AestheticScorer:
    """CLIP image embeddings (:mod:`opensora_core.models.clip`) + :class:`AestheticHead`; ``scorer(frames)`` ->
    mean score of uint8 ``[N, H, W, 3]``. ``clip``: a model name for :func:`load_clip` or a loaded embedder."""

    def __init__(self, clip: str | ClipEmbedder, head: str, device: str = "cpu") -> None:
        self.clip = clip if isinstance(clip, ClipEmbedder) else load_clip(clip, device)
        self.head = AestheticHead(self.clip.dim)
        self.head.load_state_dict(_load_state_dict(head))
        self.head.eval()

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> float:
        return float(self.head(self.clip.embed_images(frames)).mean())  # [N, d] unit length -> [N] -> mean


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"aesthetic head weights {path} do not exist (a .pth or .safetensors state dict)"
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


@functools.lru_cache(maxsize=2)
def _clip(name: str) -> ClipEmbedder:
    """One CLIP per worker process and model name (aesthetic and text_match share it)."""
    return load_clip(name, "cpu")


@functools.lru_cache(maxsize=1)
def _aesthetic(clip: str, head: str) -> AestheticScorer:
    return AestheticScorer(_clip(clip), head)


@functools.lru_cache(maxsize=1)
def _text_area(max_side: int) -> TextAreaScorer:
    """One OCR engine per worker process."""
    return TextAreaScorer(max_side)


def _caption(row: dict[str, Any]) -> str:
    text = row.get("text")
    return "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text).strip()


def _score_one(
    row: dict[str, Any],
    motion: bool,
    aesthetic: tuple[str, str] | None,
    num_frames: int,
    text_match_clip: str | None = None,
    text_size: int | None = None,
) -> dict[str, Any]:
    """Worker: the score columns of one row (``text_area`` when ``text_size`` is set), or ``{"error": ...}``."""
    from opensora_core.data.video_io import is_image_path, read_image

    path = str(row["path"])
    out: dict[str, Any] = {}
    try:
        image = is_image_path(path)
        if motion:
            out["motion"] = 0.0 if image else motion_score(path, int(row["num_frames"]))
        if aesthetic is None and text_match_clip is None and text_size is None:
            return out
        frames = (  # decoded once for the CLIP and text scores
            read_image(path)[None]
            if image
            else sample_frames(path, sample_indices(int(row["num_frames"]), num_frames))
        )
        if aesthetic is not None:
            out["aesthetic"] = _aesthetic(*aesthetic)(frames)
        if text_match_clip is not None:
            caption = _caption(row)
            out["text_match"] = (
                _clip(text_match_clip).text_frame_score(frames, caption) if caption else math.nan
            )
        if text_size is not None:
            out["text_area"] = _text_area(text_size)(frames)
    except Exception as exc:  # one bad clip must not stop the run
        return {"error": f"scoring failed: {type(exc).__name__}: {exc}"}
    return out


def score(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    motion: bool = True,
    aesthetic_clip: str | None = None,
    aesthetic_head: str | None = None,
    num_frames: int = 3,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    text_match_clip: str | None = None,
    text: bool = False,
    text_size: int = 640,
) -> StageReport:
    """Add score columns (``motion``; ``aesthetic`` when both ``aesthetic_clip`` and ``aesthetic_head`` are given;
    ``text_match`` with ``text_match_clip``; ``text_area`` with ``text``, frames at ``text_size`` px) to the table
    ``input``; rows that cannot be scored are dropped with the reason."""
    t0 = time.perf_counter()
    if (aesthetic_clip is None) != (aesthetic_head is None):
        raise ValueError("aesthetic scoring needs both --aesthetic-clip and --aesthetic-head")
    if not motion and aesthetic_clip is None and text_match_clip is None and not text:
        raise ValueError(
            "nothing to score: enable motion or give --aesthetic-clip/--aesthetic-head, --text-match-clip or --text"
        )
    if text:
        if text_size < 32:
            raise ValueError(f"--text-size must be at least 32 px, got {text_size}")
        require_rapidocr()  # a missing package fails the stage here, not every row
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src, ("path", "num_frames"))
    aesthetic = (aesthetic_clip, aesthetic_head) if aesthetic_clip else None
    rows = df.to_dict("records")
    items = [(r, motion, aesthetic, num_frames, text_match_clip, text_size if text else None) for r in rows]
    results = map_items(_score_one, items, workers, "scoring", "clip", progress)
    dropped = [(str(r["path"]), res["error"]) for r, res in zip(rows, results, strict=True) if "error" in res]
    keep = [i for i, res in enumerate(results) if "error" not in res]
    table = df.iloc[keep].copy()
    enabled = {
        "motion": motion,
        "aesthetic": aesthetic is not None,
        "text_match": text_match_clip is not None,
        "text_area": text,
    }
    for column in SCORE_COLUMNS:
        if enabled[column]:  # also on an empty table: later stages and filters look for the column
            table[column] = [float(results[i][column]) for i in keep]
    return write_stage("score", src, out, table, len(df), dropped, t0, overwrite)
