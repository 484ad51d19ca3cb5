"""The :class:`Storage` facade (local + S3 behind one API) and the module-level functions on its default."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from .checksums import _COPY_CHUNK, _MD5_ETAG_RE, _SHA256_HEADER, _file_sha256, _norm_etag
from .config import MAX_PARTS, S3Config
from .errors import ChecksumMismatchError, InvalidURIError, ObjectNotFoundError, StorageError
from .local import _copy_local, _fsync_dir, _LimitedReader, atomic_write_file
from .objects import ObjectInfo, UploadResult
from .retry import _s3_error_code, call_with_retries
from .s3 import MinioBackend, S3Backend, _close_response, _content_type, _dir_prefix, _S3Reader
from .uri import StorageURI, _safe_relpath, join, parse_uri

logger = logging.getLogger(__package__)  # "opensora_core.io.storage", one logger for the package

T = TypeVar("T")


class Storage:
    """Local + S3 storage with one S3 configuration; every public function of this module is a method here.

    ``config`` is an :class:`S3Config`, a dict of its fields, or ``None`` for :meth:`S3Config.from_env`.
    ``backend`` replaces the minio client (tests); ``sleep`` replaces ``time.sleep`` between retries.
    The S3 client is created on first S3 use, so local-only use needs neither minio nor credentials.
    """

    def __init__(
        self,
        config: S3Config | Mapping[str, Any] | None = None,
        *,
        backend: S3Backend | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if config is None:
            config = S3Config.from_env()
        elif not isinstance(config, S3Config):
            config = S3Config.model_validate(dict(config))
        self.config: S3Config = config
        self.retry_policy = config.retry_policy()
        self._backend = backend
        self._sleep = sleep
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Storage({self.config!r})"

    @property
    def backend(self) -> S3Backend:
        """The S3 backend, created on first use."""
        if self._backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = MinioBackend(self.config)
        return self._backend

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return call_with_retries(fn, policy=self.retry_policy, what=what, sleep=self._sleep)

    @staticmethod
    def _require_key(u: StorageURI, op: str) -> None:
        if not u.key or u.key.endswith("/"):
            raise InvalidURIError(f"{op} needs an object key, but {u} names a bucket or prefix")

    # ------------------------------------------------------------------ queries

    def exists(self, uri: str | os.PathLike[str]) -> bool:
        """True if a file/object exists at ``uri`` or, for a folder/prefix, anything exists below it."""
        u = parse_uri(uri)
        if u.is_local:
            return u.local_path.exists()
        be = self.backend
        if u.key and not u.key.endswith("/") and self._retry(lambda: be.stat(u.bucket, u.key), f"stat {u}"):
            return True
        try:
            entries = self._retry(lambda: be.list(u.bucket, _dir_prefix(u.key), False), f"list {u}")
        except ObjectNotFoundError:
            return False
        return bool(entries)

    def stat(self, uri: str | os.PathLike[str]) -> ObjectInfo:
        """Size, ETag, stored SHA-256 and modification time of one file or object."""
        u = parse_uri(uri)
        if u.is_local:
            p = u.local_path
            if not p.is_file():
                raise ObjectNotFoundError(f"{p} is not a file")
            st = p.stat()
            return ObjectInfo(uri=str(p), size=st.st_size, last_modified=datetime.fromtimestamp(st.st_mtime))
        self._require_key(u, "stat")
        info = self._retry(lambda: self.backend.stat(u.bucket, u.key), f"stat {u}")
        if info is None:
            raise ObjectNotFoundError(f"{u} does not exist")
        return info

    def list_uri(self, uri: str | os.PathLike[str], recursive: bool = True) -> list[str]:
        """Sorted files/objects at or below ``uri`` (treated as a folder); missing locations give ``[]``.

        Recursive listings hold files only. Non-recursive listings hold direct children, folders ending in ``/``.
        A ``uri`` that is itself a file/object lists as ``[uri]``. S3 folder-marker objects (keys ending in
        ``/``) are left out.
        """
        u = parse_uri(uri)
        if u.is_local:
            return self._list_local(u.local_path, recursive)
        if recursive:
            return [f"s3://{u.bucket}/{k}" for k in self._object_keys(u)]
        prefix = _dir_prefix(u.key)
        be = self.backend
        if u.key and not u.key.endswith("/") and self._retry(lambda: be.stat(u.bucket, u.key), f"stat {u}"):
            return [str(u)]
        try:
            raw = self._retry(lambda: be.list(u.bucket, prefix, False), f"list {u}")
        except ObjectNotFoundError:
            return []
        return sorted(
            f"s3://{u.bucket}/{n}" for n, _, is_dir in raw if n != prefix and (is_dir or n[-1:] != "/")
        )

    def _object_keys(self, u: StorageURI) -> list[str]:
        """Sorted keys of the objects at ``u.key`` or below ``u.key/`` (folder markers left out)."""
        prefix = _dir_prefix(u.key)
        be = self.backend
        try:
            raw = self._retry(lambda: be.list(u.bucket, u.key, True), f"list {u}")
        except ObjectNotFoundError:
            return []
        return sorted(
            n
            for n, _, is_dir in raw
            if not is_dir and not n.endswith("/") and (n == u.key or n.startswith(prefix))
        )

    @staticmethod
    def _list_local(p: Path, recursive: bool) -> list[str]:
        if p.is_file():
            return [str(p)]
        if not p.is_dir():
            return []
        if recursive:
            return sorted(str(f) for f in p.rglob("*") if f.is_file())
        return sorted(str(c) + ("/" if c.is_dir() else "") for c in p.iterdir())

    # -------------------------------------------------------------------- reads

    def open_read(self, uri: str | os.PathLike[str], offset: int = 0, length: int | None = None) -> BinaryIO:
        """Open a buffered binary stream; use it as a context manager.

        ``offset``/``length`` select a byte range (``length=None``: to the end). Full S3 reads verify the
        stored SHA-256 when the stream reaches its end (:class:`ChecksumMismatchError`).
        """
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"offset and length must be >= 0, got offset={offset}, length={length}")
        u = parse_uri(uri)
        if u.is_local:
            p = u.local_path
            if not p.is_file():
                raise ObjectNotFoundError(f"{p} is not a file")
            f = open(p, "rb")  # noqa: SIM115 - returned to the caller, closed by them
            f.seek(offset)
            return f if length is None else io.BufferedReader(_LimitedReader(f, length))
        self._require_key(u, "open_read")
        if length == 0:
            return io.BytesIO(b"")
        return self._retry(lambda: self._open_s3(u, offset, length), f"read {u}")

    def _open_s3(self, u: StorageURI, offset: int, length: int | None) -> BinaryIO:
        resp = self.backend.get(u.bucket, u.key, offset, length)
        full = offset == 0 and length is None
        expected = resp.headers.get(_SHA256_HEADER) if full else None
        return io.BufferedReader(_S3Reader(resp, str(u), expected), buffer_size=_COPY_CHUNK)

    def read_bytes(self, uri: str | os.PathLike[str], offset: int = 0, length: int | None = None) -> bytes:
        """The whole content (or a byte range) of a file/object; S3 reads retry as a whole on transient errors."""
        u = parse_uri(uri)
        if u.is_local or length == 0:
            with self.open_read(u, offset, length) as f:
                return f.read()
        self._require_key(u, "read_bytes")
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"offset and length must be >= 0, got offset={offset}, length={length}")

        def once() -> bytes:
            with self._open_s3(u, offset, length) as f:
                return f.read()

        return self._retry(once, f"read {u}")

    # ------------------------------------------------------------------- writes

    def write_bytes(self, uri: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> UploadResult:
        """Store ``data`` at ``uri`` (atomic locally; checksummed, multipart above ``part_size`` on S3)."""
        u = parse_uri(uri)
        data = bytes(data)
        if u.is_local:
            with atomic_write_file(u.local_path) as f:
                f.write(data)
            return UploadResult(
                str(u), len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
            )
        return self._upload_stream(u, io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest(), None)

    def upload_file(
        self,
        local_path: str | os.PathLike[str],
        uri: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> UploadResult:
        """Copy a local file to ``uri`` (S3 or local). ``progress(bytes_done, total)`` runs after each part."""
        src = parse_uri(local_path)
        if not src.is_local:
            raise InvalidURIError(
                f"upload_file reads a local file, got {src}; use download_file for S3 sources"
            )
        path = src.local_path
        if not path.is_file():
            raise ObjectNotFoundError(f"upload_file: {path} is not a file")
        u = parse_uri(uri)
        if u.is_local:
            result = _copy_local(path, u.local_path)
            if progress:
                progress(result.size, result.size)
            return result
        size = path.stat().st_size
        sha = _file_sha256(path)
        with open(path, "rb") as f:
            return self._upload_stream(u, f, size, sha, progress)

    def _upload_stream(
        self,
        u: StorageURI,
        f: BinaryIO,
        size: int,
        sha256: str,
        progress: Callable[[int, int], None] | None,
    ) -> UploadResult:
        self._require_key(u, "upload")
        be = self.backend
        headers = {"Content-Type": _content_type(u.key), _SHA256_HEADER: sha256}
        part_size = max(self.config.part_size, math.ceil(size / MAX_PARTS))
        if size <= part_size:
            data = f.read()
            if len(data) != size:
                raise StorageError(
                    f"upload to {u}: the source changed size while reading ({len(data)} != {size})"
                )
            md5 = hashlib.md5(data)
            put_headers = {**headers, "Content-MD5": base64.b64encode(md5.digest()).decode()}
            etag = self._retry(lambda: be.put(u.bucket, u.key, data, put_headers), f"upload {u}")
            self._check_etag(u, etag, md5.hexdigest())
            if progress:
                progress(size, size)
            return UploadResult(str(u), size, etag, sha256, 1)

        n_parts = math.ceil(size / part_size)
        upload_id = self._retry(lambda: be.create_multipart(u.bucket, u.key, headers), f"start upload {u}")
        digests: list[bytes] = []
        parts: list[tuple[int, str]] = []
        try:
            for number in range(1, n_parts + 1):
                start = (number - 1) * part_size
                f.seek(start)
                data = f.read(min(part_size, size - start))
                md5 = hashlib.md5(data)
                part_headers = {"Content-MD5": base64.b64encode(md5.digest()).decode()}
                etag = self._retry(
                    lambda data=data, number=number, part_headers=part_headers: be.upload_part(
                        u.bucket, u.key, upload_id, number, data, part_headers
                    ),
                    f"upload part {number}/{n_parts} of {u}",
                )
                if _MD5_ETAG_RE.match(etag) and etag != md5.hexdigest():
                    raise ChecksumMismatchError(
                        f"upload of {u}: part {number} stored ETag {etag}, local MD5 {md5.hexdigest()}"
                    )
                digests.append(md5.digest())
                parts.append((number, etag))
                if progress:
                    progress(start + len(data), size)
            expected = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{n_parts}"
            etag = self._complete(u, upload_id, parts, expected)
        except BaseException:
            self._abort(u, upload_id)
            raise
        self._check_etag(u, etag, expected)
        return UploadResult(str(u), size, etag, sha256, n_parts)

    def _complete(self, u: StorageURI, upload_id: str, parts: list[tuple[int, str]], expected: str) -> str:
        be = self.backend
        tries = 0

        def once() -> str:
            nonlocal tries
            tries += 1
            try:
                return be.complete_multipart(u.bucket, u.key, upload_id, parts)
            except Exception as exc:
                # A retried Complete whose first attempt succeeded (response lost) reports NoSuchUpload.
                if tries > 1 and _s3_error_code(exc) == "NoSuchUpload":
                    info = be.stat(u.bucket, u.key)
                    if info is not None and info.etag == expected:
                        return expected
                raise

        return self._retry(once, f"complete upload {u}")

    def _abort(self, u: StorageURI, upload_id: str) -> None:
        try:
            self._retry(lambda: self.backend.abort_multipart(u.bucket, u.key, upload_id), f"abort upload {u}")
        except Exception as exc:
            logger.warning(
                "could not abort the failed multipart upload of %s (%s); no object is visible, but its parts "
                "use space until abort_incomplete_uploads(%r) runs",
                u,
                type(exc).__name__,
                f"s3://{u.bucket}/{u.key}",
            )

    def _check_etag(self, u: StorageURI, etag: str, expected: str) -> None:
        if not _MD5_ETAG_RE.match(etag):
            logger.debug(
                "%s: ETag %r is not an MD5 (server-side encryption?); relying on Content-MD5", u, etag
            )
            return
        if etag != expected:
            with contextlib.suppress(Exception):
                self.backend.remove(u.bucket, u.key)
            raise ChecksumMismatchError(
                f"upload of {u}: the store reports ETag {etag} but the local content gives {expected}; "
                "the object was removed"
            )

    # ------------------------------------------------------------------ downloads

    def download_file(self, uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> Path:
        """Copy a file/object to ``local_path`` atomically, verifying the stored SHA-256 (or plain MD5 ETag)."""
        u = parse_uri(uri)
        dest = parse_uri(local_path)
        if not dest.is_local:
            raise InvalidURIError(
                f"download_file writes a local file, got {dest}; use upload_file for S3 targets"
            )
        if u.is_local:
            _copy_local(u.local_path, dest.local_path)
            return dest.local_path
        self._require_key(u, "download_file")
        self._retry(lambda: self._download_once(u, dest.local_path), f"download {u}")
        return dest.local_path

    def _download_once(self, u: StorageURI, dest: Path) -> None:
        resp = self.backend.get(u.bucket, u.key, 0, None)
        try:
            expected_sha = resp.headers.get(_SHA256_HEADER)
            etag = _norm_etag(resp.headers.get("etag"))
            sha, md5 = hashlib.sha256(), hashlib.md5()
            with atomic_write_file(dest) as f:
                for chunk in iter(lambda: resp.read(_COPY_CHUNK), b""):
                    sha.update(chunk)
                    md5.update(chunk)
                    f.write(chunk)
                if expected_sha and sha.hexdigest() != expected_sha:
                    raise ChecksumMismatchError(
                        f"{u}: downloaded SHA-256 {sha.hexdigest()} differs from the stored {_SHA256_HEADER} "
                        f"{expected_sha}; {dest} was not written"
                    )
                if not expected_sha and re.fullmatch(r"[0-9a-f]{32}", etag) and md5.hexdigest() != etag:
                    raise ChecksumMismatchError(
                        f"{u}: downloaded MD5 {md5.hexdigest()} differs from the ETag {etag}; {dest} was not written"
                    )
        finally:
            _close_response(resp)

    # -------------------------------------------------------------------- folders

    def upload_dir(
        self, local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]
    ) -> list[UploadResult]:
        """Upload every file below ``local_dir`` to ``uri/<relative path>``, in sorted order.

        S3 has no atomic folder rename: readers that need a complete folder should look for a marker file
        the writer uploads last.
        """
        src = parse_uri(local_dir)
        if not src.is_local or not src.local_path.is_dir():
            raise ObjectNotFoundError(f"upload_dir: {src} is not a local folder")
        root = src.local_path
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return [self.upload_file(p, join(uri, p.relative_to(root).as_posix())) for p in files]

    def download_dir(self, uri: str | os.PathLike[str], local_dir: str | os.PathLike[str]) -> Path:
        """Download every object below the prefix ``uri`` into ``local_dir`` (same relative layout).

        A ``local_dir`` that does not exist yet appears at once, complete (staged in a sibling temp folder and
        renamed); into an existing folder each file is written atomically. Keys that would land outside
        ``local_dir`` (``..``, absolute) raise :class:`InvalidURIError` before anything is written.
        """
        u = parse_uri(uri)
        dest = parse_uri(local_dir)
        if not dest.is_local:
            raise InvalidURIError(f"download_dir writes a local folder, got {dest}")
        target = dest.local_path
        if u.is_local:
            root = u.local_path
            if not root.is_dir():
                raise ObjectNotFoundError(f"download_dir: {root} is not a folder")
            items = [(p.relative_to(root).as_posix(), str(p)) for p in sorted(root.rglob("*")) if p.is_file()]
        else:
            prefix = _dir_prefix(u.key)
            items = []
            for key in self._object_keys(u):
                if key == u.key:
                    raise InvalidURIError(f"download_dir: {u} is an object, not a prefix; use download_file")
                source = f"s3://{u.bucket}/{key}"
                items.append((_safe_relpath(key[len(prefix) :], source), source))
        if not items:
            raise ObjectNotFoundError(f"download_dir: nothing below {u}")
        for rel, src in items:
            _safe_relpath(rel, src)
        if target.exists():
            if not target.is_dir():
                raise StorageError(f"download_dir: {target} exists and is not a folder")
            for rel, src in items:
                self.download_file(src, target.joinpath(*rel.split("/")))
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
        try:
            for rel, src in items:
                self.download_file(src, staging.joinpath(*rel.split("/")))
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(target.parent)
        return target

    # ------------------------------------------------------------------- removal

    def remove(self, uri: str | os.PathLike[str], recursive: bool = False, missing_ok: bool = True) -> int:
        """Delete a file/object (or, with ``recursive``, everything below a folder/prefix); returns the count."""
        u = parse_uri(uri)
        if u.is_local:
            p = u.local_path
            if p.is_dir() and not p.is_symlink():
                if not recursive:
                    raise StorageError(f"remove: {p} is a folder; pass recursive=True to delete it")
                count = sum(1 for f in p.rglob("*") if f.is_file())
                shutil.rmtree(p)
                return count
            if p.exists() or p.is_symlink():
                p.unlink()
                return 1
            if not missing_ok:
                raise ObjectNotFoundError(f"remove: {p} does not exist")
            return 0
        be = self.backend
        if recursive:
            keys = self._object_keys(u)
            if keys:
                self._retry(lambda: be.remove_many(u.bucket, keys), f"remove below {u}")
            elif not missing_ok:
                raise ObjectNotFoundError(f"remove: nothing below {u}")
            return len(keys)
        self._require_key(u, "remove")
        if self._retry(lambda: be.stat(u.bucket, u.key), f"stat {u}") is None:
            if self.list_uri(u, recursive=True):
                raise StorageError(f"remove: {u} is a prefix with objects below it; pass recursive=True")
            if not missing_ok:
                raise ObjectNotFoundError(f"remove: {u} does not exist")
            return 0
        self._retry(lambda: be.remove(u.bucket, u.key), f"remove {u}")
        return 1

    # ------------------------------------------------------------------- buckets

    def ensure_bucket(self, uri: str | os.PathLike[str]) -> None:
        """Create the bucket of an ``s3://`` URI if it does not exist (a no-op for local paths)."""
        u = parse_uri(uri)
        if u.is_local:
            return
        be = self.backend
        if not self._retry(lambda: be.bucket_exists(u.bucket), f"check bucket {u.bucket}"):
            self._retry(lambda: be.make_bucket(u.bucket), f"create bucket {u.bucket}")

    def abort_incomplete_uploads(self, uri: str | os.PathLike[str]) -> int:
        """Abort unfinished multipart uploads whose key starts with the key of ``uri``; returns how many."""
        u = parse_uri(uri)
        if u.is_local:
            return 0
        be = self.backend
        aborted = 0
        for _ in range(100):
            pending = self._retry(lambda: be.list_multipart(u.bucket, u.key), f"list uploads {u}")
            if not pending:
                break
            for key, upload_id in pending:
                self._retry(
                    lambda key=key, upload_id=upload_id: be.abort_multipart(u.bucket, key, upload_id),
                    f"abort upload s3://{u.bucket}/{key}",
                )
                aborted += 1
        return aborted


