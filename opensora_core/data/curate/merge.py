"""Merge of the shards of a curation run into one training table and one report; the local sharded run.

:func:`merge_shards` concatenates the shards' last tables (``ROOT/merged.csv``), runs ``dedup`` on the whole
(duplicates in different shards are found there; rows are in source order, so the copy kept is the one from
the first source path, as in an unsharded run; ``ROOT/train.csv``), with a ``holdout`` config splits that into
``ROOT/train.csv`` and the held-out ``ROOT/eval.csv`` (the deduplicated table is then ``ROOT/deduped.csv``), and
writes the dataset report of the training table to ``ROOT/report/``: ``curation.json`` (per stage: rows in/out summed over shards, shards served from the cache,
drops per rule; every dropped row with its stage and rule; the table's SHA-256), the histograms and bucket table of
:func:`.report.dataset_report`, and ``report.html`` (:func:`.report.render_html`, PNGs inlined).
:func:`run_curation` is plan -> shards in worker processes -> merge, the local twin of the KFP pipeline
(``workflows/curate.py``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from typing import Any

import pandas as pd

from opensora_core.data.curate.common import write_stage
from opensora_core.data.curate.shards import (
    CurateConfig,
    _sub,
    as_config,
    curate_shard,
    plan_shards,
)
from opensora_core.data.prepare import _exists, _progress, _read_bytes, _read_table, _write_bytes, is_uri

logger = logging.getLogger(__name__)


def rule_kind(rule: str) -> str:
    """A drop rule without its specifics: ``motion < 0.2 (0.03)`` -> ``motion < 0.2``, ``exact duplicate of X``
    -> ``exact duplicate``, ``probe failed: ...`` -> ``probe failed``."""
    return rule.split(":", 1)[0].split(" (", 1)[0].split(" of ", 1)[0].strip()


def _stage_rows(reports: Sequence[tuple[dict[str, Any], bool]]) -> list[dict[str, Any]]:
    """Per-stage totals of ``[(stage report, served from cache)]``, in first-seen stage order."""
    stages: dict[str, dict[str, Any]] = {}
    for rep, cached in reports:
        row = stages.setdefault(
            rep["stage"],
            {"stage": rep["stage"], "num_in": 0, "num_out": 0, "seconds": 0.0, "shards": 0, "cached_shards": 0,
             "drops": Counter()},
        )  # fmt: skip
        row["num_in"] += rep["num_in"]
        row["num_out"] += rep["num_out"]
        row["seconds"] += 0.0 if cached else rep["seconds"]
        row["shards"] += 1
        row["cached_shards"] += int(cached)
        row["drops"].update(rule_kind(rule) for _, rule in rep["dropped"])
    return [{**row, "drops": dict(row["drops"].most_common())} for row in stages.values()]


def _source_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by (source video, clip path): the order an unsharded run has, so dedup keeps the same row of a
    duplicate group whatever shards the copies landed in."""
    sources = df["source_path"] if "source_path" in df else pd.Series([""] * len(df), index=df.index)
    key = [s if isinstance(s, str) and s else str(p) for s, p in zip(sources, df["path"], strict=True)]
    return df.assign(_source=key).sort_values(["_source", "path"], kind="stable").drop(columns="_source")


