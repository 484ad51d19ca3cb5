"""Load Open-Sora-style `.py` configs (and our JSON dumps) into a validated `RunConfig`.

A `.py` config is the user's own code, as with mmengine's `Config.fromfile`: it is executed in a fresh
namespace and its module-level public values become the raw config (modules, functions, classes and names
starting with `_` are dropped). `_base_ = "base.py"` or a list of files (paths relative to the config) are
loaded first and merged key by key; a dict with `_delete_=True` replaces the inherited dict instead of
merging into it.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import runpy
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ValidationError

from opensora_core.config.errors import ConfigError, unique, validation_problems
from opensora_core.config.hints import (
    SECRET_HINT,
    UPSTREAM_TOOL_MARK,
    closest,
    did_you_mean,
    is_secret_key,
    upstream_tool_problem,
)
from opensora_core.config.schema import RunConfig
from opensora_core.config.sections import UNION_SECTIONS, TrackingConfig

Overrides = Mapping[str, Any] | Sequence[str] | None

# Open-Sora 1.0 configs keep the dataset at top level; they become dataset=dict(type="DatasetFromCSV", ...).
LEGACY_DATASET_KEYS = ("data_path", "root", "use_image_transform")
_COPIED_SIZE_KEYS = ("num_frames", "frame_interval", "image_size")
_NESTED_SECTIONS: dict[str, type[BaseModel]] = {"tracking": TrackingConfig}


# ------------------------------------------------------------------------------------- reading files


def _public_values(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Module-level values a config defines: no dunders/underscore names, modules, functions or classes."""
    skip = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type)
    return {k: v for k, v in namespace.items() if not k.startswith("_") and not isinstance(v, skip)}


def _merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge `new` into a copy of `base` (dicts merge; `_delete_=True` replaces)."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and not value.get("_delete_"):
            out[key] = _merge(dict(out[key]), value)
        elif isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        else:
            out[key] = value
    return out


def _exec_py(path: Path) -> dict[str, Any]:
    try:
        return runpy.run_path(str(path), run_name="__opensora_config__")
    except SyntaxError as e:
        raise ConfigError(str(path), [f"line {e.lineno}: syntax error: {e.msg}"]) from e
    except Exception as e:  # noqa: BLE001 - any failure of user code is a config problem
        raise ConfigError(str(path), [f"executing the config raised {type(e).__name__}: {e}"]) from e


def read_config_file(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a `.py` (Open-Sora style, with `_base_` inheritance) or `.json` config into a raw dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["file not found"])
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(str(path), [f"_base_ inheritance loops: {chain}"])
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(str(path), [f"invalid JSON: {e}"]) from e
        if not isinstance(data, dict):
            raise ConfigError(str(path), ["a JSON config must be an object"])
        return data
    if path.suffix != ".py":
        raise ConfigError(str(path), ["configs are .py (Open-Sora style) or .json files"])
    namespace = _exec_py(path)
    bases = namespace.get("_base_", [])
    bases = [bases] if isinstance(bases, str | os.PathLike) else list(bases)
    raw: dict[str, Any] = {}
    for base in bases:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        raw = _merge(raw, read_config_file(base_path, (*_seen, resolved)))
    return _merge(raw, _public_values(namespace))


# ----------------------------------------------------------------------------------------- overrides


def parse_override_value(text: str) -> Any:
    """Parse a `--cfg-options` value: a Python literal when it is one (1e-4, (1, 2), None), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        lowered = text.strip().lower()
        return {"true": True, "false": False, "none": None, "null": None}.get(lowered, text)


def split_key_value(item: str, what: str, example: str = "") -> tuple[str, str]:
    """``"a.b=c"`` -> ``("a.b", "c")`` (the key stripped, the value as given); ValueError naming ``what`` (the
    flag or field, e.g. ``"--tag"``) and ``example`` when there is no ``=`` or no key."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        hint = f" (e.g. {example})" if example else ""
        raise ValueError(f"{what} {item!r} must look like KEY=VALUE{hint}")
    return key.strip(), value


