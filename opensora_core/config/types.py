"""Annotated field types shared by the config sections.

Numbers and booleans are strict (no `True` for an int, no `"16"` for a number): configs are Python files,
so a wrong type is a mistake worth reporting. Sequences are lax so JSON dumps (lists) load back as tuples.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, Strict

Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(gt=0)]
NonNegInt = Annotated[int, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, Strict()]
PosFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegFloat = Annotated[float, Strict(), Field(ge=0)]
Prob = Annotated[float, Strict(), Field(ge=0, le=1)]

Size2 = tuple[PosInt, PosInt]
Size3 = tuple[PosInt, PosInt, PosInt]
OptSize2 = tuple[PosInt | None, PosInt | None]
OptSize3 = tuple[PosInt | None, PosInt | None, PosInt | None]

_DTYPE_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def _normalise_dtype(value: object) -> object:
    """Accept torch-style spellings ("bfloat16", "torch.float16") and map them to fp32/fp16/bf16."""
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("torch.")
        return _DTYPE_ALIASES.get(key, value)
    return value


DType = Annotated[Literal["fp32", "fp16", "bf16"], BeforeValidator(_normalise_dtype)]
