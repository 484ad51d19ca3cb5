"""Build the metadata table of a video/image set: ``python -m opensora_core.data.prepare INPUT --output OUT.csv``.

INPUT is a folder of videos/images (local or ``s3://``; captions from same-name ``.txt`` files or from
``--captions captions.csv``) or an existing ``.csv``/``.parquet`` table with ``path,text``. Every file is probed
with PyAV stream metadata (no full decode: the header, a demux pass that counts packets without decoding them,
and the first frame decoded once) and written with Open-Sora's columns

    path, text, num_frames, fps, height, width, aspect_ratio (= H/W), resolution (= H*W), text_len

plus ``file_size`` and ``file_mtime_ns`` (the key for incremental re-runs). ``text_len`` is the number of
whitespace-separated words, or the number of token ids when a tokenizer is given (``--tokenizer`` loads a local
Hugging Face tokenizer folder). Images get ``num_frames = 1`` and an empty ``fps``.

Files that cannot be used go to ``OUT.quarantine.csv`` (next to OUT; ``meta.csv`` -> ``meta.quarantine.csv``)
with ``path,reason``: zero-byte, unreadable/corrupt, truncated (fewer packets than the header lists),
zero-frame, audio-only, undecodable first frame, unsupported extension, missing caption. In a folder input,
``.txt`` captions and ``.csv``/``.parquet`` tables are metadata, not samples, and are not listed. The run reports how many
rows were kept and quarantined; nothing is dropped silently.

Re-running is incremental: rows of an existing OUT whose path, size and mtime are unchanged are reused without
probing (captions and ``text_len`` are refreshed). An existing OUT is never replaced silently: a table that
prepare did not write (no ``file_size``/``file_mtime_ns``), an unreadable one, or one with rows whose files are
no longer in INPUT (a different or smaller input set) stops the run unless ``--overwrite`` is given, and a
replaced table is first copied to ``OUT.backup-<UTC time>.csv`` (same extension as OUT). ``s3://`` inputs and
outputs go through :mod:`opensora_core.io.storage`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from opensora_core.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_image_path, is_video_path
from opensora_core.io.storage.uri import is_remote as is_uri  # the one remote-location check

logger = logging.getLogger(__name__)

META_COLUMNS = [
    "path",
    "text",
    "num_frames",
    "fps",
    "height",
    "width",
    "aspect_ratio",
    "resolution",
    "text_len",
]
CACHE_COLUMNS = ["file_size", "file_mtime_ns"]
QUARANTINE_COLUMNS = ["path", "reason"]
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")
_PROBE_FIELDS = ("num_frames", "fps", "height", "width")


# ------------------------------------------------------------------------------------ storage helpers
_STORAGE_PID: int | None = None


def _storage() -> Any:
    """The storage module, with a client of this process: forked workers (probe pool, DataLoader) must not
    share the parent's pooled HTTP connections, so the first use in each process rebuilds the default client."""
    global _STORAGE_PID
    try:
        from opensora_core.io import storage
    except ImportError as exc:  # the storage layer is a separate module of the package
        raise RuntimeError(f"storage layer unavailable (opensora_core.io.storage): {exc}") from exc
    if os.getpid() != _STORAGE_PID:
        storage.configure(storage.default_storage().config)
        _STORAGE_PID = os.getpid()
    return storage


@contextlib.contextmanager
def fetch_to_local(uri: str) -> Iterator[str]:
    """Yield a local path holding the content of ``uri`` (a temp copy for ``s3://``, removed afterwards)."""
    if not is_uri(uri):
        yield uri
        return
    suffix = PurePosixPath(uri).suffix
    fd, tmp = tempfile.mkstemp(prefix="opensora-", suffix=suffix)
    os.close(fd)
    try:
        _storage().download_file(uri, tmp)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _stat(path: str) -> tuple[int, int]:
    """(size in bytes, mtime in ns) of a local file or object."""
    if is_uri(path):
        info = _storage().stat(path)
        mtime = info.last_modified.timestamp() if info.last_modified else 0.0
        return int(info.size), int(mtime * 1e9)
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def _list_files(folder: str) -> list[str]:
    if is_uri(folder):
        return _storage().list_uri(folder, recursive=True)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
    return sorted(out)


