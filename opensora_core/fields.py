"""Annotated field types and the `Section` base shared by every typed config.

The run config (`opensora_core.config`) and the component configs declared next to their classes
(`models/configs.py`, `schedulers/registry.py`) all build on these; this module imports only pydantic, so the
component declarations can be imported without the config package (and without torch).

Numbers and booleans are strict (no `True` for an int, no `"16"` for a number): configs are Python files,
so a wrong type is a mistake worth reporting. Sequences are lax so JSON dumps (lists) load back as tuples.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

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


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, field names (and aliases) both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the matching builder: every field but `type` that is not None."""
        return self.model_dump(exclude={"type"}, exclude_none=True)

    def as_dict(self) -> dict[str, Any]:
        """The section as an Open-Sora style dict (with `type`, without unset fields), e.g. for build_vae."""
        return self.model_dump(exclude_none=True)
