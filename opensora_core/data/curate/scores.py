"""Score stage: per-clip quality columns, each computed on a few sampled frames.

``motion``: mean optical-flow magnitude (OpenCV Farneback) between ``num_pairs`` pairs of consecutive frames,
evenly spread over the clip, at ``flow_size`` px on the longer side; in pixels per frame of a 256-px-wide frame
(so the number does not depend on the analysis size). Static clips score ~0, slideshows and cuts score high.

``aesthetic``: the LAION aesthetic predictor: a CLIP image embedding (L2-normalised) through an MLP head
(``layers.0`` ... ``layers.7``: widths d -> 1024 -> 128 -> 64 -> 16 -> 1), averaged over ``num_frames`` frames
(LAION's scale: about 1-10). The CLIP model is a local folder or hub id (``CLIPVisionModelWithProjection``), the
head a ``.pth``/``.safetensors`` state dict given by path.

Text-frame CLIP similarity belongs to evaluation's CLIPScore and is not computed here.
"""

from __future__ import annotations

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
    """CLIP image encoder + :class:`AestheticHead`; ``scorer(frames)`` -> mean score of uint8 ``[N, H, W, 3]``."""

    def __init__(self, clip: str, head: str, device: str = "cpu") -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self.device = torch.device(device)
        self.processor = CLIPImageProcessor.from_pretrained(clip)
        self.model = CLIPVisionModelWithProjection.from_pretrained(clip).eval().to(self.device)
        self.head = AestheticHead(self.model.config.projection_dim)
        self.head.load_state_dict(_load_state_dict(head))
        self.head.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> float:
        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
        emb = self.model(pixel_values=pixels).image_embeds  # [N, d]
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return float(self.head(emb).mean())


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"aesthetic head weights {path} do not exist (a .pth or .safetensors state dict)"
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


_SCORER: tuple[tuple[str, str], AestheticScorer] | None = None


def _score_one(
    row: dict[str, Any], motion: bool, aesthetic: tuple[str, str] | None, num_frames: int
) -> dict[str, Any]:
    """Worker: the score columns of one row, or ``{"error": ...}``."""
    global _SCORER
    from opensora_core.data.video_io import is_image_path, read_image

    path = str(row["path"])
    out: dict[str, Any] = {}
    try:
        image = is_image_path(path)
        if motion:
            out["motion"] = 0.0 if image else motion_score(path, int(row["num_frames"]))
        if aesthetic is not None:
            if _SCORER is None or _SCORER[0] != aesthetic:
                _SCORER = (aesthetic, AestheticScorer(*aesthetic))
            frames = (
                read_image(path)[None]
                if image
                else sample_frames(path, sample_indices(int(row["num_frames"]), num_frames))
            )
            out["aesthetic"] = _SCORER[1](frames)
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
) -> StageReport:
    """Add score columns (``motion``; ``aesthetic`` when both ``aesthetic_clip`` and ``aesthetic_head`` are given)
    to the table ``input``; rows that cannot be scored are dropped with the reason."""
    t0 = time.perf_counter()
    if (aesthetic_clip is None) != (aesthetic_head is None):
        raise ValueError("aesthetic scoring needs both --aesthetic-clip and --aesthetic-head")
    if not motion and aesthetic_clip is None:
        raise ValueError("nothing to score: enable motion or give --aesthetic-clip/--aesthetic-head")
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src, ("path", "num_frames"))
    aesthetic = (aesthetic_clip, aesthetic_head) if aesthetic_clip else None
    rows = df.to_dict("records")
    items = [(r, motion, aesthetic, num_frames) for r in rows]
    results = map_items(_score_one, items, workers, "scoring", "clip", progress)
    dropped = [(str(r["path"]), res["error"]) for r, res in zip(rows, results, strict=True) if "error" in res]
    keep = [i for i, res in enumerate(results) if "error" not in res]
    table = df.iloc[keep].copy()
    enabled = {"motion": motion, "aesthetic": aesthetic is not None}
    for column in ("motion", "aesthetic"):
        if enabled[column]:  # also on an empty table: later stages and filters look for the column
            table[column] = [float(results[i][column]) for i in keep]
    return write_stage("score", src, out, table, len(df), dropped, t0, overwrite)