def overrides_to_dict(overrides: Overrides, source: str = "--cfg-options") -> dict[str, Any]:
    """Normalise overrides (a dict of dotted keys, or "a.b=c" strings) into {dotted key: value}."""
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    if isinstance(overrides, str):
        overrides = [overrides]
    out: dict[str, Any] = {}
    bad = []
    for item in overrides:
        try:
            key, value = split_key_value(str(item), source, "model.depth=2")
        except ValueError as exc:
            bad.append(str(exc))
            continue
        out[key] = parse_override_value(value)
    if bad:
        raise ConfigError(source, bad)
    return out


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Set every dotted key of `overrides` in `raw` (in place); return problems (paths through non-dicts)."""
    problems = []
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override {dotted}: {'.'.join(parts[: i + 1])} is {child!r}, not a dict")
                break
            node = child
        else:
            last = parts[-1]
            node[last] = _merge(node, {last: copy.deepcopy(value)})[last]
    return problems


# ----------------------------------------------------------------------------------- normalisation


def normalize_legacy(raw: dict[str, Any]) -> None:
    """Move Open-Sora 1.0 top-level dataset keys (data_path, root, use_image_transform) into `dataset`."""
    legacy = {k: raw.pop(k) for k in LEGACY_DATASET_KEYS if k in raw}
    if not legacy:
        return
    dataset = raw.get("dataset")
    if isinstance(dataset, dict):
        dataset.update(legacy)
        return
    dataset = {"type": "DatasetFromCSV"}
    dataset.update({k: raw[k] for k in _COPIED_SIZE_KEYS if raw.get(k) is not None})
    dataset.update(legacy)
    raw["dataset"] = dataset


# -------------------------------------------------------------------------------------- key checks


def _valid_keys(cls: type[BaseModel]) -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys.extend(c for c in alias.choices if isinstance(c, str) and c != name)
    return keys


def _alias_groups(cls: type[BaseModel]) -> list[list[str]]:
    groups = []
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            groups.append([name, *(c for c in alias.choices if isinstance(c, str) and c != name)])
    return groups


def _secret_problems(value: Any, path: str) -> list[str]:
    problems = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if is_secret_key(k):
                problems.append(f"{sub}: {SECRET_HINT}")
            else:
                problems.extend(_secret_problems(v, sub))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            problems.extend(_secret_problems(v, f"{path}[{i}]"))
    elif isinstance(value, str) and "://" in value:
        try:
            has_password = urlsplit(value).password is not None
        except ValueError:
            has_password = False
        if has_password:
            problems.append(f"{path}: the URL carries a password; {SECRET_HINT}")
    return problems


def _section_key_problems(
    section: str, value: Mapping[str, Any], cls: type[BaseModel], overridden: set[str]
) -> list[str]:
    problems = []
    valid = _valid_keys(cls)
    for key in value:
        if key not in valid:
            dotted = f"{section}.{key}"
            tool = upstream_tool_problem(dotted)
            if tool:
                problems.append(tool)
                continue
            hint = did_you_mean(str(key), valid, prefix=f"{section}.")
            of_type = f" of {section} type {value['type']!r}" if "type" in value else ""
            listing = "" if hint else f" (valid keys{of_type}: {', '.join(valid)})"
            origin = " (set by an override)" if dotted in overridden else ""
            problems.append(f"{dotted}: unknown key{origin}{hint}{listing}")
    for group in _alias_groups(cls):
        present = [k for k in group if k in value]
        if len(present) > 1:
            problems.append(f"{section}: {' and '.join(present)} are the same setting; give only {group[0]}")
    return problems


def precheck(raw: Mapping[str, Any], overridden: set[str] | None = None) -> list[str]:
    """Report unknown keys (with "did you mean") and unknown section types before validation."""
    overridden = overridden or set()
    problems: list[str] = []
    top_valid = _valid_keys(RunConfig)
    for key in raw:
        if key in top_valid:
            continue
        tool = upstream_tool_problem(str(key))
        if tool:
            problems.append(tool)
            continue
        origin = " (set by an override)" if key in overridden else ""
        owners = [
            s
            for s, types_ in UNION_SECTIONS.items()
            if isinstance(raw.get(s), Mapping)
            and key in _valid_keys(types_.get(raw[s].get("type"), BaseModel))
        ]
        if owners:
            hint = f"; did you mean '{owners[0]}.{key}'?"
        else:
            hint = did_you_mean(str(key), top_valid)
        problems.append(f"{key}: unknown top-level key{origin}{hint}")
    for section, types_ in UNION_SECTIONS.items():
        value = raw.get(section)
        if not isinstance(value, Mapping):
            continue
        valid_types = list(dict.fromkeys(types_))
        kind = value.get("type")
        if kind is None:
            problems.append(f"{section}.type: required key is missing; one of: {', '.join(valid_types)}")
            continue
        if kind not in types_:
            tool = upstream_tool_problem(f"{section}.type={kind}")
            if tool:
                problems.append(tool)
                continue
            best = closest(str(kind), valid_types)
            hint = f"; did you mean {best!r}?" if best else ""
            problems.append(
                f"{section}.type: unknown {section} type {kind!r}{hint} (valid types: {', '.join(valid_types)})"
            )
            continue
        problems.extend(_section_key_problems(section, value, types_[kind], overridden))
    for section, cls in _NESTED_SECTIONS.items():
        value = raw.get(section)
        if isinstance(value, Mapping):
            problems.extend(_section_key_problems(section, value, cls, overridden))
    return problems


# ------------------------------------------------------------------------------------------- public


def config_from_dict(
    raw: Mapping[str, Any], overrides: Overrides = None, source: str = "<dict>"
) -> RunConfig:
    """Validate a raw config dict (plus overrides) into a RunConfig; raise ConfigError naming `source`."""
    data = copy.deepcopy(dict(raw))
    normalize_legacy(data)
    override_map = overrides_to_dict(overrides)
    problems = apply_overrides(data, override_map)
    normalize_legacy(data)
    secrets = _secret_problems(data, "")
    if secrets:  # stop here: nothing else matters until the secret is gone
        raise ConfigError(source, secrets)
    problems += precheck(data, set(override_map))
    tools = [p for p in problems if UPSTREAM_TOOL_MARK in p]
    if tools:  # a config of an upstream tool we do not have: the rest of its problems would only be noise
        raise ConfigError(source, unique(tools))
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        problems += validation_problems(e, data)
        cfg = None
    if problems or cfg is None:
        raise ConfigError(source, unique(problems) or ["invalid config"])
    return cfg


def load_config(path: str | os.PathLike[str], overrides: Overrides = None) -> RunConfig:
    """Load an Open-Sora-style `.py` config (or a `.json` dump) and apply overrides.

    overrides: a dict of dotted keys ({"model.depth": 2}) or a list of "a.b=c" strings (values parsed as
    Python literals, otherwise kept as strings), i.e. `--cfg-options`. Raises ConfigError (a ValueError)
    whose message names the file and each problem with its dotted key.
    """
    raw = read_config_file(path)
    return config_from_dict(raw, overrides, source=str(path))
