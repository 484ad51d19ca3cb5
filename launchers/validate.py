"""Offline validation of manifests against a CRD's ``openAPIV3Schema`` (the API server's structural checks).

The OpenAPI v3 schema of a CRD is turned into a JSON Schema (draft 4, which shares OpenAPI 3.0's keyword
semantics) and checked with ``jsonschema``:

- ``x-kubernetes-int-or-string: true`` accepts an integer or a string (string patterns still apply);
- ``x-kubernetes-preserve-unknown-fields: true`` keeps unknown fields; every other object that lists
  ``properties`` rejects unknown fields (like ``kubectl apply --validate=strict``);
- ``nullable: true`` also accepts null; ``format: int32/int64`` become numeric bounds;
- ``apiVersion`` and ``kind`` must match the CRD; ``metadata`` is checked for a name and string labels/annotations.

CEL rules (``x-kubernetes-validations``) are not evaluated; the spec models check the ones that matter for our
manifests (names, positive deadlines). CLI::

    python -m launchers.validate --crds ../shared/reference/crds job.yaml [...]
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEEP = frozenset(
    {
        "type",
        "enum",
        "required",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "anyOf": [{"required": ["name"]}, {"required": ["generateName"]}],
}


@dataclass(frozen=True)
class CRDSchema:
    """One served version of a CRD with its schema converted to JSON Schema."""

    group: str
    version: str
    kind: str
    plural: str
    schema: dict[str, Any]
    source: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@dataclass(frozen=True)
class ValidationIssue:
    """One schema violation: a JSON path into the manifest and what is wrong there."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ManifestValidationError(ValueError):
    """A manifest violates its CRD schema; ``issues`` holds the first violations."""

    def __init__(self, kind: str, name: str, issues: Sequence[ValidationIssue], total: int):
        self.issues = list(issues)
        self.total = total
        more = f" (showing {len(issues)} of {total})" if total > len(issues) else ""
        lines = "\n".join(f"  - {i}" for i in issues)
        super().__init__(f"{kind} {name!r} does not match its CRD schema{more}:\n{lines}")


def openapi_to_jsonschema(node: Any) -> Any:
    """Convert an OpenAPI v3 (Kubernetes structural) schema node to a JSON Schema node."""
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "not"):
            out[key] = openapi_to_jsonschema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [openapi_to_jsonschema(sub) for sub in value]
        elif key == "additionalProperties":
            out[key] = openapi_to_jsonschema(value) if isinstance(value, Mapping) else value
        elif key in _KEEP:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    bounds = _INT_BOUNDS.get(node.get("format", ""))
    if bounds and out.get("type") == "integer":
        out.setdefault("minimum", bounds[0])
        out.setdefault("maximum", bounds[1])
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader


@functools.lru_cache(maxsize=16)
def _load_crd_cached(path: str, mtime: float, version: str | None) -> CRDSchema:
    doc = _load_yaml(Path(path))
    if not isinstance(doc, Mapping) or doc.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{path} is not a CustomResourceDefinition")
    spec = doc["spec"]
    versions = spec.get("versions", [])
    if version is None:
        chosen = next((v for v in versions if v.get("storage")), versions[0] if versions else None)
    else:
        chosen = next((v for v in versions if v.get("name") == version), None)
    if chosen is None:
        served = [v.get("name") for v in versions]
        raise ValueError(f"{path}: no version {version!r} (served: {served})")
    raw = chosen.get("schema", {}).get("openAPIV3Schema")
    if raw is None:
        raise ValueError(f"{path}: version {chosen['name']} has no openAPIV3Schema")
    schema = openapi_to_jsonschema(raw)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [f"{spec['group']}/{chosen['name']}"]}
    props["kind"] = {"type": "string", "enum": [spec["names"]["kind"]]}
    props["metadata"] = _OBJECT_META
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return CRDSchema(
        group=spec["group"],
        version=chosen["name"],
        kind=spec["names"]["kind"],
        plural=spec["names"]["plural"],
        schema=schema,
        source=path,
    )


def load_crd(path: str | Path, version: str | None = None) -> CRDSchema:
    """Load a CRD YAML file (cached) and convert the schema of ``version`` (default: the storage version)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CRD file {p} does not exist")
    return _load_crd_cached(str(p.resolve()), p.stat().st_mtime, version)


def find_crd(crd_dir: str | Path, api_version: str, kind: str) -> CRDSchema:
    """The CRD in ``crd_dir`` (``*.yaml``) serving ``api_version`` and ``kind``."""
    group, _, version = api_version.rpartition("/")
    d = Path(crd_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"CRD folder {d} does not exist")
    files = sorted(d.glob("*.y*ml"))
    # CRD files are conventionally named <group>_<plural>...yaml: try those first.
    ordered = [f for f in files if f.name.startswith(f"{group}_")] + [
        f for f in files if not f.name.startswith(f"{group}_")
    ]
    for path in ordered:
        try:
            crd = load_crd(path, version)
        except ValueError:
            continue
        if crd.kind == kind:
            return crd
    raise FileNotFoundError(f"no CRD for {api_version} {kind} in {d}")


def _json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(str(part)):
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out


def _resolve(manifest: Mapping[str, Any], crd: CRDSchema | str | Path) -> CRDSchema:
    if isinstance(crd, CRDSchema):
        return crd
    p = Path(crd)
    if p.is_dir():
        return find_crd(p, str(manifest.get("apiVersion", "")), str(manifest.get("kind", "")))
    return load_crd(p)


def validate_manifest(
    manifest: Mapping[str, Any], crd: CRDSchema | str | Path, *, max_errors: int = 20
) -> list[ValidationIssue]:
    """Schema violations of ``manifest`` (sorted by path, at most ``max_errors``); empty when valid.

    ``crd`` is a loaded :class:`CRDSchema`, a CRD YAML file, or a folder of CRDs searched by apiVersion/kind.
    """
    return _validate(manifest, _resolve(manifest, crd), max_errors)[0]


def _validate(
    manifest: Mapping[str, Any], crd: CRDSchema, max_errors: int
) -> tuple[list[ValidationIssue], int]:
    from jsonschema import Draft4Validator

    validator = Draft4Validator(crd.schema)
    issues = sorted(
        (ValidationIssue(_json_path(e.absolute_path), e.message) for e in validator.iter_errors(manifest)),
        key=lambda i: (i.path, i.message),
    )
    return issues[:max_errors], len(issues)


def check_manifest(manifest: Mapping[str, Any], crd: CRDSchema | str | Path, *, max_errors: int = 20) -> None:
    """Raise :class:`ManifestValidationError` listing the first ``max_errors`` violations, if any."""
    schema = _resolve(manifest, crd)
    issues, total = _validate(manifest, schema, max_errors)
    if issues:
        name = str((manifest.get("metadata") or {}).get("name", "?"))
        raise ManifestValidationError(schema.kind, name, issues, total)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: validate YAML manifests (several documents per file allowed); exit status 1 on any violation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path)
    parser.add_argument("--crds", type=Path, required=True, help="folder of CRD YAML files")
    parser.add_argument("--max-errors", type=int, default=20)
    args = parser.parse_args(argv)
    import yaml

    failed = False
    for path in args.manifests:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            name = f"{path}: {doc.get('kind')} {(doc.get('metadata') or {}).get('name')}"
            issues = validate_manifest(doc, args.crds, max_errors=args.max_errors)
            print(f"{name}: {'ok' if not issues else f'{len(issues)} issue(s)'}")
            for issue in issues:
                print(f"  - {issue}")
            failed |= bool(issues)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
