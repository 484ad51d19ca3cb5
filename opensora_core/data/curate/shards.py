"""Sharded curation: one input listing -> N shards -> probe / split-scenes / score / filter / caption per shard.

The same functions run as one KFP pod per shard (``components/curate_shard``) and as worker processes locally
(:func:`opensora_core.data.curate.merge.run_curation`). Layout under a dataset root ``ROOT`` (local or ``s3://``):

``ROOT/shards/plan.json``             the plan: number of shards, listing files, inputs rejected while listing
``ROOT/shards/listing-00003.csv``     shard 3's files: ``path, text, file_size, file_mtime_ns``
``ROOT/shards/00003/meta.csv`` ...    the shard's stage tables (+ ``*.report.json``) and ``clips/``
``ROOT/shards/00003/cache.json``      stage -> the input key its current output was made from
``ROOT/shards/00003/result.json``     the shard's last table and every stage report (what the merge reads)

A file goes to shard ``sha1(path) mod num_shards``, so adding or changing files only touches their shards.
Caching: a file's content key is ``(path, size, mtime_ns)`` (object storage: size and last-modified time); the
probe stage's key is the SHA-256 of the shard's listing (those keys, captions) and its settings, and each
later stage's key hashes the previous key with the stage's own settings. A stage whose ``cache.json`` entry
matches (and whose table and report exist) is skipped, so a re-run over the same root only processes the
shards whose files changed, from the first stage whose input or settings changed. Changing ``num_shards``
re-assigns files and so misses every cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from opensora_core.data.curate.common import StageReport, report_path
from opensora_core.data.curate.filter import FilterConfig
from opensora_core.data.curate.scenes import SceneSplitConfig
from opensora_core.data.prepare import (
    TABLE_EXTENSIONS,
    OutputExistsError,
    _collect_from_folder,
    _collect_from_table,
    _exists,
    _read_bytes,
    _read_table,
    _stat,
    _write_bytes,
    _write_table,
    is_uri,
    prepare,
    quarantine_path,
)

logger = logging.getLogger(__name__)


class ScoreSettings(BaseModel):
    """``score`` stage settings (see :func:`opensora_core.data.curate.scores.score`)."""

    model_config = ConfigDict(extra="forbid")

    motion: bool = True
    aesthetic_clip: str | None = None
    aesthetic_head: str | None = None
    text_match_clip: str | None = Field(None, description="CLIP model for the text_match column")
    text: bool = Field(False, description="the text_area column: burned-in text (rapidocr)")
    text_size: int = Field(640, ge=32, description="longer frame side (px) the text_area score analyses")
    frames: int = Field(3, ge=1)


class CaptionSettings(BaseModel):
    """``caption`` stage settings (see :func:`opensora_core.data.curate.captions.caption`)."""

    model_config = ConfigDict(extra="forbid")

    captions: str | None = Field(None, description="a path,text captions table (absolute path or s3://)")
    min_words: int = Field(1, ge=1)
    max_words: int = Field(200, ge=1)
    model: str | None = Field(None, description="image-text-to-text model generating missing captions")
    prompt: str | None = None
    frames: int = Field(3, ge=1)
    max_new_tokens: int = Field(60, ge=1)
    batch_size: int = Field(8, ge=1)


class DedupSettings(BaseModel):
    """``dedup`` settings, run once on the merged table (duplicates across shards are found)."""

    model_config = ConfigDict(extra="forbid")

    near: bool = True
    max_distance: int = Field(6, ge=0, le=64)


class HoldoutSettings(BaseModel):
    """``holdout`` settings, run once on the merged, deduplicated table (see
    :func:`opensora_core.data.curate.holdout.holdout`)."""

    model_config = ConfigDict(extra="forbid")

    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    salt: str = ""
    by_source: bool = Field(False, description="hash source_path: all clips of one video on the same side")


class CurateConfig(BaseModel):
    """Which stages run and how (unknown keys are rejected); a ``None`` stage is skipped.

    ``bucket_config`` / ``frame_interval``: the report's clips-per-bucket table (``None``: no bucket table).
    """

    model_config = ConfigDict(extra="forbid")

    count_packets: bool = Field(True, description="probe: demux to verify frame counts")
    scenes: SceneSplitConfig | None = Field(default_factory=SceneSplitConfig)
    score: ScoreSettings | None = Field(default_factory=ScoreSettings)
    filter: FilterConfig | None = Field(default_factory=FilterConfig)
    caption: CaptionSettings | None = Field(default_factory=CaptionSettings)
    dedup: DedupSettings | None = Field(default_factory=DedupSettings)
    holdout: HoldoutSettings | None = Field(None, description="held-out table ROOT/eval.csv (None: no split)")
    bucket_config: dict[str, Any] | None = None
    frame_interval: int = Field(1, ge=1)


def as_config(config: CurateConfig | dict[str, Any] | None) -> CurateConfig:
    """A :class:`CurateConfig` from itself, a dict (validated) or ``None`` (defaults)."""
    if isinstance(config, CurateConfig):
        return config
    return CurateConfig.model_validate(config or {})


def _sub(root: str, *parts: str) -> str:
    if is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(os.path.abspath(root), *parts)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def shard_of(path: str, num_shards: int) -> int:
    """The shard of a file: ``sha1(path) mod num_shards`` (stable across runs and machines)."""
    return int(hashlib.sha1(path.encode()).hexdigest()[:12], 16) % num_shards


def plan_shards(input: str | os.PathLike[str], root: str | os.PathLike[str], num_shards: int) -> list[str]:
    """List ``input`` (a folder with sidecar ``.txt`` captions, or a ``path,text`` table) into ``num_shards``
    listings under ``ROOT/shards/``; returns the listing locations (empty shards are left out).

    Refuses a ``ROOT/shards/`` folder this function did not create (no ``plan.json``)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    src, root = os.fspath(input), os.fspath(root)
    if not is_uri(src) and not os.path.exists(src):
        raise FileNotFoundError(f"input {src} does not exist")
    src = src if is_uri(src) else os.path.abspath(src)
    plan_path = _sub(root, "shards", "plan.json")
    if not is_uri(root) and os.path.isdir(_sub(root, "shards")) and not os.path.exists(plan_path):
        raise OutputExistsError(
            f"{_sub(root, 'shards')} exists but has no plan.json (not a curation root); choose another root"
        )
    rejected: list[tuple[str, str]] = []
    if src.lower().endswith(TABLE_EXTENSIONS):
        items = _collect_from_table(src)
    else:
        items, rejected, _ = _collect_from_folder(src, None, skip=set())
    rows: list[list[dict[str, Any]]] = [[] for _ in range(num_shards)]
    for item in items:
        size, mtime = _stat(item.path)
        rows[shard_of(item.path, num_shards)].append(
            {"path": item.path, "text": item.text or "", "file_size": size, "file_mtime_ns": mtime}
        )
    listings = []
    for k, shard in enumerate(rows):
        if shard:
            listing = _sub(root, "shards", f"listing-{k:05d}.csv")
            _write_table(pd.DataFrame(shard).sort_values("path"), listing)
            listings.append(listing)
    plan = {"input": src, "num_shards": num_shards, "listings": listings, "rejected": rejected}
    _write_bytes(plan_path, json.dumps(plan, indent=2).encode())
    logger.info("planned %d files into %d shards under %s", len(items), len(listings), root)
    return listings


