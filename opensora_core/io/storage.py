"""Storage URIs: local paths, ``file:///abs/path`` and ``s3://bucket/key`` behind one small API.

Preparation, training checkpoints and evaluation outputs read and write through these functions, so a step
works the same whether its data lives on a local disk or in an S3-compatible object store (SeaweedFS,
MinIO, AWS S3). S3 access goes through the ``minio`` client, imported on first S3 use only.

Module-level functions use a process-wide default :class:`Storage` configured from the environment
(:meth:`S3Config.from_env`); build a :class:`Storage` yourself for another configuration::

    from opensora_core.io import storage
    storage.upload_dir("outputs/epoch0-global_step100", "s3://ckpts/run1/epoch0-global_step100")
    storage.read_bytes("s3://ckpts/run1/config.json")
    s = storage.Storage({"endpoint_url": "http://127.0.0.1:8333", "access_key": "k", "secret_key": "s"})

Public functions (each also a :class:`Storage` method; ``uri`` is a local path, ``file:///abs`` or ``s3://``):

- ``parse_uri(uri) -> StorageURI`` and ``join(base, *parts) -> str`` (pure; validate and reject traversal)
- ``exists(uri) -> bool``, ``stat(uri) -> ObjectInfo``, ``list_uri(uri, recursive=True) -> list[str]``
- ``open_read(uri, offset=0, length=None) -> BinaryIO`` (a stream; ranged when offset/length are given),
  ``read_bytes(uri, offset=0, length=None) -> bytes``, ``write_bytes(uri, data) -> UploadResult``
- ``upload_file(local_path, uri) -> UploadResult``, ``download_file(uri, local_path) -> Path``
- ``upload_dir(local_dir, uri) -> list[UploadResult]``, ``download_dir(uri, local_dir) -> Path``
- ``remove(uri, recursive=False, missing_ok=True) -> int``
- ``ensure_bucket(uri)``, ``abort_incomplete_uploads(uri) -> int``

Guarantees:

- Local writes are atomic: a temp file in the target folder, fsync, rename (and fsync of the folder);
  ``download_dir`` into a new folder materialises the whole folder with one rename.
- Transient S3 failures (connection errors, timeouts, HTTP 5xx/429, SlowDown) are retried with exponential
  backoff (``S3Config.max_attempts``); other errors fail at once.
- Uploads store the SHA-256 of the content as ``x-amz-meta-sha256``, send ``Content-MD5`` with every request
  and compare the returned ETag with the locally computed MD5 (multipart: MD5 of the part MD5s, ``-N``);
  a mismatching object is removed. Downloads and full reads verify the SHA-256 when the metadata is present.
- A failed multipart upload is aborted, so no partial object ever becomes visible; if the store is
  unreachable even for the abort, the parts stay invisible until ``abort_incomplete_uploads`` (or a bucket
  lifecycle rule) frees them.
- Credentials are never logged: :class:`S3Config` holds them as ``SecretStr`` (masked in ``repr``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import logging
import math
import mimetypes
import os
import random
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3 minimum for every part but the last
MAX_PARTS = 10_000  # S3 maximum number of parts of one upload
SHA256_METADATA = "sha256"  # stored as the x-amz-meta-sha256 header
_SHA256_HEADER = "x-amz-meta-" + SHA256_METADATA
_COPY_CHUNK = 1 * MiB

# Endpoint variables, first match wins (S3_ENDPOINT_URL is ours; the others are MLflow's and the AWS SDKs').
ENDPOINT_ENV_VARS = ("S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_MD5_ETAG_RE = re.compile(r"^[0-9a-f]{32}(-\d+)?$")
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "ResourceNotFound", "NoSuchObject"})
_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted", "Throttling"}
)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- errors


class StorageError(Exception):
    """Base class of every error raised by this module."""


class InvalidURIError(StorageError, ValueError):
    """A URI or path that this module refuses (bad scheme, bucket name, traversal, ...)."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object, file, bucket or prefix does not exist."""


class ChecksumMismatchError(StorageError):
    """Stored and computed checksums differ (corruption in transit or at rest)."""


class StorageUnavailableError(StorageError):
    """A transient failure persisted through every retry."""


