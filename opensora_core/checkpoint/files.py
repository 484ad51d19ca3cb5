"""Local file helpers of the checkpoint format: fsynced JSON and safetensors files (torch loads on use)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opensora_core.checkpoint.errors import CheckpointError

if TYPE_CHECKING:
    import torch


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


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """fsync every file and folder under ``root``."""
    for dirpath, _, filenames in os.walk(root):
        for fname in filenames:
            fsync_file(os.path.join(dirpath, fname))
        fsync_dir(dirpath)


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


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON file, naming the file on failure."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e


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
