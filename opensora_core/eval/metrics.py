"""Evaluation metrics for generated videos.

Two families:

- **Caption agreement on the synthetic set** (:mod:`opensora_core.data.synthetic`: one coloured shape moving in
  one direction). :func:`score_caption_agreement` recovers each clip's colour and motion direction with
  :func:`~opensora_core.data.synthetic.score_clip` and compares them with the prompt's caption
  (:func:`~opensora_core.data.synthetic.parse_caption`). Chance level is 25% for colour and for direction
  (4 of each). On ground-truth clips the scorer is exact, so any shortfall of a model is the model's.
- **Sanity statistics for any prompt** (:func:`video_statistics`): the fraction of videos that are finite and not
  blank/constant, mean intensity and mean frame-to-frame change. These gate real-data models, whose prompts have
  no machine-checkable answer.

Videos are uint8 ``[T, H, W, 3]`` arrays (what :func:`opensora_core.sample.writer.read_sample` returns) or float
``[3, T, H, W]`` tensors in [-1, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opensora_core.data.synthetic import COLOURS, DIRECTIONS, SHAPES, caption, parse_caption, score_clip

CHANCE_COLOUR = 1.0 / len(COLOURS)
CHANCE_DIRECTION = 1.0 / len(DIRECTIONS)
# A video whose pixel standard deviation is below this (in [0, 1] units) counts as blank.
BLANK_STD = 1.0 / 255.0


@dataclass(frozen=True)
class ClipVerdict:
    """What the scorer saw in one clip against what its caption asked for."""

    prompt: str
    want_colour: str
    want_direction: str
    got_colour: str
    got_direction: str

    @property
    def colour_ok(self) -> bool:
        """The clip shows the caption's colour."""
        return self.got_colour == self.want_colour

    @property
    def direction_ok(self) -> bool:
        """The shape moves in the caption's direction."""
        return self.got_direction == self.want_direction

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON reports), with the two verdicts."""
        return {**asdict(self), "colour_ok": self.colour_ok, "direction_ok": self.direction_ok}


@dataclass(frozen=True)
class CaptionAgreement:
    """Accuracy of a set of clips against their synthetic captions."""

    num_clips: int
    colour_accuracy: float
    direction_accuracy: float
    joint_accuracy: float
    no_shape_fraction: float
    verdicts: tuple[ClipVerdict, ...]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics named ``{prefix}colour_accuracy`` etc."""
        return {
            f"{prefix}colour_accuracy": self.colour_accuracy,
            f"{prefix}direction_accuracy": self.direction_accuracy,
            f"{prefix}joint_accuracy": self.joint_accuracy,
            f"{prefix}no_shape_fraction": self.no_shape_fraction,
        }


def synthetic_prompts(shapes: Sequence[str] = SHAPES) -> list[str]:
    """Every (colour, shape, direction) caption of the synthetic set for ``shapes``: 16 per shape.

    Each colour appears with each direction equally often, so a model that ignores the caption scores
    chance (25%) on both colour and direction.
    """
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        raise ValueError(f"shapes must be a non-empty subset of {list(SHAPES)}, got {list(shapes)}")
    return [caption(c, s, d) for s, c, d in itertools.product(shapes, COLOURS, DIRECTIONS)]


def is_synthetic_prompt(text: str) -> bool:
    """True when ``text`` is a caption :func:`parse_caption` understands."""
    try:
        parse_caption(text)
    except ValueError:
        return False
    return True


def score_caption_agreement(
    videos: Sequence[Any], prompts: Sequence[str], threshold: float = 0.5
) -> CaptionAgreement:
    """Score each video against its synthetic caption (colour and motion direction).

    ``videos[i]`` was generated for ``prompts[i]``; every prompt must be a synthetic caption (ValueError naming
    the first that is not). ``threshold`` is :func:`score_clip`'s brightness threshold.
    """
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts; pass one prompt per video")
    if not prompts:
        raise ValueError("no videos to score")
    verdicts = []
    for i, (video, prompt) in enumerate(zip(videos, prompts, strict=True)):
        try:
            colour, _shape, direction = parse_caption(prompt)
        except ValueError as exc:
            raise ValueError(f"prompt {i} cannot be scored: {exc}") from None
        got_colour, got_direction = score_clip(video, threshold=threshold)
        verdicts.append(ClipVerdict(prompt, colour, direction, got_colour, got_direction))
    n = len(verdicts)
    return CaptionAgreement(
        num_clips=n,
        colour_accuracy=sum(v.colour_ok for v in verdicts) / n,
        direction_accuracy=sum(v.direction_ok for v in verdicts) / n,
        joint_accuracy=sum(v.colour_ok and v.direction_ok for v in verdicts) / n,
        no_shape_fraction=sum(v.got_colour == "none" for v in verdicts) / n,
        verdicts=tuple(verdicts),
    )


def _frames01(video: Any) -> np.ndarray:
    """uint8 [T,H,W,3] or float [3,T,H,W] in [-1,1] -> float32 [T,H,W,3] in [0,1] (NaN/inf preserved)."""
    if hasattr(video, "detach"):
        video = video.detach().float().cpu().numpy()
    arr = np.asarray(video)
    if arr.ndim != 4:
        raise ValueError(f"expected a 4-D video, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.shape[0] != 3:
        raise ValueError(f"float videos must be [3, T, H, W] in [-1, 1], got {arr.shape}")
    return (arr.transpose(1, 2, 3, 0).astype(np.float32) + 1.0) / 2.0


def video_statistics(videos: Sequence[Any]) -> dict[str, float]:
    """Prompt-independent sanity metrics of generated videos.

    - ``valid_fraction``: finite everywhere and not blank (pixel std above 1/255)
    - ``mean_intensity``: mean pixel value in [0, 1] over valid videos
    - ``temporal_change``: mean absolute difference of consecutive frames over valid videos (0 for stills)
    """
    if not videos:
        raise ValueError("no videos to score")
    valid, intensity, change = 0, [], []
    for video in videos:
        x = _frames01(video)
        if not np.isfinite(x).all() or float(x.std()) < BLANK_STD:
            continue
        valid += 1
        intensity.append(float(x.mean()))
        change.append(float(np.abs(np.diff(x, axis=0)).mean()) if x.shape[0] > 1 else 0.0)
    return {
        "valid_fraction": valid / len(videos),
        "mean_intensity": float(np.mean(intensity)) if intensity else 0.0,
        "temporal_change": float(np.mean(change)) if change else 0.0,
    }