# ----------------------------------------------------------------------------- module-level default

_default_lock = threading.Lock()
_default_storage: Storage | None = None


def default_storage() -> Storage:
    """The process-wide :class:`Storage`, configured from the environment on first use."""
    global _default_storage
    with _default_lock:
        if _default_storage is None:
            _default_storage = Storage()
        return _default_storage


def configure(config: S3Config | Mapping[str, Any] | None = None) -> Storage:
    """Replace the default storage (``None``: re-read the environment) and return it."""
    global _default_storage
    storage = Storage(config)
    with _default_lock:
        _default_storage = storage
    return storage


def exists(uri: str | os.PathLike[str]) -> bool:
    """See :meth:`Storage.exists`."""
    return default_storage().exists(uri)


def stat(uri: str | os.PathLike[str]) -> ObjectInfo:
    """See :meth:`Storage.stat`."""
    return default_storage().stat(uri)


def list_uri(uri: str | os.PathLike[str], recursive: bool = True) -> list[str]:
    """See :meth:`Storage.list_uri`."""
    return default_storage().list_uri(uri, recursive)


def open_read(uri: str | os.PathLike[str], offset: int = 0, length: int | None = None) -> BinaryIO:
    """See :meth:`Storage.open_read`."""
    return default_storage().open_read(uri, offset, length)


