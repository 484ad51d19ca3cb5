"""Reading and loading model checkpoints (official Open-Sora / PixArt / DiT / Latte files and our own).

``read_state_dict`` accepts plain state dicts, wrappers (``{"ema": ...}``, ``{"state_dict": ...}``,
``{"model": ...}``, ``{"module": ...}``), ``.safetensors`` files and Hugging Face folders, and strips
``module.`` / ``model.`` prefixes. Pickled files are only read with ``torch.load(weights_only=True)``: a file
that needs arbitrary code to unpickle is refused.

``load_checkpoint`` adapts official checkpoints the way the reference loaders do: 2-D patch-embedding weights
[C, in, p, p] become [C, in, 1, p, p], positional buffers are never taken from the checkpoint (they are
recomputed from the model config), and the null caption ``y_embedder.y_embedding`` is padded (repeating the
last row) or truncated to the model's ``model_max_length``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "POSITIONAL_KEYS",
    "UnsafeCheckpointError",
    "adapt_state_dict",
    "load_checkpoint",
    "normalize_state_dict",
    "read_state_dict",
]

logger = logging.getLogger(__name__)

POSITIONAL_KEYS = frozenset({"pos_embed", "pos_embed_temporal", "pos_embed_spatial", "temp_embed"})
WRAPPER_KEYS = ("ema", "state_dict", "model", "module")
PREFIXES = ("module.", "model.")
HF_WEIGHT_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin")


class UnsafeCheckpointError(RuntimeError):
    """A pickled checkpoint that cannot be read without executing arbitrary code."""


def _torch_load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        detail = f"it references {found.group(1)}" if found else str(exc).strip().splitlines()[0]
        raise UnsafeCheckpointError(
            f"refusing to load {path}: unpickling it needs arbitrary code execution ({detail}). "
            "Only weights-only pickles and .safetensors files are read. Convert the file to safetensors in a "
            "trusted environment (safetensors.torch.save_file(state_dict, 'model.safetensors'))."
        ) from exc


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _read_folder(folder: Path) -> Any:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        merged: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            merged.update(_load_safetensors(folder / shard))
        return merged
    for name in HF_WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return (
                _load_safetensors(path) if path.suffix == ".safetensors" else _torch_load_weights_only(path)
            )
    found = sorted(p.name for p in folder.iterdir())[:20]
    raise FileNotFoundError(
        f"{folder} is a folder without model weights: expected one of {', '.join(HF_WEIGHT_FILES)} or "
        f"model.safetensors.index.json (found: {', '.join(found) or 'nothing'})"
    )


def normalize_state_dict(obj: Any, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Unwrap ``ema`` / ``state_dict`` / ``model`` / ``module`` wrappers and strip ``module.``/``model.``
    prefixes (when every key has them). Raises ValueError if no tensor mapping is found."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:10]
            raise ValueError(
                f"{source}: not a state dict (entries {bad} are not tensors) and none of the wrapper keys "
                f"{list(WRAPPER_KEYS)} holds one"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{source}: expected a mapping of parameter names to tensors, got {type(obj).__name__}"
        )
    state = dict(obj)
    changed = True
    while changed and state:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint file or Hugging Face folder into a flat ``{name: tensor}`` dict on CPU."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    if p.is_dir():
        obj = _read_folder(p)
    elif p.suffix == ".safetensors":
        obj = _load_safetensors(p)
    else:
        obj = _torch_load_weights_only(p)
    return normalize_state_dict(obj, source=str(p))


def _fit_null_caption(key: str, value: torch.Tensor, length: int) -> torch.Tensor:
    if value.shape[0] < length:
        logger.info("%s: padding %d -> %d rows (repeating the last row)", key, value.shape[0], length)
        pad = value[-1:].expand(length - value.shape[0], -1)
        return torch.cat([value, pad], dim=0)
    logger.info("%s: truncating %d -> %d rows", key, value.shape[0], length)
    return value[:length]


def _strip_prefix_to_match(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Strip ``model.``/``module.`` from the keys that have it when that matches more model keys (files that
    hold a prefixed model next to other tensors, e.g. a parity file with ``io.*`` entries)."""
    best, best_hits = state, len(target_keys.intersection(state))
    for prefix in PREFIXES:
        cand = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
        hits = len(target_keys.intersection(cand))
        if hits > best_hits and len(cand) == len(state):
            best, best_hits = cand, hits
    return best


def adapt_state_dict(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fit an official state dict to a model's state dict ``target`` (names -> tensors with target shapes).

    Drops positional buffers, widens 2-D patch convs to 3-D, pads/truncates ``y_embedding``; raises
    ValueError naming the key and both shapes on any other shape mismatch.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in POSITIONAL_KEYS:
            continue
        ref = target.get(key)
        if ref is None or tuple(value.shape) == tuple(ref.shape):
            out[key] = value
            continue
        want, have = tuple(ref.shape), tuple(value.shape)
        if len(want) == 5 and len(have) == 4 and want[2] == 1 and have == want[:2] + want[3:]:
            value = value.unsqueeze(2)  # 2-D patch conv [C, in, p, p] -> [C, in, 1, p, p]
        elif key.endswith("y_embedding") and len(want) == len(have) == 2 and want[1] == have[1]:
            value = _fit_null_caption(key, value, want[0])
        else:
            raise ValueError(
                f"checkpoint key {key!r} has shape {list(have)} but the model expects {list(want)}; "
                "check the model arguments (hidden_size, patch_size, in_channels, caption_channels, ...)"
            )
        out[key] = value
    return out


def load_checkpoint(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    strict: bool = False,
) -> tuple[list[str], list[str]]:
    """Load a checkpoint (path or state dict) into ``model``; returns ``(missing, unexpected)`` key names.

    Missing positional buffers are expected (recomputed) and not reported. Both lists are logged. With
    ``strict=True`` any missing or unexpected key raises RuntimeError.
    """
    if isinstance(path_or_state_dict, str | os.PathLike):
        source = str(path_or_state_dict)
        state = read_state_dict(path_or_state_dict)
    else:
        source = "state dict"
        state = normalize_state_dict(path_or_state_dict)
    target = model.state_dict()
    state = adapt_state_dict(_strip_prefix_to_match(state, set(target)), target)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in POSITIONAL_KEYS]
    unexpected = list(result.unexpected_keys)
    if missing:
        logger.warning("%s: missing keys (kept at their initial values): %s", source, missing)
    if unexpected:
        logger.warning("%s: unexpected keys (ignored): %s", source, unexpected)
    logger.info("loaded %d tensors from %s into %s", len(state), source, type(model).__name__)
    if strict and (missing or unexpected):
        raise RuntimeError(
            f"{source}: strict load failed; missing keys {missing}, unexpected keys {unexpected}"
        )
    return missing, unexpected