def _read_text(path: str) -> str:
    if is_uri(path):
        return _storage().read_bytes(path).decode("utf-8").strip()
    return Path(path).read_text(encoding="utf-8").strip()


def _join(base: str, rel: str) -> str:
    if is_uri(rel) or os.path.isabs(rel):
        return rel
    if is_uri(base):
        return base.rstrip("/") + "/" + rel
    return os.path.abspath(os.path.join(base, rel))


# ------------------------------------------------------------------------------------ tables
def quarantine_path(output: str) -> str:
    """``meta.csv`` / ``meta.parquet`` -> ``meta.quarantine.csv`` in the same folder."""
    stem = output
    for ext in TABLE_EXTENSIONS:
        if output.lower().endswith(ext):
            stem = output[: -len(ext)]
            break
    return stem + ".quarantine.csv"


# The curation score stage's columns (data.curate.scores); like num_frames / fps, an empty cell is NaN.
SCORE_COLUMNS = ("motion", "aesthetic", "text_match", "text_area")


def read_local_table(path: str) -> pd.DataFrame:
    """Read a local ``.csv`` (empty num_frames / fps / score cells become NaN, other empty cells stay "") or
    parquet."""
    if path.lower().endswith(".csv"):
        numeric = ("num_frames", "fps", *SCORE_COLUMNS)
        return pd.read_csv(path, keep_default_na=False, na_values={c: [""] for c in numeric})
    return pd.read_parquet(path)


def _write_table_local(df: pd.DataFrame, path: str) -> None:
    """Atomic write (temp file in the same folder + rename), csv or parquet by extension."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        if path.lower().endswith(".csv"):
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_table(path: str) -> pd.DataFrame:
    with fetch_to_local(path) as local:
        return read_local_table(local)


def _write_table(df: pd.DataFrame, path: str) -> None:
    if not is_uri(path):
        _write_table_local(df, path)
        return
    fd, tmp = tempfile.mkstemp(prefix="opensora-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        _write_table_local(df, tmp)
        _storage().upload_file(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _exists(path: str) -> bool:
    return _storage().exists(path) if is_uri(path) else os.path.exists(path)


def _read_bytes(path: str) -> bytes:
    return _storage().read_bytes(path) if is_uri(path) else Path(path).read_bytes()


def _write_bytes(path: str, data: bytes) -> None:
    if is_uri(path):
        _storage().write_bytes(path, data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Path(path).write_bytes(data)


def backup_path(output: str, when: datetime | None = None) -> str:
    """``meta.csv`` -> ``meta.backup-20250101T120000123456Z.csv`` (same folder and extension, UTC time)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    stem, ext = os.path.splitext(output)
    return f"{stem}.backup-{stamp}{ext}"


def write_table_with_backup(df: pd.DataFrame, path: str) -> str | None:
    """Write ``df`` to ``path`` (atomic); an existing ``path`` with other content is first copied to
    :func:`backup_path`. Returns the backup's location, or ``None`` when nothing was replaced."""
    old = _read_bytes(path) if _exists(path) else None
    fd, tmp = tempfile.mkstemp(prefix="opensora-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        _write_table_local(df, tmp)
        new = Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)
    if old == new:
        return None
    backup = None
    if old is not None:
        backup = backup_path(path)
        _write_bytes(backup, old)
    _write_table(df, path)
    return backup


class OutputExistsError(FileExistsError):
    """The output table exists and replacing it would lose rows; the message names the file and the fix."""


