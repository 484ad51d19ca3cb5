"""The Open-Sora model zoo: ``build_model(name, **overrides)``.

Names and default arguments follow Open-Sora's registry (``STDiT-XL/2`` = depth 28, hidden 1152, patch
(1, 2, 2), 16 heads, ...). Overrides use Open-Sora's argument names; the legacy spelling ``enable_flashattn``
is accepted as an alias of ``enable_flash_attn``. ``from_pretrained=<path>`` loads a checkpoint with
``opensora_core.models.checkpoint.load_checkpoint`` after construction.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["build_model", "model_names"]

logger = logging.getLogger(__name__)

# Legacy argument spellings -> current names.
_ALIASES = {"enable_flashattn": "enable_flash_attn"}


def _model_table() -> dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]]:
    """name -> (constructor, default kwargs). Imports each family lazily; edit here to add a model."""
    from opensora_core.models import dit, latte, pixart, stdit, stdit2

    xl2 = {"depth": 28, "hidden_size": 1152, "num_heads": 16}
    return {
        "STDiT-XL/2": (stdit.STDiT, {**xl2, "patch_size": (1, 2, 2)}),
        "STDiT2-XL/2": (stdit2.STDiT2, {**xl2, "patch_size": (1, 2, 2)}),
        "DiT-XL/2": (dit.DiT, {**xl2, "patch_size": (1, 2, 2)}),
        "DiT-XL/2x2": (dit.DiT, {**xl2, "patch_size": (2, 2, 2)}),
        "Latte-XL/2": (latte.Latte, {**xl2, "patch_size": (1, 2, 2)}),
        "Latte-XL/2x2": (latte.Latte, {**xl2, "patch_size": (2, 2, 2)}),
        "PixArt-XL/2": (pixart.PixArt, {**xl2, "patch_size": (1, 2, 2)}),
        "PixArtMS-XL/2": (pixart.PixArtMS, {**xl2, "patch_size": (1, 2, 2)}),
    }


def model_names() -> list[str]:
    """All names ``build_model`` accepts."""
    return sorted(_model_table())


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
    table = _model_table()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Valid names: {', '.join(sorted(table))}")
    ctor, defaults = table[name]

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
