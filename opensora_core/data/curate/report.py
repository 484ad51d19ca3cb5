"""Dataset report of a curated table: histograms (PNG) and how many clips each bucket of a bucket_config gets.

``dataset_report(table, out_dir, bucket_config=None, frame_interval=1)`` writes ``hist_<column>.png`` for
duration, resolution, aspect ratio, fps and every score column present, plus ``report.json`` with the row count,
per-column summaries and (with a bucket_config) clips per ``(resolution, num_frames, ratio)`` bucket and the
reasons rows fit none, from :meth:`opensora_core.data.bucket.Bucket.assign` with keep_prob draws of seed 0.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from opensora_core.data.curate.common import read_stage_input

SCORE_COLUMNS = ("motion", "aesthetic")


def _columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    if {"num_frames", "fps"} <= set(df.columns):
        cols["duration"] = (df["num_frames"] / df["fps"]).to_numpy(dtype=float)
    for name in ("resolution", "aspect_ratio", "fps", *SCORE_COLUMNS):
        if name in df.columns:
            cols[name] = df[name].to_numpy(dtype=float)
    return {k: v[np.isfinite(v)] for k, v in cols.items()}


def bucket_counts(df: pd.DataFrame, bucket_config: dict[str, Any], frame_interval: int = 1) -> dict[str, Any]:
    """``{"buckets": {"240p/16/0.56": n, ...}, "no_bucket": {reason: n}}`` for the rows of ``df``."""
    from opensora_core.data.bucket import Bucket

    bucket = Bucket(bucket_config)
    got = bucket.assign(
        df["num_frames"].to_numpy(),
        df["height"].to_numpy(),
        df["width"].to_numpy(),
        frame_interval,
        np.arange(len(df), dtype=np.uint64) * np.uint64(bucket.num_bucket),
    )
    counts: Counter[str] = Counter()
    for r, t, a in zip(
        got.res_index[got.assigned], got.num_frames[got.assigned], got.ar_index[got.assigned], strict=True
    ):
        res = bucket.resolutions[int(r)]
        ratio = bucket._ratio_keys[res][int(a)]  # the index Bucket.assign documents
        counts[f"{res}/{int(t)}/{ratio}"] += 1
    reasons = {k: v for k, v in got.reason_counts().items() if v and k != "assigned"}
    return {"buckets": dict(sorted(counts.items())), "no_bucket": reasons}


def dataset_report(
    table: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    bucket_config: dict[str, Any] | None = None,
    frame_interval: int = 1,
) -> dict[str, Any]:
    """Write the histograms and ``report.json`` of ``table`` into ``out_dir``; returns the report dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = read_stage_input(table)
    os.makedirs(out_dir, exist_ok=True)
    report: dict[str, Any] = {"table": os.fspath(table), "rows": len(df), "columns": {}, "plots": []}
    for name, values in _columns(df).items():
        if values.size:
            report["columns"][name] = {
                "min": float(values.min()),
                "median": float(np.median(values)),
                "max": float(values.max()),
            }
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(values, bins=min(30, max(5, values.size)))
        ax.set_xlabel(name)
        ax.set_ylabel("clips")
        ax.set_title(f"{name} ({values.size} clips)")
        fig.tight_layout()
        path = os.path.join(out_dir, f"hist_{name}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        report["plots"].append(path)
    if bucket_config is not None:
        report["bucket_config"] = bucket_counts(df, bucket_config, frame_interval)
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report