def check_existing_output(out: str, input_paths: set[str], source: str) -> pd.DataFrame | None:
    """Decide whether an existing ``out`` may be merged into: return its rows (the probe cache), ``None`` when
    ``out`` does not exist, or raise :class:`OutputExistsError` when a re-run would drop rows the user has:
    the table is unreadable, was not written by prepare (a hand-made table: no cache columns), or lists files
    that are not in ``input_paths`` (a different or smaller input set)."""
    if not _exists(out):
        return None
    stem, ext = os.path.splitext(os.path.basename(out))
    fix = (
        f"Pass --overwrite (overwrite=True) to replace it (the old table is kept as {stem}.backup-<UTC time>{ext}) "
        "or choose another --output."
    )
    try:
        old = _read_table(out)
    except Exception as exc:
        raise OutputExistsError(f"output {out} exists and cannot be read ({exc}). {fix}") from None
    if not set(META_COLUMNS + CACHE_COLUMNS) <= set(old.columns):
        raise OutputExistsError(
            f"output {out} exists and was not written by prepare (no {'/'.join(CACHE_COLUMNS)} columns; "
            f"columns: {list(old.columns)}); replacing it would lose its rows. {fix}"
        )
    gone = sorted(set(old["path"].astype(str)) - input_paths)
    if gone:
        raise OutputExistsError(
            f"output {out} exists and {len(gone)} of its {len(old)} rows are files not in {source} "
            f"(e.g. {gone[0]}): a different or smaller input set would shrink the table. {fix}"
        )
    return old


# ------------------------------------------------------------------------------------ probing
class ProbeFailure(Exception):
    """A file that goes to the quarantine list; the message is the reason."""


def probe_file(path: str, count_packets: bool = True) -> dict[str, Any]:
    """Probe one local media file -> ``{num_frames, fps, height, width}`` or raise :class:`ProbeFailure`."""
    if os.path.getsize(path) == 0:
        raise ProbeFailure("zero-byte file")
    if is_image_path(path):
        return _probe_image(path)
    return _probe_video(path, count_packets)


def _probe_image(path: str) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            width, height = img.size
            img.load()  # catches truncated pixel data that verify() lets through
    except Exception as exc:  # Pillow raises many types for broken files
        raise ProbeFailure(f"unreadable image: {exc}") from None
    return {"num_frames": 1, "fps": float("nan"), "height": int(height), "width": int(width)}


def _probe_video(path: str, count_packets: bool) -> dict[str, Any]:
    import av

    from opensora_core.data.video_io import DEFAULT_VIDEO_FPS

    try:
        container = av.open(path)
    except Exception as exc:  # FFmpeg errors, OSError, UnicodeDecodeError in metadata, ...
        raise ProbeFailure(f"unreadable (corrupt or truncated container): {exc}") from None
    with container:
        if not container.streams.video:
            if container.streams.audio:
                raise ProbeFailure("audio-only file (no video stream)")
            raise ProbeFailure("no video stream")
        stream = container.streams.video[0]
        header_frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        height, width = int(stream.codec_context.height), int(stream.codec_context.width)
        if height <= 0 or width <= 0:
            raise ProbeFailure(f"invalid frame size {height}x{width}")
        num_frames = header_frames
        if count_packets or header_frames <= 0:
            try:
                packets = sum(1 for p in container.demux(stream) if p.size)
            except Exception as exc:
                raise ProbeFailure(f"truncated or corrupt stream while demuxing: {exc}") from None
            if header_frames > 0 and packets < header_frames:
                raise ProbeFailure(f"truncated: header lists {header_frames} frames, file holds {packets}")
            num_frames = packets if header_frames <= 0 else header_frames
        if num_frames <= 0:
            raise ProbeFailure("zero frames")
        try:
            container.seek(0, stream=stream, backward=True, any_frame=False)
            first = next(iter(container.decode(stream)), None)
        except Exception as exc:
            raise ProbeFailure(f"first frame does not decode: {exc}") from None
        if first is None:
            raise ProbeFailure("zero decodable frames")
    return {
        "num_frames": int(num_frames),
        "fps": float(rate) if rate else DEFAULT_VIDEO_FPS,
        "height": height,
        "width": width,
    }


