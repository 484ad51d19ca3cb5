"""Reading checkpoints: fetch one to a local folder (whole, or only some files), running states, final metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opensora_core.checkpoint.collective import DistLike, run_agreed
from opensora_core.checkpoint.errors import CheckpointError
from opensora_core.checkpoint.files import read_json
from opensora_core.checkpoint.find import basename
from opensora_core.checkpoint.layout import (
    COMPLETE_MARKER,
    CONFIG_JSON,
    FINAL_METRICS_FILE,
    RUNNING_STATES_FILE,
)
from opensora_core.checkpoint.verify import check_files, is_complete, read_manifest, verify_checkpoint
from opensora_core.io import storage

logger = logging.getLogger(__name__)


def fetch_checkpoint(env: DistLike, uri: str, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """A local folder holding the complete checkpoint ``uri``, verified against its manifest (collective).

    Local folders are returned as they are (rank 0 checks sizes and SHA-256 of every file). ``s3://``
    checkpoints are downloaded once per node (local rank 0) into ``$OPENSORA_CACHE_DIR`` (default: the temp
    folder), the copy is checked, and reused while it matches the manifest. A missing, truncated or altered
    file raises CheckpointError naming it, on every rank.
    """
    u = storage.parse_uri(uri)
    if u.is_local:

        def check() -> None:
            if env.rank == 0:
                verify_checkpoint(uri)

        run_agreed(env, f"verifying checkpoint {uri}", check)
        return u.local_path
    root = Path(cache_root or os.environ.get("OPENSORA_CACHE_DIR") or tempfile.gettempdir())
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    target = root / "opensora-checkpoints" / digest / basename(uri)

    def download() -> None:
        if env.local_rank != 0:
            return
        manifest = read_manifest(uri)
        cached = target / COMPLETE_MARKER
        if cached.is_file() and json.loads(cached.read_bytes()) == manifest:
            try:
                check_files(manifest, str(target), label=uri)
                return
            except CheckpointError as e:
                logger.warning("cached copy of %s is damaged (%s); downloading it again", uri, e)
        if target.exists():
            shutil.rmtree(target)
        storage.download_dir(uri, target)
        check_files(manifest, str(target), label=uri)

    run_agreed(env, f"downloading {uri}", download)
    return target


def fetch_files(
    uri: str, names: Sequence[str], into: str | os.PathLike[str], optional: Sequence[str] = ()
) -> Path:
    """A local folder with ``names`` of checkpoint ``uri`` (its config always): the folder itself when local,
    else ``into`` with those files downloaded (those in ``optional`` only when present). When the checkpoint
    has a manifest, those files are checked against it (sizes and SHA-256).

    Raises FileNotFoundError naming the file when the checkpoint lacks its config or a required file, and
    CheckpointError naming the file that does not match the manifest.
    """
    u = storage.parse_uri(uri)
    wanted = list(dict.fromkeys([CONFIG_JSON, *names, *optional]))
    if u.is_local:
        folder = u.local_path
        if not (folder / CONFIG_JSON).is_file():
            raise FileNotFoundError(
                f"checkpoint {uri} has no {CONFIG_JSON}: pass a checkpoint folder written by "
                "opensora_core.train (epoch*-global_step*/)"
            )
    else:
        folder = Path(into)
        folder.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            source = storage.join(uri, name)
            if name in optional and name not in names and not storage.exists(source):
                continue
            if not storage.exists(source):
                raise FileNotFoundError(f"checkpoint {uri} has no {name}")
            storage.download_file(source, folder / name)
    if is_complete(uri):
        present = [n for n in wanted if (folder / n).is_file()]
        check_files(read_manifest(uri), str(folder), names=present, label=uri)
    return folder


def read_running_states(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The running states (epoch, step, global step, MLflow run id, ...) of a local checkpoint folder."""
    return read_json(Path(folder) / RUNNING_STATES_FILE)


def read_running_states_uri(uri: str) -> dict[str, Any]:
    """The running states of checkpoint ``uri`` (local or ``s3://``); {} when it has none."""
    source = storage.join(uri, RUNNING_STATES_FILE)
    if not storage.exists(source):
        return {}
    return json.loads(storage.read_bytes(source))


def read_final_metrics(exp_dir: str) -> dict[str, Any]:
    """The final summary the trainer wrote into experiment folder ``exp_dir`` (see ``write_final_metrics``)."""
    uri = storage.join(exp_dir, FINAL_METRICS_FILE)
    if not storage.exists(uri):
        raise CheckpointError(
            f"{uri} does not exist: the trainer writes it when training finishes (did the run end early, or "
            "was it written by an older trainer?)"
        )
    try:
        return json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{uri} is not valid JSON: {e}") from e
