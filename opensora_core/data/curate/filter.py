"""Filter stage: drop rows outside typed thresholds; every dropped row is reported with the rule that dropped it.

Rules are checked in a fixed order (duration, frames, height, width, resolution, fps, aspect ratio, scores) and
the first one a row breaks is its reason, e.g. ``duration < 2.0 s (1.2)``. ``duration`` is ``num_frames / fps``
(images have no duration and pass the duration and fps rules).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from opensora_core.data.curate.common import StageReport, kept_rows, read_stage_input, write_stage


class Range(BaseModel):
    """Inclusive bounds; ``None`` is open."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None


class FilterConfig(BaseModel):
    """Thresholds of the filter stage (unknown keys are rejected). ``scores`` maps a score column to its range."""

    model_config = ConfigDict(extra="forbid")

    duration: Range = Field(default_factory=Range, description="seconds (num_frames / fps)")
    num_frames: Range = Field(default_factory=Range)
    height: Range = Field(default_factory=Range)
    width: Range = Field(default_factory=Range)
    resolution: Range = Field(default_factory=Range, description="height * width")
    fps: Range = Field(default_factory=Range)
    aspect_ratio: Range = Field(default_factory=Range, description="height / width")
    scores: dict[str, Range] = Field(default_factory=dict, description="e.g. {'motion': {'min': 0.5}}")


def _rule(name: str, value: float, rng: Range, unit: str = "") -> str | None:
    if rng.min is not None and value < rng.min:
        return f"{name} < {rng.min:g}{unit} ({value:.4g})"
    if rng.max is not None and value > rng.max:
        return f"{name} > {rng.max:g}{unit} ({value:.4g})"
    return None


def why_dropped(row: dict[str, Any], cfg: FilterConfig) -> str | None:
    """The first rule ``row`` breaks, or ``None`` when it passes."""
    fps = row.get("fps")
    video = (
        fps is not None and not (isinstance(fps, float) and math.isnan(fps)) and int(row["num_frames"]) > 1
    )
    checks: list[tuple[str, float, Range, str]] = []
    if video:
        checks.append(("duration", int(row["num_frames"]) / float(fps), cfg.duration, " s"))
    checks += [
        (k, float(row[k]), getattr(cfg, k), "") for k in ("num_frames", "height", "width", "resolution")
    ]
    if video:
        checks.append(("fps", float(fps), cfg.fps, ""))
    checks.append(("aspect_ratio", float(row["aspect_ratio"]), cfg.aspect_ratio, ""))
    checks += [(k, float(row[k]), rng, "") for k, rng in cfg.scores.items()]
    for name, value, rng, unit in checks:
        if math.isnan(value):
            return f"{name} is missing"
        rule = _rule(name, value, rng, unit)
        if rule:
            return rule
    return None


def filter_table(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: FilterConfig | dict[str, Any],
    overwrite: bool = False,
) -> StageReport:
    """Keep the rows of ``input`` that pass ``config``; write them to ``output`` and the drops to the report."""
    t0 = time.perf_counter()
    cfg = config if isinstance(config, FilterConfig) else FilterConfig.model_validate(config)
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src, ("path", "num_frames", "height", "width", "resolution", "aspect_ratio"))
    missing = [k for k in cfg.scores if k not in df.columns]
    if missing:
        raise ValueError(
            f"filter config names score columns {missing} that {src} lacks (has {list(df.columns)}); run `score`"
        )
    rules = [why_dropped(r, cfg) for r in df.to_dict("records")]
    dropped = [(str(p), r) for p, r in zip(df["path"], rules, strict=True) if r]
    table: pd.DataFrame = kept_rows(df, rules)
    return write_stage(
        "filter", src, out, table, len(df), dropped, t0, overwrite, {"config": cfg.model_dump()}
    )
