"""S3 backend: the :class:`S3Backend` protocol, its ``minio`` implementation and the verifying reader.

``minio`` (and ``urllib3``/``certifi``) are imported inside the methods, on first S3 use only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import mimetypes
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from .checksums import _SHA256_HEADER, _norm_etag
from .config import S3Config
from .errors import ChecksumMismatchError, ObjectNotFoundError, StorageError
from .objects import ObjectInfo

logger = logging.getLogger(__package__)  # "opensora_core.io.storage", one logger for the package

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "ResourceNotFound", "NoSuchObject"})


class S3Response(Protocol):
    """The part of an HTTP response used for object reads."""

    headers: Mapping[str, str]

    def read(self, amt: int | None = None) -> bytes: ...

    def close(self) -> None: ...


class S3Backend(Protocol):
    """The S3 calls this module makes; :class:`MinioBackend` implements them (tests may pass a fake)."""

    def put(self, bucket: str, key: str, data: bytes, headers: dict[str, str]) -> str: ...
    def create_multipart(self, bucket: str, key: str, headers: dict[str, str]) -> str: ...
    def upload_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, data: bytes, headers: dict[str, str]
    ) -> str: ...
    def complete_multipart(
        self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> str: ...
    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None: ...
    def list_multipart(self, bucket: str, prefix: str) -> list[tuple[str, str]]: ...
    def get(self, bucket: str, key: str, offset: int, length: int | None) -> S3Response: ...
    def stat(self, bucket: str, key: str) -> ObjectInfo | None: ...
    def list(self, bucket: str, prefix: str, recursive: bool) -> list[tuple[str, int, bool]]: ...
    def remove(self, bucket: str, key: str) -> None: ...
    def remove_many(self, bucket: str, keys: list[str]) -> None: ...
    def bucket_exists(self, bucket: str) -> bool: ...
    def make_bucket(self, bucket: str) -> None: ...


class MinioBackend:
    """:class:`S3Backend` on a ``minio.Minio`` client (minio 7.2).

    The client's own urllib3 retries are disabled so that :func:`call_with_retries` is the only retry layer;
    the multipart calls use minio's request-level methods to control part checksums and the abort path.
    """

    def __init__(self, config: S3Config):
        import certifi
        import urllib3
        from minio import Minio

        ca = (
            str(config.ca_bundle)
            if config.ca_bundle
            else (os.environ.get("SSL_CERT_FILE") or certifi.where())
        )
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
            maxsize=16,
            retries=False,
            cert_reqs="CERT_REQUIRED" if config.verify_tls else "CERT_NONE",
            ca_certs=ca if config.verify_tls else None,
        )
        if config.secure and not config.verify_tls:
            logger.warning("TLS certificate verification is disabled for %s", config.endpoint_url)
        self.client = Minio(
            config.host,
            access_key=config.access_key.get_secret_value() if config.access_key else None,
            secret_key=config.secret_key.get_secret_value() if config.secret_key else None,
            session_token=config.session_token.get_secret_value() if config.session_token else None,
            secure=config.secure,
            region=config.region,
            http_client=http,
        )

    @staticmethod
    @contextlib.contextmanager
    def _missing_bucket_hint(bucket: str) -> Iterator[None]:
        from minio.error import S3Error

        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise ObjectNotFoundError(
                    f"bucket {bucket!r} does not exist; create it first (storage.ensure_bucket('s3://{bucket}/') "
                    "or the chart's bucket setup)"
                ) from None
            raise

    def put(self, bucket: str, key: str, data: bytes, headers: dict[str, str]) -> str:
        with self._missing_bucket_hint(bucket):
            return _norm_etag(self.client._put_object(bucket, key, data, headers=dict(headers)).etag)

    def create_multipart(self, bucket: str, key: str, headers: dict[str, str]) -> str:
        with self._missing_bucket_hint(bucket):
            return self.client._create_multipart_upload(bucket, key, dict(headers))

    def upload_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, data: bytes, headers: dict[str, str]
    ) -> str:
        return _norm_etag(self.client._upload_part(bucket, key, data, dict(headers), upload_id, part_number))

    def complete_multipart(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        from minio.datatypes import Part

        result = self.client._complete_multipart_upload(
            bucket, key, upload_id, [Part(n, e) for n, e in parts]
        )
        return _norm_etag(result.etag)

    def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        self.client._abort_multipart_upload(bucket, key, upload_id)

    def list_multipart(self, bucket: str, prefix: str) -> list[tuple[str, str]]:
        result = self.client._list_multipart_uploads(bucket, prefix=prefix, max_uploads=1000)
        return [(u.object_name, u.upload_id) for u in result.uploads if u.upload_id]

    def get(self, bucket: str, key: str, offset: int, length: int | None) -> S3Response:
        from minio.error import S3Error

        try:
            return self.client.get_object(bucket, key, offset=offset, length=length or 0)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES or exc.code == "NoSuchBucket":
                raise ObjectNotFoundError(f"s3://{bucket}/{key} does not exist ({exc.code})") from None
            raise

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        from minio.error import S3Error

        try:
            st = self.client.stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES or exc.code == "NoSuchBucket":
                return None
            raise
        return ObjectInfo(
            uri=f"s3://{bucket}/{key}",
            size=int(st.size or 0),
            etag=_norm_etag(st.etag),
            sha256=(st.metadata or {}).get(_SHA256_HEADER),
            last_modified=st.last_modified,
        )

    def list(self, bucket: str, prefix: str, recursive: bool) -> list[tuple[str, int, bool]]:
        from minio.error import S3Error

        try:
            return [
                (o.object_name or "", int(o.size or 0), bool(o.is_dir))
                for o in self.client.list_objects(bucket, prefix=prefix, recursive=recursive)
            ]
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise ObjectNotFoundError(f"bucket {bucket!r} does not exist") from None
            raise

    def remove(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)

    def remove_many(self, bucket: str, keys: list[str]) -> None:
        from minio.deleteobjects import DeleteObject

        for start in range(0, len(keys), 1000):
            errors = list(
                self.client.remove_objects(bucket, [DeleteObject(k) for k in keys[start : start + 1000]])
            )
            if errors:
                first = errors[0]
                raise StorageError(
                    f"could not remove {len(errors)} object(s) from s3://{bucket}/, first: "
                    f"{first.name}: {first.code} {first.message}"
                )

    def bucket_exists(self, bucket: str) -> bool:
        return self.client.bucket_exists(bucket)

    def make_bucket(self, bucket: str) -> None:
        from minio.error import S3Error

        try:
            self.client.make_bucket(bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


class _S3Reader(io.RawIOBase):
    """A streaming object body; verifies the SHA-256 at end of stream when ``expected_sha256`` is set."""

    def __init__(self, resp: S3Response, uri: str, expected_sha256: str | None):
        self._resp, self._uri, self._expected = resp, uri, expected_sha256
        self._hash = hashlib.sha256() if expected_sha256 else None
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if len(buf) == 0 or self._done:
            return 0
        data = self._resp.read(len(buf))
        n = len(data)
        buf[:n] = data
        if self._hash is not None:
            self._hash.update(data)
        if n == 0:
            self._done = True
            if self._hash is not None and self._hash.hexdigest() != self._expected:
                raise ChecksumMismatchError(
                    f"{self._uri}: content SHA-256 {self._hash.hexdigest()} differs from the stored "
                    f"{_SHA256_HEADER} {self._expected}; the object is corrupt or was overwritten without it"
                )
        return n

    def close(self) -> None:
        if not self.closed:
            _close_response(self._resp)
        super().close()


def _close_response(resp: S3Response) -> None:
    """Close an object body and hand its connection back to the pool (urllib3's ``release_conn``)."""
    resp.close()
    release = getattr(resp, "release_conn", None)
    if release is not None:
        release()


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _dir_prefix(key: str) -> str:
    return key if (not key or key.endswith("/")) else key + "/"
