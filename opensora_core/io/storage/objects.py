"""Result records: :class:`ObjectInfo` (stat) and :class:`UploadResult` (uploads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of one file or object."""

    uri: str
    size: int
    etag: str | None = None
    sha256: str | None = None
    last_modified: datetime | None = None


@dataclass(frozen=True)
class UploadResult:
    """What an upload stored: location, size, ETag, SHA-256 and number of parts (1 = single request)."""

    uri: str
    size: int
    etag: str
    sha256: str
    parts: int = 1
