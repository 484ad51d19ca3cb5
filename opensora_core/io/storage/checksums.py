"""Checksum helpers: the SHA-256 metadata header, MD5 ETags and file hashing."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .config import MiB

SHA256_METADATA = "sha256"  # stored as the x-amz-meta-sha256 header
_SHA256_HEADER = "x-amz-meta-" + SHA256_METADATA
_COPY_CHUNK = 1 * MiB
_MD5_ETAG_RE = re.compile(r"^[0-9a-f]{32}(-\d+)?$")


def _norm_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_COPY_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
