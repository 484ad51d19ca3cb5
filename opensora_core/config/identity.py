"""What identifies a run: the hash of its resolved config and the source commit it ran from.

The trainer tags its MLflow run with both (``config_hash``, ``git_commit``) and the registry tags every model
version with the same values (``opensora.config_sha256``, ``opensora.git_commit``), so a model version and the
training run it came from can be matched by tag. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opensora_core.config.schema import RunConfig

# Where a run read and wrote, not what it did: left out of the hash.
RUN_LOCATION_KEYS = ("outputs", "load", "start_from_scratch", "save_dir")
DATASET_LOCATION_KEYS = ("data_path",)
COMMIT_ENV_VARS = ("OPENSORA_GIT_COMMIT", "GIT_COMMIT")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def config_hash(config: RunConfig | Mapping[str, Any]) -> str:
    """SHA-256 (64 hex digits) of a resolved run config, without its run and data locations.

    ``config`` is a :class:`RunConfig` or its JSON dict (``config.json`` of a checkpoint); both give the same
    hash. Key order does not matter; ``outputs``, ``load``, ``start_from_scratch``, ``save_dir`` and
    ``dataset.data_path`` are left out, so the same settings trained on another copy of the data, or resumed,
    hash alike (the data itself is identified by the dataset lineage tags).
    """
    data = dict(config) if isinstance(config, Mapping) else config.to_dict(mode="json")
    cleaned = {k: v for k, v in data.items() if k not in RUN_LOCATION_KEYS}
    dataset = cleaned.get("dataset")
    if isinstance(dataset, Mapping):
        cleaned["dataset"] = {k: v for k, v in dataset.items() if k not in DATASET_LOCATION_KEYS}
    text = json.dumps(cleaned, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The source commit: ``$OPENSORA_GIT_COMMIT`` or ``$GIT_COMMIT`` (containers without git), else
    ``git rev-parse HEAD`` of the checkout holding ``path`` (default: this package), else None."""
    for var in COMMIT_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and _COMMIT_RE.fullmatch(commit) else None
