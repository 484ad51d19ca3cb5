"""Where pretrained VAE / text-encoder weights come from, and one clear error when they are missing.

A ``from_pretrained`` value is one of
- a debug id (``debug/tiny-t5``, ``debug/tiny-clip``, ``debug/tiny-vae``, ...): a tiny model built in code
  (see :mod:`opensora_core.models.tiny`), no files, no network;
- a local folder holding a Hugging Face model (``config.json`` + weights);
- a Hugging Face hub id (``org/name``), resolved through the hub cache (``cache_dir``) and downloaded unless
  ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``.

Hub and transformers failures (missing repo, missing file, offline mode, no network) are turned into one
:class:`ModelNotFoundError` that names the id and says how to fetch it, instead of a long traceback.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from opensora_core.errors import ConfigError

T = TypeVar("T")

DEBUG_PREFIX = "debug/"


class ModelNotFoundError(FileNotFoundError):
    """A pretrained model (hub id or local folder) could not be found or loaded from disk/cache."""


def env_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value (read at call time)."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def is_debug_id(name: str) -> bool:
    """True for the in-code tiny model ids (``debug/...``)."""
    return name.startswith(DEBUG_PREFIX)


def looks_like_local_path(name: str) -> bool:
    """True when ``name`` is meant as a filesystem path rather than a hub id ``org/name``."""
    if os.path.exists(os.path.expanduser(name)):
        return True
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def fetch_hint(name: str) -> str:
    """Shell lines that download ``name`` into a local folder usable as ``from_pretrained``."""
    folder = f"pretrained_models/{name.rstrip('/').split('/')[-1]}"
    return (
        f"  hf download {name} --local-dir {folder}\n"
        f"  (older huggingface_hub: huggingface-cli download {name} --local-dir {folder})\n"
        f"then set from_pretrained='{folder}' (a local folder), or set cache_dir to a hub cache that "
        f"already holds it"
    )


def missing_model_error(
    name: str, what: str, reason: str, subfolder: str | None = None
) -> ModelNotFoundError:
    """Build the single, actionable error raised when ``name`` cannot be loaded."""
    where = f"{name}" + (f" (subfolder '{subfolder}')" if subfolder else "")
    if looks_like_local_path(name):
        how = (
            f"Point from_pretrained at a folder holding config.json and the weights, e.g. one written by\n"
            f"  hf download <hub-id> --local-dir {name}\n"
            f"or use a hub id (org/name)."
        )
    else:
        offline = (
            " Offline mode is on (HF_HUB_OFFLINE / local_files_only), so nothing was downloaded."
            if (env_offline())
            else ""
        )
        how = (
            f"It is not in the local hub cache and could not be downloaded.{offline} Fetch it with:\n"
            + fetch_hint(name)
        )
    return ModelNotFoundError(f"{what} '{where}' could not be loaded: {reason}\n{how}")


def resolve_local_folder(
    name: str, subfolder: str | None, what: str, legacy_children: tuple[str, ...] = ()
) -> Path:
    """Return the model folder for a local ``from_pretrained`` path (applying ``subfolder``).

    ``legacy_children``: sub-folder names tried when the folder itself has no ``config.json`` (Open-Sora 1.0
    configs pointed at ``./pretrained_models/t5_ckpts`` which holds ``t5-v1_1-xxl/``).
    """
    root = Path(os.path.expanduser(name))
    if not root.exists():
        raise missing_model_error(name, what, "the folder does not exist", subfolder)
    folder = root / subfolder if subfolder else root
    if not folder.is_dir():
        raise missing_model_error(name, what, f"'{folder}' is not a folder", subfolder)
    if not (folder / "config.json").is_file():
        for child in legacy_children:
            if (folder / child / "config.json").is_file():
                return folder / child
        present = sorted(p.name for p in folder.iterdir())[:12]
        raise missing_model_error(
            name, what, f"'{folder}' has no config.json (it holds: {present or 'nothing'})", subfolder
        )
    return folder


def call_hub(
    loader: Callable[..., T], name: str, what: str, subfolder: str | None = None, **kwargs: Any
) -> T:
    """Run ``loader(name, **kwargs)`` (a ``from_pretrained``), mapping "not found" failures to one clear error."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return loader(name, **kwargs)
    except (OSError, EntryNotFoundError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise missing_model_error(name, what, first_line, subfolder) from None


def hub_kwargs(cache_dir: str | None, local_files_only: bool, subfolder: str | None) -> dict[str, Any]:
    """Keyword arguments shared by every ``from_pretrained`` call (offline env honoured at call time)."""
    kwargs: dict[str, Any] = {"local_files_only": bool(local_files_only or env_offline())}
    if cache_dir is not None:
        kwargs["cache_dir"] = os.path.expanduser(cache_dir)
    if subfolder:
        kwargs["subfolder"] = subfolder
    return kwargs


def parse_typed_config(
    cfg: Mapping[str, Any] | BaseModel, choices: Mapping[str, type[BaseModel]], section: str
) -> BaseModel:
    """Validate ``cfg`` (a dict with a ``type`` key, or an already-built config) against ``choices``.

    Errors are a :class:`~opensora_core.config.errors.ConfigError` whose source is ``section``; they name the
    field and suggest close spellings for unknown types and keys.
    """
    if isinstance(cfg, BaseModel):
        if type(cfg) in choices.values():
            return cfg
        cfg = cfg.model_dump()
    if not isinstance(cfg, Mapping):
        raise ConfigError(section, [f"{section} must be a dict with a 'type' key, got {type(cfg).__name__}"])
    kind = cfg.get("type")
    if kind not in choices:
        same_case = [c for c in choices if c.lower() == str(kind).lower()]
        close = same_case or difflib.get_close_matches(str(kind), list(choices), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(section, [f"{section}.type={kind!r} is not known; choose one of {sorted(choices)}.{hint}"])
    model_cls = choices[kind]
    known = set(model_cls.model_fields)
    unknown = [k for k in cfg if k not in known]
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            parts.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            section, [f"{section} (type={kind!r}) has unknown keys {', '.join(parts)}; allowed: {sorted(known)}"]
        )
    try:
        return model_cls.model_validate(dict(cfg))
    except ValidationError as err:
        lines = [f"{section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{section} (type={kind!r})", lines) from None
