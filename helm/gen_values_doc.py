"""Write the values table of helm/opensora-platform/README.md from values.schema.json and values.yaml.

    python helm/gen_values_doc.py          # rewrite the table between the README's markers
    python helm/gen_values_doc.py --check  # exit 1 when the README's table is stale

One row per leaf of the schema (objects are walked into; arrays and free-form maps are leaves): the key path,
the JSON type, the default from values.yaml, the schema's description. The schema is the source: a value
without a schema entry is refused by helm anyway (additionalProperties: false).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "opensora-platform"
README = CHART / "README.md"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
_MISSING = object()


def _rows(schema: dict, values: Any, path: str = "") -> list[tuple[str, str, str, str]]:
    rows = []
    for key, sub in schema.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        default = values.get(key, _MISSING) if isinstance(values, dict) else _MISSING
        if sub.get("properties"):
            rows += _rows(sub, default if isinstance(default, dict) else {}, here)
            continue
        kind = sub.get("type", "any")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        shown = "" if default is _MISSING else f"`{json.dumps(default, separators=(', ', ': '))}`"
        desc = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
        rows.append((f"`{here}`", kind, shown.replace("|", "\\|"), desc))
    return rows


def values_table() -> str:
    """The Markdown table of every value the chart takes."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    lines += [f"| {k} | {t} | {d} | {desc} |" for k, t, d, desc in _rows(schema, values)]
    return "\n".join(lines)


def render(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README}: markers {BEGIN} / {END} are missing")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{values_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    """Rewrite the table, or with --check report whether it is current."""
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{README} is stale: run python helm/gen_values_doc.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
