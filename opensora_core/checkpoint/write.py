"""Writing checkpoints atomically (local or ``s3://``), retention, and the run's final metrics.

Local: every rank writes into ``.{name}.partial`` next to the final folder, files are fsynced, rank 0 adds
the manifest (every file with size and SHA-256, :mod:`~opensora_core.checkpoint.verify`) and renames the folder into place (then fsyncs the parent), so a crash at any moment
leaves either the previous state or the complete new checkpoint; earlier checkpoints are never touched.
``s3://``: every rank writes into a private local folder and uploads it to a staging prefix
``{name}.staging-{nonce}`` (ignored by ``latest``), the ranks' file lists are gathered and rank 0 uploads the
manifest last; then the checkpoint is published under ``name`` (:func:`_publish_remote`), so an older complete
copy of the same name is never deleted before the new one is complete. Readers ignore prefixes without a
manifest. Local folders assume a file system shared by all ranks (as the reference); ``s3://`` works across
nodes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opensora_core.checkpoint.collective import DistLike, gather_objects, run_agreed
from opensora_core.checkpoint.errors import CheckpointError
from opensora_core.checkpoint.files import fsync_dir, fsync_tree
from opensora_core.checkpoint.find import basename, list_checkpoints
from opensora_core.checkpoint.layout import (
    COMPLETE_MARKER,
    FINAL_METRICS_FILE,
    is_staging_of,
    partial_name,
    replaced_name,
    staging_name,
)
from opensora_core.checkpoint.verify import file_entries, marker_bytes
from opensora_core.io import storage

logger = logging.getLogger(__name__)


def save_checkpoint(
    env: DistLike,
    exp_dir: str,
    name: str,
    write: Callable[[Path], Any],
    keep_last_n: int | None = None,
    staging_root: str | os.PathLike[str] | None = None,
    marker: dict[str, Any] | None = None,
) -> str:
    """Write checkpoint ``exp_dir/name`` atomically; every rank calls this (collective).

    ``write(folder)`` runs on every rank and writes that rank's files into ``folder`` (a shared partial folder
    for local ``exp_dir``, a private staging folder for ``s3://``). Returns the checkpoint URI. On failure on
    any rank the partial folder is removed and CheckpointError is raised on every rank; earlier checkpoints
    are untouched. ``keep_last_n`` then deletes the oldest complete checkpoints beyond N.
    """
    if storage.parse_uri(exp_dir).is_local:
        uri = _save_local(env, exp_dir, name, write, marker or {})
    else:
        uri = _save_remote(env, exp_dir, name, write, staging_root, marker or {})
    if keep_last_n and env.rank == 0:
        try:
            apply_retention(exp_dir, keep_last_n, keep={uri})
        except Exception as e:  # noqa: BLE001 - retention never fails a run
            logger.warning("checkpoint retention in %s failed: %s", exp_dir, e)
    env.barrier()
    return uri


def _save_local(env: DistLike, exp_dir: str, name: str, write: Callable[[Path], Any], marker: dict) -> str:
    exp = storage.parse_uri(exp_dir).local_path
    final = exp / name
    partial = exp / partial_name(name)

    def prepare() -> None:
        if env.rank == 0:
            exp.mkdir(parents=True, exist_ok=True)
            if partial.exists():
                shutil.rmtree(partial)
            partial.mkdir()

    run_agreed(env, f"preparing {partial}", prepare)
    try:
        run_agreed(env, f"writing checkpoint {final}", lambda: write(partial))
    except CheckpointError:
        if env.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise

    def publish() -> None:
        if env.rank != 0:
            return
        fsync_tree(partial)
        (partial / COMPLETE_MARKER).write_bytes(marker_bytes(name, marker, file_entries(partial)))
        fsync_tree(partial)
        old = exp / replaced_name(name)
        if final.exists():  # the same step saved again: swap, then drop the old copy
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(partial, final)
        fsync_dir(exp)
        if old.exists():
            shutil.rmtree(old)

    try:
        run_agreed(env, f"publishing checkpoint {final}", publish)
    except CheckpointError:
        if env.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("saved checkpoint %s", final)
    return str(final)


def _save_remote(
    env: DistLike,
    exp_dir: str,
    name: str,
    write: Callable[[Path], Any],
    staging_root: str | os.PathLike[str] | None,
    marker: dict,
) -> str:
    """Stage, then publish (see :func:`_publish_remote`); a complete older copy of ``name`` stays loadable and
    found by ``latest`` until the new one is complete in its staging prefix."""
    uri = storage.join(exp_dir, name)
    staged = storage.join(exp_dir, staging_name(name, gather_objects(env, secrets.token_hex(4))[0]))
    root = Path(staging_root or os.environ.get("OPENSORA_STAGING_DIR") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix=f"ckpt-{name}-rank{env.rank}-", dir=root))

    def clear_interrupted() -> None:
        if env.rank == 0:  # staging prefixes of earlier attempts at this name that never got published
            for child in storage.list_uri(exp_dir, recursive=False):
                if child.endswith("/") and is_staging_of(basename(child), name):
                    storage.remove(child, recursive=True, missing_ok=True)

    def write_and_upload() -> dict[str, dict[str, Any]]:
        write(local)
        entries = file_entries(local)
        if entries:
            storage.upload_dir(local, staged)
        return entries

    try:
        run_agreed(env, f"clearing interrupted saves of {uri}", clear_interrupted)
        try:
            entries = run_agreed(env, f"writing checkpoint {staged}", write_and_upload)
            files: dict[str, dict[str, Any]] = {}
            for rank_entries in gather_objects(env, entries):
                files.update(rank_entries)
            manifest = marker_bytes(name, marker, files)
            run_agreed(
                env, f"completing staged checkpoint {staged}", lambda: _write_manifest(env, staged, manifest)
            )
        except CheckpointError:
            if env.rank == 0:  # best effort (the store may be down): the next save of this name clears it
                _remove_quietly(staged)
            raise
        _publish_remote(env, local, staged, uri, manifest, files)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    logger.info("saved checkpoint %s", uri)
    return uri


def _write_manifest(env: DistLike, uri: str, manifest: bytes) -> None:
    if env.rank == 0:
        storage.write_bytes(storage.join(uri, COMPLETE_MARKER), manifest)


def _remove_quietly(uri: str) -> None:
    try:
        storage.remove(uri, recursive=True, missing_ok=True)
    except Exception as e:  # noqa: BLE001 - cleanup never hides the error being raised
        logger.warning("could not remove %s: %s", uri, e)


def _publish_remote(
    env: DistLike, local: Path, staged: str, uri: str, manifest: bytes, files: dict[str, dict[str, Any]]
) -> None:
    """Publish the complete staged checkpoint under ``uri``.

    S3 has no rename, so every rank uploads its files again from its local folder to ``uri`` (overwriting an
    older copy's objects of the same names), then rank 0 writes the manifest, removes the staging prefix
    and only then the objects of the older copy the new manifest does not list. The older copy's manifest is
    removed first, so while objects are replaced ``latest`` falls back to the previous checkpoint, never to a
    mix; if publishing fails, the complete new copy stays in ``staged`` (named in the error).
    """

    def retire_old() -> None:
        if env.rank == 0:
            storage.remove(storage.join(uri, COMPLETE_MARKER), missing_ok=True)

    def upload() -> None:
        if any(p.is_file() for p in local.rglob("*")):
            storage.upload_dir(local, uri)

    def finish() -> None:
        if env.rank != 0:
            return
        storage.write_bytes(storage.join(uri, COMPLETE_MARKER), manifest)
        _remove_quietly(staged)
        prefix = uri.rstrip("/") + "/"
        for obj in storage.list_uri(uri, recursive=True):
            rel = obj[len(prefix) :]
            if rel != COMPLETE_MARKER and rel not in files:
                storage.remove(obj, missing_ok=True)  # left over from the older copy

    try:
        run_agreed(env, f"publishing checkpoint {uri}", retire_old)
        run_agreed(env, f"publishing checkpoint {uri}", upload)
        run_agreed(env, f"publishing checkpoint {uri}", finish)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the complete checkpoint is still in {staged})") from e


def apply_retention(exp_dir: str, keep_last_n: int, keep: set[str] | None = None) -> list[str]:
    """Delete all but the newest ``keep_last_n`` complete checkpoints (never those in ``keep``).

    The completion marker goes first, so a deletion cut short leaves a folder that no longer counts.
    Returns the removed URIs.
    """
    if keep_last_n < 1:
        raise ValueError(f"keep_last_n must be >= 1, got {keep_last_n}")
    refs = list_checkpoints(exp_dir)
    keep = keep or set()
    removed = []
    for ref in refs[: max(0, len(refs) - keep_last_n)]:
        if ref.uri in keep:
            continue
        storage.remove(storage.join(ref.uri, COMPLETE_MARKER), missing_ok=True)
        storage.remove(ref.uri, recursive=True, missing_ok=True)
        removed.append(ref.uri)
        logger.info("retention (keep_last_n=%d): removed %s", keep_last_n, ref.uri)
    return removed


def write_final_metrics(exp_dir: str, summary: Mapping[str, Any]) -> str:
    """Write the run's final summary (step, metrics, checkpoint, MLflow run id) into the experiment folder
    (local or ``s3://``, replaced atomically); returns its URI. Rank 0 calls this at the end of training."""
    uri = storage.join(exp_dir, FINAL_METRICS_FILE)
    storage.write_bytes(uri, (json.dumps(dict(summary), indent=2, sort_keys=True) + "\n").encode())
    return uri
