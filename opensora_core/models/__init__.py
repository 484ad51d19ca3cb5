"""The Open-Sora model zoo: ``build_model(name, **overrides)``.

Names, constructors, default arguments and capabilities are the entries of ``models.registry.MODELS``
(Open-Sora's registry: ``STDiT-XL/2`` = depth 28, hidden 1152, patch (1, 2, 2), 16 heads, ...). Overrides use Open-Sora's argument names; the legacy spelling ``enable_flashattn``
is accepted as an alias of ``enable_flash_attn``. ``from_pretrained=<path>`` loads a checkpoint with
``opensora_core.models.checkpoint.load_checkpoint`` after construction. Importing this package is cheap (no
torch): the config package reads the light ``*registry`` modules in it.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opensora_core.entry import lookup
from opensora_core.models.registry import MODELS

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_model", "model_names"]

logger = logging.getLogger(__name__)

# Legacy argument spellings -> current names.
_ALIASES = {"enable_flashattn": "enable_flash_attn"}


def model_names() -> list[str]:
    """All names ``build_model`` accepts."""
    return sorted(MODELS)


def _accepted_kwargs(ctor: Callable[..., nn.Module]) -> set[str] | None:
    params = inspect.signature(ctor).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model of the zoo by registry name with Open-Sora keyword overrides.

    Unknown names raise ValueError (listing the valid ones, with a did-you-mean); unknown overrides raise
    TypeError naming them. ``from_pretrained`` (a local file or folder) is loaded non-strictly after
    construction; missing/unexpected keys are logged.
    """
    entry = lookup(MODELS, name, "model")
    ctor, defaults = entry.load_builder(), entry.defaults

    kwargs = dict(overrides)
    for old, new in _ALIASES.items():
        if old in kwargs:
            value = kwargs.pop(old)
            if new in kwargs and kwargs[new] != value:
                raise TypeError(
                    f"{name}: both {old}={value!r} and {new}={kwargs[new]!r} given; use only {new}"
                )
            kwargs.setdefault(new, value)
    from_pretrained = kwargs.pop("from_pretrained", None)

    accepted = _accepted_kwargs(ctor)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.6)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"{name}: unknown argument(s) {', '.join(hints)}; accepted: {', '.join(sorted(accepted))}"
            )

    model = ctor(**{**defaults, **kwargs})
    if from_pretrained:
        from opensora_core.models.checkpoint import load_checkpoint

        load_checkpoint(model, from_pretrained)
    return model
