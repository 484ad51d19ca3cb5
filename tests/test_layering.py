"""The import rules of .importlinter hold, and they catch a planted violation (see ARCHITECTURE.md).

import-linter reads every ``import`` statement, including those inside functions, so a lazy import cannot
hide an upward dependency. The planted test runs the same command and the same config on a copy of the
library with three bad imports added, all inside functions: it must report each one.
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from opensora_core.entry import Entry

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / ".importlinter"
OTHER_ROOTS = ("launchers", "components", "workflows")  # the config's other root packages


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's config, analysing the packages found in ``cwd``."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, str(CONFIG), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept():
    res = lint_imports(REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def plant(path: Path, statement: str) -> None:
    """Append a function whose body is ``statement`` to the module at ``path``."""
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {statement}\n")


def test_planted_imports_break_the_contracts(tmp_path: Path):
    shutil.copytree(
        REPO_ROOT / "opensora_core", tmp_path / "opensora_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in OTHER_ROOTS:
        (tmp_path / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
    lib = tmp_path / "opensora_core"
    plant(lib / "models" / "dit.py", "from opensora_core.train import loop")  # upward: models -> train
    plant(lib / "data" / "prepare.py", "import kfp.dsl")  # the Kubernetes side
    plant(lib / "parallel" / "backends.py", "from opensora_core.parallel import fsdp")  # a circle with fsdp

    res = lint_imports(tmp_path)
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert "Contracts: 1 kept, 3 broken." in out, out
    assert "opensora_core.models.dit -> opensora_core.train.loop" in out
    assert "opensora_core.data.prepare -> kfp" in out
    assert "No cycles are allowed in opensora_core.parallel." in out


# ------------------------------------------------------------------ dispatch through a component table
def component_tables(graph: grimp.ImportGraph) -> dict[str, dict[str, Entry]]:
    """Every component table (a module-level dict of ``Entry``), by ``module:NAME``."""
    tables = {}
    for module in sorted(graph.find_modules_that_directly_import("opensora_core.entry")):
        for name, value in vars(importlib.import_module(module)).items():
            if isinstance(value, dict) and value and all(isinstance(v, Entry) for v in value.values()):
                tables[f"{module}:{name}"] = value
    return tables


def module_path(module: str) -> Path:
    path = REPO_ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def calls_load_builder(module: str) -> bool:
    tree = ast.parse(module_path(module).read_text())
    return any(
        isinstance(node, ast.Attribute) and node.attr == "load_builder" for node in ast.walk(tree)
    )


def dispatch_circles(graph: grimp.ImportGraph) -> tuple[int, list[str]]:
    """(builders checked, circles): a circle is a builder module that imports, directly or not, the module that
    loads it through its table."""
    checked, circles = 0, []
    for key, table in component_tables(graph).items():
        table_module = key.partition(":")[0]
        dispatchers = {table_module} | graph.find_modules_that_directly_import(table_module)
        dispatchers = {d for d in dispatchers if d.startswith("opensora_core.") and calls_load_builder(d)}
        for dispatcher in sorted(dispatchers):
            for name, entry in table.items():
                builder_module = entry.builder.partition(":")[0]
                if builder_module == dispatcher:
                    continue
                checked += 1
                chain = graph.find_shortest_chain(importer=builder_module, imported=dispatcher)
                if chain:
                    circles.append(f"{key}[{name!r}] is loaded by {dispatcher}: " + " -> ".join(chain))
    return checked, circles


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("opensora_core", cache_dir=None)


def test_dispatch_through_a_table_closes_no_circle(graph: grimp.ImportGraph):
    """A table names its builders as strings, which import-linter cannot see: the module that loads a builder
    (``Entry.load_builder``) imports it at run time, so the builder's module must not import that module back
    (``parallel.backends`` dispatched to ``colossal``/``fsdp``, which subclass its ``TrainBackend``)."""
    tables = component_tables(graph)
    assert {"opensora_core.models.registry:MODELS", "opensora_core.parallel.registry:BACKENDS"} <= set(tables)
    checked, circles = dispatch_circles(graph)
    assert checked >= len(tables), f"only {checked} builders checked"
    assert not circles, "\n".join(circles)


def test_the_dispatch_check_reports_a_planted_circle():
    planted = grimp.build_graph("opensora_core", cache_dir=None)
    planted.add_import(importer="opensora_core.parallel.backends", imported="opensora_core.parallel")
    _, circles = dispatch_circles(planted)
    assert circles == [
        "opensora_core.parallel.registry:BACKENDS['zero2'] is loaded by opensora_core.parallel: "
        "opensora_core.parallel.colossal -> opensora_core.parallel.backends -> opensora_core.parallel",
        "opensora_core.parallel.registry:BACKENDS['zero2-seq'] is loaded by opensora_core.parallel: "
        "opensora_core.parallel.colossal -> opensora_core.parallel.backends -> opensora_core.parallel",
        "opensora_core.parallel.registry:BACKENDS['ddp'] is loaded by opensora_core.parallel: "
        "opensora_core.parallel.backends -> opensora_core.parallel",
        "opensora_core.parallel.registry:BACKENDS['fsdp2'] is loaded by opensora_core.parallel: "
        "opensora_core.parallel.fsdp -> opensora_core.parallel.backends -> opensora_core.parallel",
    ]
