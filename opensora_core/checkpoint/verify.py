"""Completeness of a checkpoint: the ``_COMPLETE`` marker, written last, is what makes a folder count."""

from __future__ import annotations

import json
from typing import Any

from opensora_core.checkpoint.layout import COMPLETE_MARKER
from opensora_core.io import storage


def marker_bytes(name: str, extra: dict[str, Any]) -> bytes:
    """The marker's content: the checkpoint name plus ``extra`` (global step, world size)."""
    return (json.dumps({"checkpoint": name, **extra}, sort_keys=True) + "\n").encode()


def is_complete(uri: str) -> bool:
    """True when the checkpoint folder (local or ``s3://``) holds the completion marker."""
    return storage.exists(storage.join(uri, COMPLETE_MARKER))
