"""Completeness and integrity of a checkpoint: the manifest (``_COMPLETE``), written last.

The manifest lists every file of the checkpoint with its size and SHA-256, plus the checkpoint name, global
step and world size. A folder counts as a checkpoint only when it holds one. Checks:

- :func:`verify_checkpoint` (``content=False``): every listed file exists with its size: cheap (one stat per
  file, also on ``s3://``), catches truncated, missing or half-copied files; ``latest`` uses it;
- ``content=True`` also compares the SHA-256 of every file: loading a checkpoint does this.

Checkpoints written before manifests (the marker holds no file list) load with a warning that they are
unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from opensora_core.checkpoint.errors import CheckpointError
from opensora_core.checkpoint.layout import COMPLETE_MARKER
from opensora_core.io import storage

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2  # 1: the marker held only name, step and world size


def sha256_of(uri: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a local file or an ``s3://`` object, streamed."""
    digest = hashlib.sha256()
    with storage.open_read(uri) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file under a local folder (the manifest excluded)."""
    root = Path(folder)
    return {
        p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != COMPLETE_MARKER
    }


def marker_bytes(name: str, extra: Mapping[str, Any], files: Mapping[str, Mapping[str, Any]]) -> bytes:
    """The manifest's content: checkpoint name, ``extra`` (global step, world size) and the file list."""
    body = {"checkpoint": name, **extra, "manifest_version": MANIFEST_VERSION, "files": dict(files)}
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def is_complete(uri: str) -> bool:
    """True when the checkpoint folder (local or ``s3://``) holds its manifest."""
    return storage.exists(storage.join(uri, COMPLETE_MARKER))


def read_manifest(uri: str) -> dict[str, Any]:
    """The manifest of checkpoint ``uri`` (CheckpointError naming it when absent or unreadable)."""
    marker = storage.join(uri, COMPLETE_MARKER)
    if not storage.exists(marker):
        raise CheckpointError(f"{uri} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
    try:
        manifest = json.loads(storage.read_bytes(marker))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{marker} is not a valid checkpoint manifest: {e}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{marker} is not a valid checkpoint manifest (not a JSON object)")
    return manifest


def check_files(
    manifest: Mapping[str, Any],
    folder: str,
    *,
    names: Iterable[str] | None = None,
    content: bool = True,
    label: str | None = None,
) -> None:
    """Check the files of ``folder`` (local or ``s3://``, e.g. a downloaded copy) against ``manifest``: all
    listed files, or only ``names``. Raises CheckpointError naming the first file that is missing, has
    another size or (with ``content``) another SHA-256. Old manifests without a file list pass with a
    warning."""
    label = label or folder
    files = manifest.get("files")
    if files is None:
        logger.warning(
            "checkpoint %s has an old-format %s marker without a file list: loading it unverified",
            label,
            COMPLETE_MARKER,
        )
        return
    wanted = list(files) if names is None else [n for n in names if n in files]
    for rel in wanted:
        entry = files[rel]
        target = storage.join(folder, rel)
        hint = "; load an earlier checkpoint (or restore this file)"
        if not storage.exists(target):
            raise CheckpointError(f"checkpoint {label}: {rel} is missing (listed in its manifest){hint}")
        size = storage.stat(target).size
        if size != entry["size"]:
            raise CheckpointError(
                f"checkpoint {label}: {rel} has {size} bytes, its manifest says {entry['size']} "
                f"(truncated or changed after the save){hint}"
            )
        if content and sha256_of(target) != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint {label}: {rel} does not match the SHA-256 in its manifest (changed or corrupted "
                f"after the save){hint}"
            )


def verify_checkpoint(uri: str, content: bool = True) -> dict[str, Any]:
    """Check checkpoint ``uri`` against its manifest (see :func:`check_files`); returns the manifest."""
    manifest = read_manifest(uri)
    check_files(manifest, uri, content=content)
    return manifest
