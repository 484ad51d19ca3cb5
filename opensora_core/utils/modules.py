"""Small facts about torch modules that several layers need."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def module_dtype(module: Any, default: torch.dtype | None = None) -> torch.dtype:
    """The dtype of ``module``'s first parameter.

    ``default`` is returned when ``module`` is not an ``nn.Module`` or has no parameters; without a default
    that is a ``ValueError``.
    """
    if isinstance(module, nn.Module):
        for param in module.parameters():
            return param.dtype
    if default is None:
        raise ValueError(f"{type(module).__name__} has no parameters to take a dtype from")
    return default
