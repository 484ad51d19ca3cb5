"""What every curation stage shares: reading its input table, writing its table + report, sampling frames.

A stage writing ``OUT.csv`` also writes ``OUT.report.json`` (:class:`StageReport`: counts, every dropped row
with the rule that dropped it). An existing ``OUT`` is replaced only when the previous report says the same
stage wrote it from the same input (a re-run) or with ``overwrite``; the old table is kept as a backup
(:func:`opensora_core.data.prepare.write_table_with_backup`).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from opensora_core.data.prepare import (
    TABLE_EXTENSIONS,
    OutputExistsError,
    _exists,
    _join,
    _progress,
    _read_bytes,
    _read_table,
    _write_bytes,
    fetch_to_local,
    is_uri,
    write_table_with_backup,
)


@dataclass
class StageReport:
    """Outcome of one stage: rows in and out, and ``dropped`` as ``[path, rule]`` pairs (nothing silently)."""

    stage: str
    input: str
    output: str
    num_in: int
    num_out: int
    dropped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    backup: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drop_counts(self) -> dict[str, int]:
        """Dropped rows per rule (the rule up to its first ``:``)."""
        return dict(Counter(rule.split(":", 1)[0] for _, rule in self.dropped))

    def __str__(self) -> str:
        text = f"{self.stage}: {self.num_in} -> {self.num_out} rows -> {self.output} ({self.seconds:.1f}s)"
        if self.dropped:
            text += "; dropped " + ", ".join(f"{k}: {v}" for k, v in sorted(self.drop_counts.items()))
        if self.backup:
            text += f"; previous table kept as {self.backup}"
        return text


def report_path(output: str) -> str:
    """``meta.csv`` -> ``meta.report.json`` (same folder)."""
    return _stem(output) + ".report.json"


def _stem(output: str) -> str:
    for ext in TABLE_EXTENSIONS:
        if output.lower().endswith(ext):
            return output[: -len(ext)]
    return output


def read_stage_input(path: str | os.PathLike[str], required: tuple[str, ...] = ("path",)) -> pd.DataFrame:
    """Read a stage's input table; relative ``path`` entries are resolved against the table's folder."""
    src = os.fspath(path)
    if not src.lower().endswith(TABLE_EXTENSIONS):
        raise ValueError(f"input {src} must be a .csv, .parquet or .pq table (run `probe` on a folder first)")
    if not is_uri(src) and not os.path.exists(src):
        raise FileNotFoundError(f"input table {src} does not exist")
    df = _read_table(src)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"input table {src} lacks columns {missing} (has {list(df.columns)})")
    base = src.rsplit("/", 1)[0] if is_uri(src) else os.path.dirname(os.path.abspath(src))
    df["path"] = [_join(base, str(p)) for p in df["path"]]
    return df.reset_index(drop=True)


def _check_output(stage: str, src: str, out: str, overwrite: bool) -> None:
    if overwrite or not _exists(out):
        return
    previous: dict[str, Any] = {}
    rpath = report_path(out)
    if _exists(rpath):
        try:
            previous = json.loads(_read_bytes(rpath))
        except (ValueError, OSError):
            previous = {}
    if previous.get("stage") != stage or previous.get("input") != src:
        raise OutputExistsError(
            f"output {out} exists and was not written by `{stage}` from {src} (its report {rpath} says "
            f"{previous.get('stage')!r} from {previous.get('input')!r}). Pass --overwrite to replace it (a backup "
            "is kept) or choose another --output."
        )


def write_stage(
    stage: str,
    src: str,
    out: str,
    table: pd.DataFrame,
    num_in: int,
    dropped: list[tuple[str, str]],
    t0: float,
    overwrite: bool,
    details: dict[str, Any] | None = None,
) -> StageReport:
    """Write ``table`` to ``out`` and its report; refuse to replace another stage's or input's table."""
    if not out.lower().endswith(TABLE_EXTENSIONS):
        raise ValueError(f"--output {out} must end in .csv, .parquet or .pq")
    out = out if is_uri(out) else os.path.abspath(out)
    _check_output(stage, src, out, overwrite)
    backup = write_table_with_backup(table.reset_index(drop=True), out)
    report = StageReport(
        stage, src, out, num_in, len(table), dropped, time.perf_counter() - t0, backup, details or {}
    )
    _write_bytes(report_path(out), json.dumps(asdict(report), indent=2, default=str).encode())
    return report


def sample_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``[0, num_frames)`` (centres of equal segments)."""
    count = max(1, min(count, num_frames))
    return ((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)


def sample_frames(path: str, indices: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """Decode ``indices`` of a video (local or ``s3://``) -> uint8 ``[N, H, W, 3]``, shrunk so the longer side is
    at most ``max_side`` (area interpolation)."""
    from opensora_core.data.video_io import read_frames

    with fetch_to_local(path) as local:
        frames = read_frames(local, indices, decode_threads=1)
    return frames if max_side is None else shrink_frames(frames, max_side)


def shrink_frames(frames: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` shrunk so the longer side is at most ``max_side`` (area interpolation; smaller
    frames are returned as they are)."""
    if max(frames.shape[1:3]) <= max_side:
        return frames
    import cv2

    h, w = frames.shape[1:3]
    scale = max_side / max(h, w)
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def map_items(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    workers: int = 1,
    desc: str = "",
    unit: str = "file",
    progress: bool = True,
) -> list[Any]:
    """``[fn(*item) for item in items]`` (same order) with ``workers`` processes and a progress bar on an
    interactive terminal."""
    bar = _progress(len(items), progress, desc, unit)
    results: list[Any] = [None] * len(items)
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(fn, *item): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    else:
        for i, item in enumerate(items):
            results[i] = fn(*item)
            bar.update(1)
    bar.close()
    return results


def kept_rows(df: pd.DataFrame, rules: Sequence[str | None]) -> pd.DataFrame:
    """The rows of ``df`` whose rule is ``None`` (columns kept also when none is left)."""
    return df.iloc[[i for i, rule in enumerate(rules) if rule is None]]


def dropped_of(paths: list[str], rules: list[str | None]) -> list[tuple[str, str]]:
    """``[(path, rule)]`` for the rows whose rule is set."""
    return [(p, r) for p, r in zip(paths, rules, strict=True) if r]
