"""Dataset report of a curated table: histograms (PNG) and how many clips each bucket of a bucket_config gets.

``dataset_report(table, out_dir, bucket_config=None, frame_interval=1)`` writes ``hist_<column>.png`` for
duration, resolution, aspect ratio, fps and every score column present, plus ``report.json`` with the row count,
per-column summaries and (with a bucket_config) clips per ``(resolution, num_frames, ratio)`` bucket and the
reasons rows fit none, from :meth:`opensora_core.data.bucket.Bucket.assign` with keep_prob draws of seed 0.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from opensora_core.data.curate.common import read_stage_input
from opensora_core.data.prepare import SCORE_COLUMNS


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
    if df.empty:
        return {"buckets": {}, "no_bucket": {}}
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


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(curation: dict[str, Any], max_dropped: int = 500) -> str:
    """A self-contained HTML page of a curation report (:func:`opensora_core.data.curate.merge.merge_shards`):
    counts per stage, drops per rule, clips per bucket, the histograms inlined as ``data:image/png`` URIs and
    the first ``max_dropped`` dropped rows."""
    import base64

    dataset = curation["dataset"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Dataset report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{margin:4px}</style></head><body>",
        f"<h1>Dataset report</h1><p>{html.escape(str(curation['table']))}: <b>{curation['rows']}</b> clips from "
        f"{curation['num_shards']} shard(s)</p>",
        "<h2>Stages</h2>",
        _table(
            ["stage", "rows in", "rows out", "dropped", "shards (cached)", "seconds", "drops per rule"],
            [
                [
                    s["stage"],
                    s["num_in"],
                    s["num_out"],
                    s["num_in"] - s["num_out"],
                    f"{s['shards']} ({s['cached_shards']})",
                    f"{s['seconds']:.1f}",
                    "; ".join(f"{k}: {v}" for k, v in s["drops"].items()),
                ]
                for s in curation["stages"]
            ],
        ),  # fmt: skip
    ]
    buckets = dataset.get("bucket_config")
    if buckets is not None:
        parts.append("<h2>Clips per bucket</h2>")
        parts.append(
            _table(
                ["bucket (resolution/frames/ratio)", "clips"], [[k, v] for k, v in buckets["buckets"].items()]
            )
        )
        if buckets["no_bucket"]:
            parts.append(
                _table(["fits no bucket because", "clips"], [[k, v] for k, v in buckets["no_bucket"].items()])
            )
    parts.append("<h2>Histograms</h2>")
    for plot in dataset["plots"]:
        with open(plot, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        parts.append(f"<img alt='{html.escape(os.path.basename(plot))}' src='data:image/png;base64,{data}'>")
    dropped = curation["dropped"]
    parts.append(f"<h2>Dropped rows ({len(dropped)})</h2>")
    parts.append(_table(["path", "stage", "rule"], dropped[:max_dropped]))
    if len(dropped) > max_dropped:
        parts.append(f"<p>... {len(dropped) - max_dropped} more in curation.json</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