def shard_dir_of(listing: str) -> str:
    """``ROOT/shards/listing-00003.csv`` -> ``ROOT/shards/00003``."""
    folder, name = listing.rsplit("/", 1) if is_uri(listing) else os.path.split(listing)
    if not (name.startswith("listing-") and name.endswith(".csv")):
        raise ValueError(f"{listing} is not a shard listing (ROOT/shards/listing-NNNNN.csv from plan_shards)")
    return _sub(folder, name[len("listing-") : -len(".csv")])


def _probe(listing: str, out: str, cfg: CurateConfig) -> StageReport:
    t0 = time.perf_counter()
    try:
        rep = prepare(
            listing, out, allow_missing_captions=True, count_packets=cfg.count_packets, progress=False
        )
    except OutputExistsError:  # files left the shard: the listing is the truth (the old table is backed up)
        rep = prepare(
            listing,
            out,
            allow_missing_captions=True,
            count_packets=cfg.count_packets,
            progress=False,
            overwrite=True,
        )
    quarantined = _read_table(quarantine_path(rep.output))
    dropped = list(zip(quarantined["path"].astype(str), quarantined["reason"].astype(str), strict=True))
    report = StageReport(
        "probe", listing, rep.output, rep.num_kept + rep.num_quarantined, rep.num_kept, dropped,
        time.perf_counter() - t0, rep.backup, {"probed": rep.num_probed, "reused": rep.num_reused},
    )  # fmt: skip
    _write_bytes(report_path(rep.output), json.dumps(asdict(report), indent=2, default=str).encode())
    return report


