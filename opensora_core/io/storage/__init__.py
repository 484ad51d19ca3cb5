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

- ``parse_uri(uri) -> StorageURI`` and ``join(base, *parts) -> str`` (pure; validate and reject traversal);
  ``is_remote(uri) -> bool`` (any ``scheme://`` but ``file://``), ``local_path(uri) -> Path`` (``~`` expanded)
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

import logging

from .api import (
    Storage,
    abort_incomplete_uploads,
    configure,
    default_storage,
    download_dir,
    download_file,
    ensure_bucket,
    exists,
    list_uri,
    open_read,
    read_bytes,
    remove,
    stat,
    upload_dir,
    upload_file,
    write_bytes,
)
from .checksums import SHA256_METADATA
from .config import ENDPOINT_ENV_VARS, MAX_PARTS, MIN_PART_SIZE, MiB, S3Config
from .errors import (
    ChecksumMismatchError,
    InvalidURIError,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
)
from .local import atomic_write_file
from .objects import ObjectInfo, UploadResult
from .retry import RetryPolicy, call_with_retries, is_transient_error
from .s3 import MinioBackend, S3Backend, S3Response
from .uri import StorageURI, is_remote, join, local_path, parse_uri

logger = logging.getLogger(__name__)

__all__ = [
    "ENDPOINT_ENV_VARS",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "SHA256_METADATA",
    "ChecksumMismatchError",
    "InvalidURIError",
    "MiB",
    "MinioBackend",
    "ObjectInfo",
    "ObjectNotFoundError",
    "RetryPolicy",
    "S3Backend",
    "S3Config",
    "S3Response",
    "Storage",
    "StorageError",
    "StorageURI",
    "StorageUnavailableError",
    "UploadResult",
    "abort_incomplete_uploads",
    "atomic_write_file",
    "call_with_retries",
    "configure",
    "default_storage",
    "download_dir",
    "download_file",
    "ensure_bucket",
    "exists",
    "is_remote",
    "is_transient_error",
    "join",
    "list_uri",
    "local_path",
    "logger",
    "open_read",
    "parse_uri",
    "read_bytes",
    "remove",
    "stat",
    "upload_dir",
    "upload_file",
    "write_bytes",
]
