"""Storage URIs: parse and validate ``s3://bucket/key``, ``file:///abs`` and local paths; join safely."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from .errors import InvalidURIError

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclass(frozen=True)
class StorageURI:
    """A validated location: ``scheme="s3"`` with bucket/key, or ``scheme="file"`` with a local path."""

    scheme: Literal["s3", "file"]
    bucket: str = ""
    key: str = ""
    path: Path | None = None

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def local_path(self) -> Path:
        """The local path; raises for S3 locations."""
        if self.path is None:
            raise InvalidURIError(f"{self} is not a local path")
        return self.path

    def __str__(self) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self.key}"
        return str(self.path)


def _invalid(uri: object, reason: str) -> InvalidURIError:
    return InvalidURIError(f"invalid storage URI {str(uri)!r}: {reason}")


def _check_chars(uri: str, text: str) -> None:
    bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise _invalid(uri, f"control character {bad!r} is not allowed")


def _check_bucket(uri: str, bucket: str) -> None:
    if not bucket:
        raise _invalid(uri, "the bucket name is empty; use s3://BUCKET/KEY")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or _IPV4_RE.match(bucket):
        raise _invalid(
            uri,
            f"bucket name {bucket!r} is not a valid S3 bucket name (3-63 characters of lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit, not an IP address)",
        )
    if bucket.startswith("xn--") or bucket.endswith("-s3alias"):
        raise _invalid(uri, f"bucket name {bucket!r} uses a reserved prefix or suffix")


def _check_segments(uri: str, rel: str, what: str) -> None:
    """Reject '.', '..' and empty segments in a '/'-separated relative path (a trailing '/' is allowed)."""
    if "\\" in rel:
        raise _invalid(uri, f"backslashes are not allowed in the {what}; use '/' as separator")
    segments = rel.split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]
    for seg in segments:
        if seg == "..":
            raise _invalid(uri, f"'..' in the {what} (path traversal) is not allowed")
        if seg == ".":
            raise _invalid(uri, f"'.' segments in the {what} are not allowed")
        if seg == "":
            raise _invalid(uri, f"empty segment ('//' or a leading '/') in the {what}")


def parse_uri(uri: str | os.PathLike[str] | StorageURI) -> StorageURI:
    """Validate ``uri`` and split it into a :class:`StorageURI`.

    Accepted forms: ``s3://bucket/key`` (key may be empty or end with ``/`` for a prefix), ``file:///abs/path``
    and plain local paths (relative paths, including ``..``, resolve against the working directory as usual).
    Rejected, with an :class:`InvalidURIError` naming the reason: other schemes (``http://``, ``gs://``, ...),
    ``s3:`` without ``//``, empty or invalid bucket names, ``..``/``.``/empty segments and backslashes in S3
    keys and ``file://`` paths, ``file://`` URIs with a host or a relative path, control characters and keys
    longer than 1024 bytes.
    """
    if isinstance(uri, StorageURI):
        return uri
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise InvalidURIError(f"expected a str or path for a storage URI, got {type(uri).__name__}")
    if not uri:
        raise InvalidURIError("empty storage URI; give a local path, file:///abs/path or s3://bucket/key")
    _check_chars(uri, uri)
    m = _SCHEME_RE.match(uri)
    if m is None:
        if re.match(r"^s3[an]?:", uri, re.IGNORECASE):
            raise _invalid(uri, "S3 URIs are written s3://bucket/key")
        return StorageURI(scheme="file", path=Path(uri))
    scheme = m.group(1).lower()
    rest = uri[m.end() :]
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        _check_bucket(uri, bucket)
        if key:
            _check_segments(uri, key, "object key")
        if len(key.encode("utf-8")) > 1024:
            raise _invalid(uri, "object keys are limited to 1024 bytes")
        return StorageURI(scheme="s3", bucket=bucket, key=key)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise _invalid(
                uri, f"file:// URIs must be absolute (file:///abs/path); {parts.netloc!r} reads as a host"
            )
        if parts.query or parts.fragment:
            raise _invalid(uri, "file:// URIs take no query or fragment")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise _invalid(uri, "file:// URIs must hold an absolute path")
        _check_chars(uri, path)
        _check_segments(uri, path[1:], "file path")
        return StorageURI(scheme="file", path=Path(path))
    hint = " (use s3://)" if scheme in ("s3a", "s3n", "http", "https") else ""
    raise _invalid(
        uri, f"unsupported scheme {scheme + '://'!r}{hint}; supported: s3://, file:///, local paths"
    )


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for a location off the local filesystem: ``s3://``, ``http(s)://`` or any ``scheme://`` except
    ``file://``. Plain paths and ``file:///abs`` are local. Only the scheme is looked at (no validation)."""
    m = _SCHEME_RE.match(os.fspath(uri))
    return m is not None and m.group(1).lower() != "file"


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The filesystem path of a local location (a plain path or ``file:///abs``), ``~`` expanded.

    Raises :class:`InvalidURIError` for remote locations and for malformed ``file://`` URIs.
    """
    return parse_uri(uri).local_path.expanduser()


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Append relative ``parts`` (each may hold ``/``) to ``base``; the result is a canonical URI string.

    Parts must be relative and must not contain ``..``, ``.`` or empty segments, so a joined location can
    never escape ``base``. S3 results are ``s3://bucket/key``; local results are plain paths.
    """
    u = parse_uri(base)
    rels: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidURIError(f"join({str(base)!r}, ...): every part must be a non-empty string")
        if part.startswith("/"):
            raise InvalidURIError(f"join({str(base)!r}, {part!r}): parts must be relative (no leading '/')")
        _check_chars(part, part)
        _check_segments(part, part, "joined part")
        rels.append(part.strip("/") if part != "/" else "")
    rel = "/".join(r for r in rels if r)
    trailing = "/" if parts and parts[-1].endswith("/") else ""
    if u.is_s3:
        prefix = u.key.rstrip("/")
        key = f"{prefix}/{rel}" if prefix and rel else prefix or rel
        return str(parse_uri(f"s3://{u.bucket}/{key}{trailing if key else ''}"))
    return str(u.local_path.joinpath(*rel.split("/")) if rel else u.local_path)


def _safe_relpath(rel: str, source: str) -> str:
    """Check a key-derived relative path before it becomes a local file name."""
    if not rel or rel.startswith("/") or os.path.isabs(rel):
        raise InvalidURIError(f"{source}: refusing to write to the absolute or empty local path {rel!r}")
    _check_chars(source, rel)
    _check_segments(source, rel, "object key (relative to the downloaded prefix)")
    return rel
