"""Layering of the top-level packages: opensora_core <- launchers <- components <- workflows.

``opensora_core`` never imports ``launchers`` (nor ``components`` / ``workflows``; its kfp/kubernetes ban is
tests/test_imports.py), and ``launchers`` never imports kfp, ``components`` or ``workflows``. Checked on the source (every ``import`` statement, including
those inside functions), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "opensora_core": {"launchers", "components", "workflows"},
    "launchers": {"components", "workflows", "kfp"},
}


def imported_top_levels(path: Path) -> set[str]:
    """Top-level package names of every absolute import in ``path`` (module level and inside functions)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upwards(package: str):
    files = sorted((REPO_ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    bad = {
        str(path.relative_to(REPO_ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in files
    }
    bad = {path: names for path, names in bad.items() if names}
    assert not bad, f"{package} must not import {sorted(FORBIDDEN[package])}: {bad}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from launchers.train import run_training\n    import kfp.dsl\n")
    assert imported_top_levels(planted) == {"launchers", "kfp"}