# ----------------------------------------------------------------------------------------------- URIs


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


# ------------------------------------------------------------------------------------------ retrying


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: delay after failure n (1-based) is ``min(max, initial * 2**(n-1))``.

    With ``jitter`` the delay is scaled by a random factor in [0.5, 1] so that many clients do not retry
    in lock-step.
    """

    attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: bool = True

    def delay(self, failures: int) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * (2 ** max(failures - 1, 0)))
        return base * random.uniform(0.5, 1.0) if self.jitter else base


def _s3_error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def is_transient_error(exc: BaseException) -> bool:
    """True for failures worth retrying: connection errors, timeouts, HTTP 5xx/429 and throttling codes.

    TLS verification failures, bad requests, missing objects and checksum mismatches are not transient.
    """
    if isinstance(exc, StorageUnavailableError):
        return True
    if isinstance(exc, StorageError | ValueError | ssl.SSLError):
        return False
    module = type(exc).__module__
    if module.startswith("urllib3"):
        from urllib3.exceptions import HTTPError, MaxRetryError
        from urllib3.exceptions import SSLError as Urllib3SSLError

        if isinstance(exc, Urllib3SSLError):
            return False
        if isinstance(exc, MaxRetryError):
            return exc.reason is None or is_transient_error(exc.reason)
        return isinstance(exc, HTTPError)
    if module.startswith("minio"):
        from minio.error import InvalidResponseError, S3Error, ServerError

        if isinstance(exc, ServerError):
            return exc.status_code >= 500 or exc.status_code == 429
        if isinstance(exc, InvalidResponseError):
            status = getattr(exc, "_code", 0) or 0
            return status >= 500 or status == 429
        if isinstance(exc, S3Error):
            status = getattr(exc.response, "status", 0) or 0
            return exc.code in _TRANSIENT_S3_CODES or status >= 500 or status == 429
        return False
    return isinstance(exc, ConnectionError | TimeoutError | http.client.IncompleteRead)


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    is_transient: Callable[[BaseException], bool] = is_transient_error,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures per ``policy``.

    Raises the first non-transient error unchanged, or :class:`StorageUnavailableError` (chained to the last
    transient error) after ``policy.attempts`` failed attempts. ``what`` names the operation in messages.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                raise StorageUnavailableError(
                    f"{what} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}"
                ) from exc
            delay = policy.delay(attempt)
            logger.warning(
                "%s: transient %s (attempt %d/%d), retrying in %.2fs",
                what,
                type(exc).__name__,
                attempt,
                policy.attempts,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: RetryPolicy.attempts must be >= 1")


# -------------------------------------------------------------------------------------------- config


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean; use true/false or 1/0")


class S3Config(BaseModel):
    """How to reach the S3 endpoint. Secrets are ``SecretStr`` and print as ``'**********'``."""

    # hide_input_in_errors: a rejected value may be a secret (or an endpoint URL with credentials in it).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    endpoint_url: str = Field(
        "https://s3.amazonaws.com", description="http(s)://host[:port]; TLS is used for https"
    )
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str | None = None
    verify_tls: bool = Field(True, description="verify the server certificate (https endpoints)")
    ca_bundle: Path | None = Field(None, description="PEM bundle of CAs to trust instead of certifi's")
    max_attempts: int = Field(5, ge=1, le=50, description="attempts per request on transient errors")
    backoff_initial_s: float = Field(0.5, ge=0.0)
    backoff_max_s: float = Field(8.0, ge=0.0)
    part_size: int = Field(16 * MiB, ge=MIN_PART_SIZE, le=5 * 1024 * MiB, description="multipart part size")
    connect_timeout_s: float = Field(10.0, gt=0.0)
    read_timeout_s: float = Field(300.0, gt=0.0)

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = value.strip()
        if "://" not in value:
            value = "https://" + value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"endpoint_url must start with http:// or https://, got scheme {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("endpoint_url must not embed credentials; set access_key/secret_key instead")
        if not parts.hostname:
            raise ValueError("endpoint_url has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("endpoint_url must be scheme://host[:port] without a path or query")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"endpoint_url has an invalid port: {exc}") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return f"{parts.scheme}://{host}" + (f":{port}" if port else "")

    @model_validator(mode="after")
    def _check_keys(self) -> S3Config:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError(
                "access_key and secret_key must be given together (or neither, for anonymous access)"
            )
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"ca_bundle {str(self.ca_bundle)!r} is not a file")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self

    @property
    def secure(self) -> bool:
        """True when the endpoint is https (TLS on)."""
        return self.endpoint_url.startswith("https://")

    @property
    def host(self) -> str:
        """``host[:port]`` as the minio client wants it."""
        return self.endpoint_url.split("://", 1)[1]

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_initial_s, self.backoff_max_s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> S3Config:
        """Build a config from environment variables (``os.environ`` unless ``env`` is given).

        Endpoint: the first of ``S3_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
        ``AWS_ENDPOINT_URL``. Keys: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``.
        Region: ``AWS_REGION`` or ``AWS_DEFAULT_REGION``. TLS: ``S3_VERIFY_TLS`` (true/false; MLflow's
        ``MLFLOW_S3_IGNORE_TLS=true`` also disables verification), CA bundle ``S3_CA_BUNDLE`` or
        ``AWS_CA_BUNDLE``. Retries: ``S3_MAX_ATTEMPTS``. Part size: ``S3_PART_SIZE_MB``.
        Keyword ``overrides`` win over the environment.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def first(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        endpoint = first(*ENDPOINT_ENV_VARS)
        if endpoint:
            values["endpoint_url"] = endpoint
        if env.get("AWS_ACCESS_KEY_ID"):
            values["access_key"] = env["AWS_ACCESS_KEY_ID"]
        if env.get("AWS_SECRET_ACCESS_KEY"):
            values["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            values["session_token"] = env["AWS_SESSION_TOKEN"]
        region = first("AWS_REGION", "AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
        if env.get("S3_VERIFY_TLS"):
            values["verify_tls"] = _parse_bool("S3_VERIFY_TLS", env["S3_VERIFY_TLS"])
        elif env.get("MLFLOW_S3_IGNORE_TLS") and _parse_bool(
            "MLFLOW_S3_IGNORE_TLS", env["MLFLOW_S3_IGNORE_TLS"]
        ):
            values["verify_tls"] = False
        ca = first("S3_CA_BUNDLE", "AWS_CA_BUNDLE")
        if ca:
            values["ca_bundle"] = ca
        for name, field, conv in (
            ("S3_MAX_ATTEMPTS", "max_attempts", int),
            ("S3_PART_SIZE_MB", "part_size", lambda s: int(float(s) * MiB)),
        ):
            if env.get(name):
                try:
                    values[field] = conv(env[name])
                except ValueError:
                    raise ValueError(f"environment variable {name}={env[name]!r} is not a number") from None
        values.update(overrides)
        return cls.model_validate(values)


# ------------------------------------------------------------------------------------- S3 backend


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


def _norm_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


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


# ------------------------------------------------------------------------------------ local helpers


@contextlib.contextmanager
def atomic_write_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temp file next to ``path`` for writing; on success fsync it and rename it over ``path``.

    If the block raises, the temp file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_COPY_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _copy_local(src: Path, dest: Path) -> UploadResult:
    if not src.is_file():
        raise ObjectNotFoundError(f"{src} is not a file")
    if dest.exists() and os.path.samefile(src, dest):
        raise StorageError(f"source and destination are the same file: {src}")
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, atomic_write_file(dest) as fout:
        for chunk in iter(lambda: fin.read(_COPY_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
            fout.write(chunk)
    return UploadResult(uri=str(dest), size=size, etag=md5.hexdigest(), sha256=sha.hexdigest())


class _LimitedReader(io.RawIOBase):
    """At most ``limit`` bytes of an open binary file (local ranged reads)."""

    def __init__(self, f: BinaryIO, limit: int):
        self._f, self._left = f, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buf[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


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
            self._resp.close()
            release = getattr(self._resp, "release_conn", None)
            if release is not None:
                release()
        super().close()


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _dir_prefix(key: str) -> str:
    return key if (not key or key.endswith("/")) else key + "/"


# ---------------------------------------------------------------------------------------- Storage


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
            resp.close()
            release = getattr(resp, "release_conn", None)
            if release is not None:
                release()

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
