"""`Entry`: one row of a component table, name -> (config class, builder, capabilities).

Every kind of component has one table, a dict literal in one light module next to the component code:

    opensora_core/models/registry.py                MODELS         diffusion transformers
    opensora_core/models/vae_registry.py            VAES           latent autoencoders
    opensora_core/models/text_encoder_registry.py   TEXT_ENCODERS  prompt encoders
    opensora_core/schedulers/registry.py            SCHEDULERS     diffusion schedulers / samplers
    opensora_core/parallel/registry.py              BACKENDS       training backends (`plugin`)

The config package builds `RunConfig`'s `type` unions and the `plugin` choices from these tables, and the
builders, trainer, sampler and parallel code read capabilities from them. Builders are named by dotted path
and imported on first use, so reading a table imports pydantic only (never torch).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

CapsT = TypeVar("CapsT")


@dataclass(frozen=True)
class Entry(Generic[CapsT]):
    """One registered component.

    config: the pydantic config class validating its section (None when its settings are top-level keys).
    builder: ``"package.module:attribute"`` of the callable that builds it, imported by :meth:`load_builder`.
    caps: what it can do (a per-kind frozen dataclass).
    defaults: keyword arguments the builder gets unless the config sets them (model sizes).
    """

    config: type[BaseModel] | None
    builder: str
    caps: CapsT
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def load_builder(self) -> Callable[..., Any]:
        """Import and return the builder (this is where the heavy component module is loaded)."""
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)


def closest_name(name: str, names: Mapping[str, Any] | list[str]) -> str | None:
    """The registered name closest to ``name`` (same-case first, then difflib), or None."""
    names = list(names)
    same_case = [n for n in names if n.lower() == str(name).lower()]
    close = same_case or difflib.get_close_matches(str(name), names, n=1)
    return close[0] if close else None


def lookup(table: Mapping[str, Entry[CapsT]], name: str, kind: str) -> Entry[CapsT]:
    """``table[name]``, or ValueError naming the valid names of this kind only (with a did-you-mean)."""
    if name in table:
        return table[name]
    best = closest_name(name, list(table))
    hint = f"; did you mean {best!r}?" if best else ""
    raise ValueError(f"unknown {kind} type {name!r}{hint} (valid types: {sorted(table)})")


def config_classes(table: Mapping[str, Entry[Any]]) -> tuple[type[BaseModel], ...]:
    """The distinct config classes of a table, in table order (one class may serve several names)."""
    return tuple(dict.fromkeys(e.config for e in table.values() if e.config is not None))
