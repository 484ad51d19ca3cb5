"""Training logs and tracking glue: structured log lines, run tags, the rank-0 tracker.

Log lines are ``key=value`` pairs (``step=12 epoch=0 loss=0.98312 grad_norm=0.5121 lr=1.000e-03
samples/s=7.95 tokens/s=2035.2 step_time=1.006s mfu=0.0123 bad_steps=0 eta=0:00:08``), easy to grep and parse
(:func:`parse_log_line`). Tracking never decides anything in training: the tracker is buffered and every
call returns at once (see ``opensora_core.io.tracking``).
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opensora_core.config import RunConfig
from opensora_core.config.identity import config_hash, git_commit

logger = logging.getLogger(__name__)

# log-line key -> metric name sent to the tracker
METRIC_NAMES = {
    "loss": "loss",
    "grad_norm": "grad_norm",
    "lr": "lr",
    "samples/s": "samples_per_s",
    "tokens/s": "tokens_per_s",
    "step_time": "step_time_s",
    "mfu": "mfu",
    "bad_steps": "bad_steps_total",
    "epoch": "epoch",
}


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if key == "lr":
            return f"{value:.3e}"
        if key == "step_time":
            return f"{value:.3f}s"
        if key == "loss":
            return f"{value:.5f}"
        if key in ("mfu", "grad_norm"):
            return f"{value:.4f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def format_log_line(values: Mapping[str, Any]) -> str:
    """``key=value`` pairs in the given order (None values left out)."""
    return " ".join(f"{k}={_fmt(k, v)}" for k, v in values.items() if v is not None)


def parse_log_line(line: str) -> dict[str, str]:
    """Inverse of :func:`format_log_line` for the ``key=value`` tokens of a line."""
    out = {}
    for token in line.split():
        key, sep, value = token.partition("=")
        if sep:
            out[key] = value
    return out


def format_eta(seconds: float | None) -> str | None:
    """``H:MM:SS`` (None when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))


def run_tags(cfg: RunConfig, extra: Mapping[str, Any]) -> dict[str, str]:
    """Tags of a training run: git commit, config hash, dataset URI, model, plus ``extra``."""
    tags = {
        "config_hash": config_hash(cfg),
        "dataset_uri": (cfg.dataset.data_path if cfg.dataset is not None else None) or "",
        "model_type": cfg.model.type,
        "plugin": cfg.plugin,
    }
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    tags.update({k: str(v) for k, v in extra.items()})
    return tags


def start_tracker(
    cfg: RunConfig,
    run_id: str | None,
    config_file: Path | None,
    tags: Mapping[str, str],
    resumed: bool,
) -> Any:
    """The rank-0 tracker: params (flattened resolved config) and the config artifact on a new run, tags always.

    A resumed run continues MLflow run ``run_id`` and does not log params again (MLflow refuses changed
    values, and ``load`` differs on resume).
    """
    from opensora_core.io.tracking import build_tracker

    try:
        tracker = build_tracker(cfg.tracking.model_dump(), run_id=run_id)
    except Exception as e:  # noqa: BLE001 - training never depends on tracking
        logger.warning("tracking disabled: %s: %s", type(e).__name__, e)
        from opensora_core.io.tracking import Tracker

        return Tracker()
    if not resumed:
        tracker.log_params(cfg.to_dict())
        if config_file is not None:
            tracker.log_artifact(config_file)
    tracker.set_tags(dict(tags))
    return tracker
