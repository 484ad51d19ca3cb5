"""Training checkpoints: layout, atomic save (local or ``s3://``), retention, discovery and fetching.

Layout (``{outputs}/{NNN}-{model name, / -> -}/epoch{E}-global_step{G}/``)::

    model.safetensors      consolidated fp32 model state dict (official Open-Sora keys)
    ema.safetensors        fp32 EMA weights (absent when EMA is off)
    optimizer.pt           optimizer (+ loss scaler) state, written by the backend (sharded backends: per rank)
    sampler.json           data sampler state (epoch and position)
    rng/rank00000.pt ...   RNG states of every rank (torch, numpy, python, cuda)
    running_states.json    epoch, step, global_step, sample_start_index, mlflow_run_id, world_size, ...
    config.py, config.json the resolved RunConfig
    _COMPLETE              written last: only folders holding it count as checkpoints

Atomicity. Local: every rank writes into ``.{name}.partial`` next to the final folder, files are fsynced,
rank 0 adds ``_COMPLETE`` and renames the folder into place (then fsyncs the parent), so a crash at any
moment leaves either the previous state or the complete new checkpoint; earlier checkpoints are never touched.
``s3://``: every rank writes into a private local staging folder and uploads it (objects appear one by one),
then rank 0 uploads ``_COMPLETE`` last; readers ignore prefixes without it. Local folders assume a file system
shared by all ranks (as the reference); ``s3://`` works across nodes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from opensora_core.io import storage

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "_COMPLETE"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
RUNNING_STATES_FILE = "running_states.json"
SAMPLER_FILE = "sampler.json"
RNG_DIR = "rng"
_CKPT_RE = re.compile(r"^epoch(\d+)-global_step(\d+)$")
_EXP_RE = re.compile(r"^(\d{3,})-(.+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (the message names the folder and the cause)."""


class _Env(Protocol):
    """What checkpointing needs from a DistEnv (tests may pass a single-process stand-in)."""

    rank: int
    local_rank: int
    is_distributed: bool

    def barrier(self) -> None:
        """Wait for every rank."""

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", group: Any = None) -> torch.Tensor:
        """In-place all-reduce."""


@dataclass(frozen=True)
class CheckpointRef:
    """A complete checkpoint found in an experiment folder."""

    uri: str
    epoch: int
    global_step: int


# ----------------------------------------------------------------------------------------------- names


def checkpoint_name(epoch: int, global_step: int) -> str:
    """``epoch{E}-global_step{G}`` (the reference's folder name)."""
    return f"epoch{int(epoch)}-global_step{int(global_step)}"