def merge_shards(
    results: Sequence[str],
    root: str | os.PathLike[str],
    config: CurateConfig | dict[str, Any] | None = None,
    report_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Merge the shards whose ``result.json`` are ``results`` into ``ROOT/train.csv`` + the report (see the
    module docstring); returns the curation report dict (``report["table"]`` is the training table).

    ``report_dir`` (local; default ``ROOT/report``, for an ``s3://`` root a temp folder whose files are also
    copied to ``ROOT/report/``) receives the PNGs, ``curation.json`` and ``report.html``."""
    from opensora_core.data.curate import dedup, holdout, report

    t0 = time.perf_counter()
    cfg = as_config(config)
    root = os.fspath(root) if is_uri(os.fspath(root)) else os.path.abspath(root)
    if not results:
        raise ValueError(f"no shard results to merge for {root}: the input listed no files (see plan.json)")
    shards = [json.loads(_read_bytes(r)) for r in results]
    reports: list[tuple[dict[str, Any], bool]] = []
    plan_path = _sub(root, "shards", "plan.json")
    if _exists(plan_path):
        plan = json.loads(_read_bytes(plan_path))
        listed = sum(len(_read_table(p)) for p in plan["listings"])
        listing = {"stage": "list", "num_in": listed + len(plan["rejected"]), "num_out": listed,
                   "seconds": 0.0, "dropped": plan["rejected"]}  # fmt: skip
        reports.append((listing, False))
    reports += [(rep, rep["stage"] in shard["cached"]) for shard in shards for rep in shard["reports"]]
    tables = [_read_table(shard["table"]) for shard in shards]
    merged = _source_order(pd.concat(tables, ignore_index=True))
    merged_path = _sub(root, "merged.csv")
    write_stage("merge", plan_path, merged_path, merged, len(merged), [], t0, overwrite=False)
    final, eval_table = merged_path, None
    if cfg.dedup is not None and len(merged):
        final = _sub(root, "deduped.csv" if cfg.holdout is not None else "train.csv")
        rep = dedup.dedup(merged_path, final, cfg.dedup.near, cfg.dedup.max_distance)
        reports.append((json.loads(json.dumps(asdict(rep), default=str)), False))
    if cfg.holdout is not None and len(merged):
        h = cfg.holdout
        split = holdout.holdout(
            final, _sub(root, "train.csv"), h.eval_fraction, _sub(root, "eval.csv"), h.salt, h.by_source
        )
        reports.append((json.loads(json.dumps(asdict(split), default=str)), False))
        final, eval_table = split.output, split.details["eval_output"]
    out_dir = os.fspath(report_dir) if report_dir else None
    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="opensora-report-") if is_uri(root) else _sub(root, "report")
    dataset = report.dataset_report(final, out_dir, cfg.bucket_config, cfg.frame_interval)
    curation = {
        "root": root,
        "table": final,
        "eval_table": eval_table,
        "sha256": dedup.file_sha256(final),
        "rows": dataset["rows"],
        "num_shards": len(shards),
        "stages": _stage_rows(reports),
        "dropped": [[p, rep["stage"], rule] for rep, _ in reports for p, rule in rep["dropped"]],
        "dataset": dataset,
        "seconds": time.perf_counter() - t0,
    }
    curation["html"] = os.path.join(out_dir, "report.html")
    with open(os.path.join(out_dir, "curation.json"), "w", encoding="utf-8") as f:
        json.dump(curation, f, indent=2, default=str)
    with open(curation["html"], "w", encoding="utf-8") as f:
        f.write(report.render_html(curation))
    if is_uri(root):
        for name in sorted(os.listdir(out_dir)):
            with open(os.path.join(out_dir, name), "rb") as f:
                _write_bytes(_sub(root, "report", name), f.read())
    logger.info("merged %d shards -> %s (%d rows)", len(shards), final, curation["rows"])
    return curation


def run_curation(
    input: str | os.PathLike[str],
    root: str | os.PathLike[str],
    config: CurateConfig | dict[str, Any] | None = None,
    num_shards: int = 1,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Plan ``input`` into ``num_shards`` shards under ``root``, curate them with ``workers`` processes, merge;
    returns :func:`merge_shards`'s report. A re-run over the same root reuses every unchanged shard stage."""
    cfg = as_config(config)
    listings = plan_shards(input, root, num_shards)
    bar = _progress(len(listings), progress, "curating shards", "shard")
    results: dict[str, str] = {}
    if workers <= 1 or len(listings) < 2:
        for listing in listings:
            results[listing] = curate_shard(listing, cfg)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(curate_shard, listing, cfg): listing for listing in listings}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return merge_shards([results[listing] for listing in listings], root, cfg)
