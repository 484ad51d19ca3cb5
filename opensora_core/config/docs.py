"""Render the config reference tables of docs/config.md from the schema (so the docs never drift).

python -m opensora_core.config.docs --write docs/config.md   # refresh the generated block in place
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from opensora_core.config.schema import RunConfig
from opensora_core.config.sections import UNION_SECTIONS, TrackingConfig

BEGIN = "<!-- BEGIN GENERATED: python -m opensora_core.config.docs --write docs/config.md -->"
END = "<!-- END GENERATED -->"


def _type_name(tp: object) -> str:
    """A short readable name for a field annotation: int, float, tuple[int, int] | None, "a" | "b", ..."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(dict.fromkeys(names)) + (" | None" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple, list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "dict"
    return getattr(tp, "__name__", str(tp))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "see below"
    if field.default is PydanticUndefined:
        return "required"
    return repr(field.default)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(cls: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        rows.append(
            f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | "
            f"{_cell(field.description or '')} |"
        )
    return rows


def render_reference() -> str:
    """The generated part of docs/config.md: top-level keys, then one table per section type."""
    out = ["### Top-level keys", "", *_table(RunConfig), ""]
    for section, kinds in UNION_SECTIONS.items():
        out += [f"### `{section}` types", ""]
        seen: set[type] = set()
        for cls in kinds.values():
            if cls in seen:
                continue
            seen.add(cls)
            names = " / ".join(f"`{k}`" for k, c in kinds.items() if c is cls)
            out += [
                f"#### {section} {names}",
                "",
                (cls.__doc__ or "").strip(),
                "",
                *_table(cls, skip=("type",)),
                "",
            ]
    out += ["### `tracking`", "", *_table(TrackingConfig), ""]
    return "\n".join(out)


def splice(document: str) -> str:
    """Replace the text between the BEGIN/END markers of `document` with a fresh rendering."""
    start, end = document.index(BEGIN) + len(BEGIN), document.index(END)
    return document[:start] + "\n\n" + render_reference() + "\n" + document[end:]


def main(argv: list[str] | None = None) -> int:
    """CLI: print the reference, or --write PATH to refresh the generated block of a markdown file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="markdown file with BEGIN/END GENERATED markers")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(render_reference() + "\n")
    else:
        args.write.write_text(splice(args.write.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
