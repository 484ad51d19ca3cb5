"""Errors raised by :mod:`opensora_core.io.storage`."""

from __future__ import annotations


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
