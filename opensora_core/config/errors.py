"""`ConfigError` (defined in :mod:`opensora_core.errors`) and the translation of pydantic errors into one-line, path-named problems."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from opensora_core.config.hints import join_path
from opensora_core.errors import ConfigError as ConfigError  # re-exported: the config package raises it

# pydantic error types already reported (better) by the key pre-check in the loader.
_PRECHECKED = {"extra_forbidden", "union_tag_invalid", "union_tag_not_found"}
_UNION_FIELDS = ("model", "vae", "text_encoder", "scheduler", "dataset")


def _drop_union_tag(loc: tuple[Any, ...], raw: dict[str, Any]) -> tuple[Any, ...]:
    """pydantic puts the discriminator value into locations (model -> 'STDiT-XL/2' -> depth); drop it."""
    if len(loc) >= 2 and loc[0] in _UNION_FIELDS:
        section = raw.get(loc[0])
        if isinstance(section, dict) and section.get("type") == loc[1]:
            return (loc[0], *loc[2:])
    return loc


def _describe_input(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def validation_problems(err: ValidationError, raw: dict[str, Any], skip_prechecked: bool = True) -> list[str]:
    """Turn a pydantic ValidationError into messages like "batch_size: expected a valid integer, got 'x' (str)"."""
    problems: list[str] = []
    for e in err.errors(include_url=False):
        if skip_prechecked and e["type"] in _PRECHECKED:
            continue
        loc = _drop_union_tag(tuple(e["loc"]), raw)
        path = join_path(*loc)
        msg: str = e["msg"]
        if e["type"] == "value_error":
            # our own validators: the message already names the fields; may hold several lines
            text = msg.removeprefix("Value error, ")
            problems.extend(
                f"{path}: {line}" if path and not line.startswith(path) else line for line in text.split("\n")
            )
            continue
        if e["type"] == "missing" and loc and isinstance(loc[-1], int):
            problems.append(f"{join_path(*loc[:-1])}: too few values (item [{loc[-1]}] is missing)")
            continue
        if e["type"] == "missing":
            problems.append(f"{path}: required key is missing")
            continue
        msg = msg.replace("Input should be", "expected", 1)
        problems.append(f"{path}: {msg}, got {_describe_input(e.get('input'))}")
    return problems


def unique(problems: Iterable[str]) -> list[str]:
    """Problems without duplicates, in first-seen order."""
    return list(dict.fromkeys(problems))