def _probe_task(
    path: str, cached: tuple[int, int, dict[str, Any]] | None, count_packets: bool
) -> dict[str, Any]:
    """Worker: stat, reuse the cached probe when size and mtime match, else probe (downloading s3 files)."""
    try:
        size, mtime = _stat(path)
    except Exception as exc:
        return {"path": path, "error": f"cannot stat: {exc}"}
    if size == 0:
        return {"path": path, "error": "zero-byte file", "file_size": 0, "file_mtime_ns": mtime}
    if cached is not None and cached[0] == size and cached[1] == mtime:
        return {"path": path, "reused": True, "file_size": size, "file_mtime_ns": mtime, **cached[2]}
    try:
        with fetch_to_local(path) as local:
            info = probe_file(local, count_packets=count_packets)
    except ProbeFailure as exc:
        return {"path": path, "error": str(exc), "file_size": size, "file_mtime_ns": mtime}
    except Exception as exc:  # a single bad file must not stop the run
        return {"path": path, "error": f"unreadable: {type(exc).__name__}: {exc}", "file_size": size}
    return {"path": path, "reused": False, "file_size": size, "file_mtime_ns": mtime, **info}


# ------------------------------------------------------------------------------------ inputs
@dataclass
class _Item:
    path: str
    text: str | None


def _collect_from_table(table: str) -> list[_Item]:
    df = _read_table(table)
    missing = [c for c in ("path", "text") if c not in df.columns]
    if missing:
        raise ValueError(f"input table {table} lacks columns {missing} (has {list(df.columns)})")
    base = os.path.dirname(table) if not is_uri(table) else table.rsplit("/", 1)[0]
    texts = df["text"].fillna("").astype(str).tolist()
    return [_Item(_join(base, str(p)), t) for p, t in zip(df["path"].astype(str), texts, strict=True)]


def _load_captions(captions: str, folder: str) -> dict[str, str]:
    df = _read_table(captions)
    if not {"path", "text"} <= set(df.columns):
        raise ValueError(f"captions table {captions} needs columns path,text (has {list(df.columns)})")
    out: dict[str, str] = {}
    for p, t in zip(df["path"].astype(str), df["text"].fillna("").astype(str), strict=True):
        out[_join(folder, p)] = t
        out.setdefault(os.path.basename(p), t)
    return out


def _collect_from_folder(
    folder: str, captions: str | None, skip: set[str]
) -> tuple[list[_Item], list[tuple[str, str]], int]:
    files = [f for f in _list_files(folder) if f not in skip]
    caption_map = _load_captions(captions, folder) if captions else {}
    txt = {os.path.splitext(f)[0]: f for f in files if f.lower().endswith(".txt")}
    items: list[_Item] = []
    rejected: list[tuple[str, str]] = []
    used_txt: set[str] = set()
    for f in files:
        lower = f.lower()
        if lower.endswith((".txt", *TABLE_EXTENSIONS)):
            continue  # captions and metadata tables (e.g. a meta.csv of an earlier run) are not samples
        if not (is_video_path(f) or is_image_path(f)):
            rejected.append(
                (
                    f,
                    f"unsupported extension (videos: {' '.join(VIDEO_EXTENSIONS)}; images: "
                    f"{' '.join(IMAGE_EXTENSIONS)})",
                )
            )
            continue
        text = caption_map.get(f, caption_map.get(os.path.basename(f)))
        stem = os.path.splitext(f)[0]
        if text is None and stem in txt:
            text = _read_text(txt[stem])
            used_txt.add(txt[stem])
        items.append(_Item(f, text))
    orphan_captions = len(set(txt.values()) - used_txt)
    return items, rejected, orphan_captions