def read_bytes(uri: str | os.PathLike[str], offset: int = 0, length: int | None = None) -> bytes:
    """See :meth:`Storage.read_bytes`."""
    return default_storage().read_bytes(uri, offset, length)


def write_bytes(uri: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> UploadResult:
    """See :meth:`Storage.write_bytes`."""
    return default_storage().write_bytes(uri, data)


def upload_file(
    local_path: str | os.PathLike[str],
    uri: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> UploadResult:
    """See :meth:`Storage.upload_file`."""
    return default_storage().upload_file(local_path, uri, progress=progress)


def download_file(uri: str | os.PathLike[str], local_path: str | os.PathLike[str]) -> Path:
    """See :meth:`Storage.download_file`."""
    return default_storage().download_file(uri, local_path)


def upload_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]) -> list[UploadResult]:
    """See :meth:`Storage.upload_dir`."""
    return default_storage().upload_dir(local_dir, uri)


def download_dir(uri: str | os.PathLike[str], local_dir: str | os.PathLike[str]) -> Path:
    """See :meth:`Storage.download_dir`."""
    return default_storage().download_dir(uri, local_dir)


def remove(uri: str | os.PathLike[str], recursive: bool = False, missing_ok: bool = True) -> int:
    """See :meth:`Storage.remove`."""
    return default_storage().remove(uri, recursive, missing_ok)


def ensure_bucket(uri: str | os.PathLike[str]) -> None:
    """See :meth:`Storage.ensure_bucket`."""
    default_storage().ensure_bucket(uri)


def abort_incomplete_uploads(uri: str | os.PathLike[str]) -> int:
    """See :meth:`Storage.abort_incomplete_uploads`."""
    return default_storage().abort_incomplete_uploads(uri)