def _stages(cfg: CurateConfig, shard: str) -> list[tuple[str, str, dict[str, Any], Any]]:
    """``[(stage, output, settings, run(input, output))]`` in order, for the stages ``cfg`` enables (no progress
    bars: shards run side by side; the shard's log line reports it)."""
    from opensora_core.data.curate import captions, filter, scenes, scores

    out: list[tuple[str, str, dict[str, Any], Any]] = []
    if cfg.scenes is not None:
        sc = cfg.scenes
        out.append(
            ("split-scenes", "clips.csv", sc.model_dump(),
             lambda i, o: scenes.split_scenes(i, o, _sub(shard, "clips"), sc, progress=False)),
        )  # fmt: skip
    if cfg.score is not None:
        s = cfg.score
        out.append(
            ("score", "scored.csv", s.model_dump(),
             lambda i, o: scores.score(i, o, s.motion, s.aesthetic_clip, s.aesthetic_head, s.frames, progress=False,
                                       text_match_clip=s.text_match_clip, text=s.text, text_size=s.text_size)),
        )  # fmt: skip
    if cfg.filter is not None:
        f = cfg.filter
        out.append(("filter", "kept.csv", f.model_dump(), lambda i, o: filter.filter_table(i, o, f)))
    if cfg.caption is not None:
        c = cfg.caption
        out.append(
            ("caption", "captioned.csv", c.model_dump(),
             lambda i, o: captions.caption(
                 i, o, c.captions, c.min_words, c.max_words, model=c.model, prompt=c.prompt,
                 num_frames=c.frames, max_new_tokens=c.max_new_tokens, batch_size=c.batch_size, progress=False)),
        )  # fmt: skip
    return out


def _load_report(output: str) -> dict[str, Any]:
    return json.loads(_read_bytes(report_path(output)))


def curate_shard(listing: str, config: CurateConfig | dict[str, Any] | None = None) -> str:
    """Run probe and the enabled per-shard stages on one listing (skipping cached stages, see the module
    docstring); writes and returns ``ROOT/shards/NNNNN/result.json``."""
    cfg = as_config(config)
    shard = shard_dir_of(listing)
    cache_path = _sub(shard, "cache.json")
    cache: dict[str, str] = json.loads(_read_bytes(cache_path)) if _exists(cache_path) else {}
    key = _key(_read_bytes(listing).decode(), cfg.count_packets)
    current, reports, cached = _sub(shard, "meta.csv"), [], []
    if cache.get("probe") == key and _exists(current) and _exists(report_path(current)):
        reports.append(_load_report(current))
        cached.append("probe")
    else:
        reports.append(asdict(_probe(listing, current, cfg)))
        cache["probe"] = key
    for stage, name, settings, run in _stages(cfg, shard):
        key = _key(key, stage, settings)
        output = _sub(shard, name)
        if cache.get(stage) == key and _exists(output) and _exists(report_path(output)):
            reports.append(_load_report(output))
            cached.append(stage)
        else:
            cache.pop(stage, None)  # a failed stage must not leave a stale entry behind
            _write_bytes(cache_path, json.dumps(cache, indent=2).encode())
            reports.append(asdict(run(current, output)))
            cache[stage] = key
        current = output
    _write_bytes(cache_path, json.dumps(cache, indent=2).encode())
    result = {"listing": listing, "table": current, "reports": reports, "cached": cached}
    result_path = _sub(shard, "result.json")
    _write_bytes(result_path, json.dumps(result, indent=2, default=str).encode())
    summary = ", ".join(f"{r['stage']} {r['num_in']}->{r['num_out']}" for r in reports)
    logger.info("shard %s: %s (cached: %s)", shard, summary, ", ".join(cached) or "none")
    return result_path