# ------------------------------------------------------------------------------------ main API
@dataclass
class PrepareReport:
    """Outcome of :func:`prepare`."""

    output: str
    quarantine: str
    num_kept: int
    num_quarantined: int
    num_probed: int
    num_reused: int
    orphan_captions: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    backup: str | None = None

    def __str__(self) -> str:
        text = (
            f"kept {self.num_kept}, quarantined {self.num_quarantined} -> {self.output} "
            f"(probed {self.num_probed}, reused {self.num_reused}, {self.seconds:.1f}s)"
        )
        if self.num_quarantined:
            text += (
                f"; quarantine list: {self.quarantine} ("
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
                + ")"
            )
        if self.orphan_captions:
            text += f"; {self.orphan_captions} .txt caption files without a media file"
        if self.backup:
            text += f"; previous table kept as {self.backup}"
        return text


def word_count(text: str) -> int:
    """Default ``text_len``: number of whitespace-separated words (a proxy for T5 tokens)."""
    return len(text.split())


def load_tokenizer_len(name_or_path: str) -> Callable[[str], int]:
    """``text_len`` from a local Hugging Face tokenizer folder (number of input ids, special tokens included)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
    return lambda text: len(tok(text)["input_ids"])


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0].split(" (", 1)[0]


def prepare(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    workers: int = 1,
    captions: str | os.PathLike[str] | None = None,
    tokenizer: Callable[[str], int] | None = None,
    allow_missing_captions: bool = False,
    count_packets: bool = True,
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareReport:
    """Probe every file of ``input`` and write the metadata table ``output`` (+ ``*.quarantine.csv``).

    ``tokenizer`` maps a caption to its token count (default :func:`word_count`). ``allow_missing_captions``
    keeps media without a caption (empty text) instead of quarantining it. ``count_packets`` demuxes each
    video to verify the frame count (detects truncated files; turn off for a header-only probe).
    An existing ``output`` is merged into (unchanged files are not probed again) when every row's file is still
    in ``input``; otherwise :class:`OutputExistsError` is raised before anything is written, unless
    ``overwrite``. A replaced table is kept at :func:`backup_path` (``PrepareReport.backup``).
    """
    t0 = time.perf_counter()
    src, out = os.fspath(input), os.fspath(output)
    if not out.lower().endswith(TABLE_EXTENSIONS):
        raise ValueError(f"--output {out} must end in .csv, .parquet or .pq")
    qpath = quarantine_path(out)
    if not is_uri(src) and not os.path.exists(src):
        raise FileNotFoundError(f"input {src} does not exist")
    if not is_uri(src):
        src = os.path.abspath(src)
    if not is_uri(out):
        out, qpath = os.path.abspath(out), os.path.abspath(qpath)
    text_len = tokenizer or word_count

    rejected: list[tuple[str, str]] = []
    orphans = 0
    if src.lower().endswith(TABLE_EXTENSIONS):
        items = _collect_from_table(src)
    else:
        items, rejected, orphans = _collect_from_folder(
            src, os.fspath(captions) if captions else None, skip={out, qpath}
        )

    cache: dict[str, tuple[int, int, dict[str, Any]]] = {}
    input_paths = {i.path for i in items} | {p for p, _ in rejected}
    old = None
    if not overwrite:
        old = check_existing_output(out, input_paths, src)
    elif _exists(out):
        logger.warning("--overwrite: %s will be replaced (the old table is kept as a backup)", out)
    if old is not None:
        for rec in old.to_dict("records"):
            cache[str(rec["path"])] = (
                int(rec["file_size"]),
                int(rec["file_mtime_ns"]),
                {k: rec[k] for k in _PROBE_FIELDS},
            )

    quarantined: list[tuple[str, str]] = list(rejected)
    to_probe: list[_Item] = []
    for item in items:
        if item.text is None or (not item.text.strip() and not allow_missing_captions):
            if not allow_missing_captions:
                quarantined.append((item.path, "missing caption (no same-name .txt or captions entry)"))
                continue
            item.text = ""
        to_probe.append(item)

    results: dict[str, dict[str, Any]] = {}
    paths = list(dict.fromkeys(i.path for i in to_probe))
    bar = _progress(len(paths), progress)
    if workers <= 1 or len(paths) < 2:
        for p in paths:
            results[p] = _probe_task(p, cache.get(p), count_packets)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_probe_task, p, cache.get(p), count_packets): p for p in paths}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()

    rows = []
    for item in to_probe:
        res = results[item.path]
        if "error" in res:
            quarantined.append((item.path, res["error"]))
            continue
        h, w = int(res["height"]), int(res["width"])
        fps = res["fps"]
        rows.append(
            {
                "path": item.path,
                "text": item.text,
                "num_frames": int(res["num_frames"]),
                "fps": float(fps) if fps is not None and not _isnan(fps) else float("nan"),
                "height": h,
                "width": w,
                "aspect_ratio": h / w,
                "resolution": h * w,
                "text_len": int(text_len(item.text or "")),
                "file_size": int(res["file_size"]),
                "file_mtime_ns": int(res["file_mtime_ns"]),
            }
        )
    quarantined = list(dict.fromkeys(quarantined))
    table = pd.DataFrame(rows, columns=META_COLUMNS + CACHE_COLUMNS)
    backup = write_table_with_backup(table, out)
    _write_table(pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS), qpath)
    reasons: dict[str, int] = {}
    for _, reason in quarantined:
        reasons[_reason_kind(reason)] = reasons.get(_reason_kind(reason), 0) + 1
    reused = sum(1 for r in results.values() if r.get("reused"))
    report = PrepareReport(
        output=out,
        quarantine=qpath,
        num_kept=len(rows),
        num_quarantined=len(quarantined),
        num_probed=len(results) - reused,
        num_reused=reused,
        orphan_captions=orphans,
        seconds=time.perf_counter() - t0,
        reasons=reasons,
        backup=backup,
    )
    logger.info("%s", report)
    for path, reason in quarantined:
        logger.info("quarantined %s: %s", path, reason)
    return report


def _isnan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str = "probing", unit: str = "file") -> Any:
    """A tqdm bar on an interactive stderr (none in pods and CI logs), or a no-op."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not sys.stderr.isatty())


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 also when files were quarantined).

    ``probe ...`` (or no subcommand: today's invocation) probes; the curation stages (``split-scenes``,
    ``score``, ``filter``, ``caption``, ``dedup``, ``report``) go to :mod:`opensora_core.data.curate.cli`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    from opensora_core.data.curate.cli import STAGES

    if argv and argv[0] in STAGES:
        from opensora_core.data.curate.cli import main as stage_main

        return stage_main(argv)
    if argv and argv[0] == "probe":
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="python -m opensora_core.data.prepare",
        description="Probe videos/images and write an Open-Sora metadata table (+ a quarantine list).",
    )
    parser.add_argument(
        "input", help="folder of videos/images, or a .csv/.parquet with path,text (local or s3://)"
    )
    parser.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet (local or s3://)")
    parser.add_argument(
        "--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel probe processes"
    )
    parser.add_argument("--captions", help="captions table (path,text) for a folder input")
    parser.add_argument(
        "--tokenizer", help="local Hugging Face tokenizer folder for text_len (default: word count)"
    )
    parser.add_argument("--allow-missing-captions", action="store_true", help="keep media without a caption")
    parser.add_argument(
        "--header-only", action="store_true", help="skip the packet count (faster, misses truncation)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output that a merge would shrink or that prepare did not write "
        "(the old table is kept as OUT.backup-<time>.<ext>)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = _run_cli(args)
    except (OutputExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if logger.getEffectiveLevel() > logging.INFO:
        print(report)
    return 0


def _run_cli(args: argparse.Namespace) -> PrepareReport:
    return prepare(
        args.input,
        args.output,
        workers=args.workers,
        captions=args.captions,
        tokenizer=load_tokenizer_len(args.tokenizer) if args.tokenizer else None,
        allow_missing_captions=args.allow_missing_captions,
        count_packets=not args.header_only,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    sys.exit(main())