def parse_checkpoint_name(name: str) -> tuple[int, int] | None:
    """``(epoch, global_step)`` of a checkpoint folder name, or None."""
    m = _CKPT_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def model_folder_name(model_type: str) -> str:
    """``STDiT-XL/2`` -> ``STDiT-XL-2``."""
    return model_type.replace("/", "-")


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _children(uri: str) -> list[str]:
    """Names of the direct sub-folders of a local folder or an ``s3://`` prefix ([] when absent)."""
    u = storage.parse_uri(uri)
    if u.is_local:
        p = u.local_path
        return sorted(c.name for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
    return sorted(_basename(c) for c in storage.list_uri(uri, recursive=False) if c.endswith("/"))


def next_experiment_dir(outputs: str, model_type: str) -> str:
    """``{outputs}/{NNN}-{model}`` with NNN one above the highest existing experiment index (000 first)."""
    indices = [int(m.group(1)) for name in _children(outputs) if (m := _EXP_RE.match(name))]
    index = max(indices) + 1 if indices else 0
    return storage.join(outputs, f"{index:03d}-{model_folder_name(model_type)}")


def is_complete(uri: str) -> bool:
    """True when the checkpoint folder holds the ``_COMPLETE`` marker."""
    return storage.exists(storage.join(uri, COMPLETE_MARKER))


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


def find_latest_checkpoint(outputs: str, model_type: str | None = None) -> CheckpointRef | None:
    """Newest complete checkpoint under ``outputs``: the highest global step of the newest experiment
    folder (``NNN-model``, optionally only ``model_type``'s) that holds one; ``outputs`` may also be an
    experiment folder itself."""
    own = list_checkpoints(outputs)
    if own:
        return own[-1]
    wanted = model_folder_name(model_type) if model_type else None
    experiments = []
    for name in _children(outputs):
        m = _EXP_RE.match(name)
        if m and (wanted is None or m.group(2) == wanted):
            experiments.append((int(m.group(1)), name))
    for _, name in sorted(experiments, reverse=True):
        refs = list_checkpoints(storage.join(outputs, name))
        if refs:
            return refs[-1]
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
    if parse_checkpoint_name(_basename(load)) is not None:
        raise CheckpointError(
            f"--load {load}: the checkpoint is incomplete (no {COMPLETE_MARKER} marker; the save was "
            "interrupted); load an earlier checkpoint of the same experiment"
        )
    ref = find_latest_checkpoint(load)
    if ref is None:
        raise CheckpointError(f"--load {load}: neither a complete checkpoint nor a folder holding one")
    return ref.uri


# ----------------------------------------------------------------------------------------- file helpers


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to disk (best effort on file systems without it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON and fsync it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def save_safetensors(
    state: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict as safetensors (contiguous CPU tensors) and fsync it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata=metadata)
    fsync_file(path)
    return path


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file onto the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON file, naming the file on failure."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


# ----------------------------------------------------------------------------------------- collectives


def _agree(env: _Env, ok: bool) -> bool:
    """True on every rank only if ``ok`` is True on every rank."""
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if env.is_distributed:
        flag = _on_comm_device(env, flag)
        env.all_reduce(flag, op="sum")
    return int(flag.item()) == 0


def _on_comm_device(env: Any, t: torch.Tensor) -> torch.Tensor:
    device = getattr(env, "device", torch.device("cpu"))
    return t.to(device) if getattr(env, "backend", None) == "nccl" else t


def _run_agreed(env: _Env, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on this rank; raise CheckpointError on every rank if it failed on any rank."""
    error: BaseException | None = None
    result = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - reported to every rank below
        error = e
        logger.error("rank %d: %s failed: %s: %s", env.rank, what, type(e).__name__, e)
    if not _agree(env, error is None):
        if error is not None:
            raise CheckpointError(
                f"{what} failed on rank {env.rank}: {type(error).__name__}: {error}"
            ) from error
        raise CheckpointError(f"{what} failed on another rank (see its log)")
    return result


# ---------------------------------------------------------------------------------------------- saving


def save_checkpoint(
    env: _Env,
    exp_dir: str,
    name: str,
    write: Callable[[Path], Any],
    keep_last_n: int | None = None,
    staging_root: str | os.PathLike[str] | None = None,
    marker: dict[str, Any] | None = None,
) -> str:
    """Write checkpoint ``exp_dir/name`` atomically; every rank calls this (collective).

    ``write(folder)`` runs on every rank and writes that rank's files into ``folder`` (a shared partial folder
    for local ``exp_dir``, a private staging folder for ``s3://``). Returns the checkpoint URI. On failure on
    any rank the partial folder is removed and CheckpointError is raised on every rank; earlier checkpoints
    are untouched. ``keep_last_n`` then deletes the oldest complete checkpoints beyond N.
    """
    if storage.parse_uri(exp_dir).is_local:
        uri = _save_local(env, exp_dir, name, write, marker or {})
    else:
        uri = _save_remote(env, exp_dir, name, write, staging_root, marker or {})
    if keep_last_n and env.rank == 0:
        try:
            apply_retention(exp_dir, keep_last_n, keep={uri})
        except Exception as e:  # noqa: BLE001 - retention never fails a run
            logger.warning("checkpoint retention in %s failed: %s", exp_dir, e)
    env.barrier()
    return uri


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for fname in filenames:
            fsync_file(os.path.join(dirpath, fname))
        fsync_dir(dirpath)


def _marker_bytes(name: str, marker: dict[str, Any]) -> bytes:
    return (json.dumps({"checkpoint": name, **marker}, sort_keys=True) + "\n").encode()


def _save_local(env: _Env, exp_dir: str, name: str, write: Callable[[Path], Any], marker: dict) -> str:
    exp = storage.parse_uri(exp_dir).local_path
    final = exp / name
    partial = exp / f".{name}.partial"

    def prepare() -> None:
        if env.rank == 0:
            exp.mkdir(parents=True, exist_ok=True)
            if partial.exists():
                shutil.rmtree(partial)
            partial.mkdir()

    _run_agreed(env, f"preparing {partial}", prepare)
    try:
        _run_agreed(env, f"writing checkpoint {final}", lambda: write(partial))
    except CheckpointError:
        if env.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise

    def publish() -> None:
        if env.rank != 0:
            return
        (partial / COMPLETE_MARKER).write_bytes(_marker_bytes(name, marker))
        _fsync_tree(partial)
        old = exp / f".{name}.old"
        if final.exists():  # the same step saved again: swap, then drop the old copy
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(partial, final)
        fsync_dir(exp)
        if old.exists():
            shutil.rmtree(old)

    try:
        _run_agreed(env, f"publishing checkpoint {final}", publish)
    except CheckpointError:
        if env.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("saved checkpoint %s", final)
    return str(final)


def _save_remote(
    env: _Env,
    exp_dir: str,
    name: str,
    write: Callable[[Path], Any],
    staging_root: str | os.PathLike[str] | None,
    marker: dict,
) -> str:
    uri = storage.join(exp_dir, name)
    root = Path(staging_root or os.environ.get("OPENSORA_STAGING_DIR") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"ckpt-{name}-rank{env.rank}-", dir=root))

    def clear_previous() -> None:
        if env.rank == 0:  # an interrupted earlier attempt at the same name: drop it, marker first
            storage.remove(storage.join(uri, COMPLETE_MARKER), missing_ok=True)
            storage.remove(uri, recursive=True, missing_ok=True)

    try:
        _run_agreed(env, f"clearing {uri}", clear_previous)

        def write_and_upload() -> None:
            write(staging)
            if any(p.is_file() for p in staging.rglob("*")):
                storage.upload_dir(staging, uri)

        _run_agreed(env, f"writing checkpoint {uri}", write_and_upload)

        def publish() -> None:
            if env.rank == 0:
                storage.write_bytes(storage.join(uri, COMPLETE_MARKER), _marker_bytes(name, marker))

        _run_agreed(env, f"publishing checkpoint {uri}", publish)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved checkpoint %s", uri)
    return uri


def apply_retention(exp_dir: str, keep_last_n: int, keep: set[str] | None = None) -> list[str]:
    """Delete all but the newest ``keep_last_n`` complete checkpoints (never those in ``keep``).

    The ``_COMPLETE`` marker goes first, so a deletion cut short leaves a folder that no longer counts.
    Returns the removed URIs.
    """
    if keep_last_n < 1:
        raise ValueError(f"keep_last_n must be >= 1, got {keep_last_n}")
    refs = list_checkpoints(exp_dir)
    keep = keep or set()
    removed = []
    for ref in refs[: max(0, len(refs) - keep_last_n)]:
        if ref.uri in keep:
            continue
        storage.remove(storage.join(ref.uri, COMPLETE_MARKER), missing_ok=True)
        storage.remove(ref.uri, recursive=True, missing_ok=True)
        removed.append(ref.uri)
        logger.info("retention (keep_last_n=%d): removed %s", keep_last_n, ref.uri)
    return removed


# --------------------------------------------------------------------------------------------- loading


def fetch_checkpoint(env: _Env, uri: str, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """A local folder holding the checkpoint ``uri`` (collective).

    Local folders are returned as they are. ``s3://`` checkpoints are downloaded once per node (local rank 0)
    into ``$OPENSORA_CACHE_DIR`` (default: the temp folder) and reused while complete.
    """
    u = storage.parse_uri(uri)
    if u.is_local:
        if not (u.local_path / COMPLETE_MARKER).is_file():
            raise CheckpointError(f"{uri} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
        return u.local_path
    root = Path(cache_root or os.environ.get("OPENSORA_CACHE_DIR") or tempfile.gettempdir())
    digest = hashlib.sha1(uri.encode()).hexdigest()[:16]
    target = root / "opensora-checkpoints" / digest / _basename(uri)

    def download() -> None:
        if env.local_rank != 0 or (target / COMPLETE_MARKER).is_file():
            return
        if not is_complete(uri):
            raise CheckpointError(f"{uri} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
        if target.exists():
            shutil.rmtree(target)
        storage.download_dir(uri, target)

    _run_agreed(env, f"downloading {uri}", download)
    return target


def read_running_states(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``running_states.json`` of a local checkpoint folder."""
    return read_json(Path(folder) / RUNNING_STATES_FILE)


def rng_file(folder: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` keeps its RNG state in a checkpoint."""
    return Path(folder) / RNG_DIR / f"rank{rank:05d}.pt"
