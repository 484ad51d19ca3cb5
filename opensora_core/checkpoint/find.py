"""Finding checkpoints: list an experiment's, the newest one, the next or latest experiment folder, ``--load``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opensora_core.checkpoint.errors import CheckpointError
from opensora_core.checkpoint.layout import (
    COMPLETE_MARKER,
    experiment_name,
    model_folder_name,
    parse_checkpoint_name,
    parse_experiment_name,
)
from opensora_core.checkpoint.verify import is_complete, verify_checkpoint
from opensora_core.io import storage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint found in an experiment folder."""

    uri: str
    epoch: int
    global_step: int


def basename(uri: str) -> str:
    """The last path component of a local path or URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def parent(uri: str) -> str:
    """The folder holding ``uri`` (a checkpoint's experiment folder)."""
    return uri.rstrip("/").rsplit("/", 1)[0]


def _children(uri: str) -> list[str]:
    """Names of the direct sub-folders of a local folder or an ``s3://`` prefix ([] when absent)."""
    u = storage.parse_uri(uri)
    if u.is_local:
        p = u.local_path
        return sorted(c.name for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
    return sorted(basename(c) for c in storage.list_uri(uri, recursive=False) if c.endswith("/"))


def next_experiment_dir(outputs: str, model_type: str) -> str:
    """``{outputs}/{NNN}-{model}`` with NNN one above the highest existing experiment index (000 first)."""
    indices = [parsed[0] for name in _children(outputs) if (parsed := parse_experiment_name(name))]
    return storage.join(outputs, experiment_name(max(indices) + 1 if indices else 0, model_type))


def latest_experiment_dir(outputs: str, model_type: str) -> str | None:
    """The highest-numbered ``{NNN}-{model}`` folder of ``model_type`` directly under ``outputs`` (None: none).

    What ``experiment_folder="latest"`` continues: every restart of a job stays in one experiment folder, also
    one that restarts before the first checkpoint (which would otherwise open the next folder and fork the
    run's history).
    """
    wanted = model_folder_name(model_type)
    found = [
        (parsed[0], name)
        for name in _children(outputs)
        if (parsed := parse_experiment_name(name)) and parsed[1] == wanted
    ]
    return storage.join(outputs, max(found)[1]) if found else None


def list_checkpoints(exp_dir: str, complete_only: bool = True) -> list[CheckpointRef]:
    """Checkpoints of an experiment folder, oldest (lowest global step) first."""
    refs = []
    for name in _children(exp_dir):
        parsed = parse_checkpoint_name(name)
        if parsed is None:
            continue
        uri = storage.join(exp_dir, name)
        if complete_only and not is_complete(uri):
            continue
        refs.append(CheckpointRef(uri, parsed[0], parsed[1]))
    return sorted(refs, key=lambda r: (r.global_step, r.epoch))


def newest_verified(refs: list[CheckpointRef]) -> CheckpointRef | None:
    """The newest of ``refs`` whose files match their manifest's list and sizes; the ones that fail are
    skipped with a warning naming the file."""
    for ref in reversed(refs):
        try:
            verify_checkpoint(ref.uri, content=False)
        except CheckpointError as e:
            logger.warning("skipping checkpoint %s: %s", ref.uri, e)
            continue
        return ref
    return None


def find_latest_checkpoint(outputs: str, model_type: str | None = None) -> CheckpointRef | None:
    """Newest complete, verified checkpoint under ``outputs``: the highest global step of the newest
    experiment folder (``NNN-model``, optionally only ``model_type``'s) that holds one; ``outputs`` may also be
    an experiment folder itself. Checkpoints whose files fail the manifest check are skipped (warning)."""
    own = newest_verified(list_checkpoints(outputs))
    if own is not None:
        return own
    wanted = model_folder_name(model_type) if model_type else None
    experiments = []
    for name in _children(outputs):
        parsed = parse_experiment_name(name)
        if parsed and (wanted is None or parsed[1] == wanted):
            experiments.append((parsed[0], name))
    for _, name in sorted(experiments, reverse=True):
        ref = newest_verified(list_checkpoints(storage.join(outputs, name)))
        if ref is not None:
            return ref
    return None


def resolve_load(load: str, outputs: str, model_type: str | None = None) -> str:
    """The checkpoint URI for ``--load``: ``latest`` (newest complete one under ``outputs``), a checkpoint
    folder, or an experiment folder (its newest complete checkpoint). Raises CheckpointError otherwise."""
    if load == "latest":
        ref = find_latest_checkpoint(outputs, model_type)
        if ref is None:
            raise CheckpointError(
                f"--load latest: no complete checkpoint under {outputs} "
                f"(for model {model_type!r}); train once without --load first"
            )
        return ref.uri
    if not storage.exists(load):
        raise CheckpointError(f"--load {load}: no such checkpoint folder")
    if is_complete(load):
        return load
    if parse_checkpoint_name(basename(load)) is not None:
        raise CheckpointError(
            f"--load {load}: the checkpoint is incomplete (no {COMPLETE_MARKER} marker; the save was "
            "interrupted); load an earlier checkpoint of the same experiment"
        )
    ref = find_latest_checkpoint(load)
    if ref is None:
        raise CheckpointError(f"--load {load}: neither a complete checkpoint nor a folder holding one")
    return ref.uri
