"""The checkpoint format has one owner: no file name of it is spelled outside opensora_core/checkpoint/ (in
opensora_core, components, launchers and workflows), and the package stays low in the layering (no import of
train, sample, eval or the registry)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from opensora_core.checkpoint import layout

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("opensora_core", "components", "launchers", "workflows")
OWNER = ROOT / "opensora_core" / "checkpoint"
# The file names of the format: every str constant of the layout that names a file.
NAMES = sorted(
    value
    for key, value in vars(layout).items()
    if key.isupper() and isinstance(value, str) and ("." in value or value.startswith("_"))
)
# Same spelling, another format: Hugging Face model folders (config.json, model.safetensors) read by models/.
EXEMPT = {
    ("opensora_core/models/pretrained.py", layout.CONFIG_JSON),
    ("opensora_core/models/checkpoint.py", layout.MODEL_FILE),
}
_PATTERNS = {name: re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])") for name in NAMES}


def _documentation(tree: ast.AST) -> set[int]:
    """ids of string constants that are documentation (docstrings, bare string statements)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a Python file (docs excluded), or of every line of another
    text file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), start=1))
    tree = ast.parse(text, filename=str(path))
    docs = _documentation(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def format_literals_outside_owner(root: Path) -> list[str]:
    """``path:line: name`` for each checkpoint-format file name spelled outside the checkpoint package."""
    found = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in (".py", ".yaml", ".yml", ".json") or not path.is_file():
                continue
            if path.is_relative_to(root / OWNER.relative_to(ROOT)):
                continue
            rel = path.relative_to(root).as_posix()
            for line, text in _literals(path):
                for name, pattern in _PATTERNS.items():
                    if (rel, name) not in EXEMPT and pattern.search(text):
                        found.append(f"{rel}:{line}: {name}")
    return found


def test_the_names_are_the_formats():
    assert {"model.safetensors", "ema.safetensors", "config.json", "running_states.json", "_COMPLETE"} <= set(
        NAMES
    )
    assert {"final_metrics.json", "optimizer.pt", "sampler.json"} <= set(NAMES)


def test_no_checkpoint_file_name_outside_the_checkpoint_package():
    found = format_literals_outside_owner(ROOT)
    assert found == [], "use opensora_core.checkpoint.layout instead:\n" + "\n".join(found)


def test_the_check_finds_a_planted_literal(tmp_path: Path):
    planted = tmp_path / "opensora_core" / "sample" / "x.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(
        '"""Reads model.safetensors (documentation is fine)."""\nNAME = f"{d}/model.safetensors"\n'
    )
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "p.yaml").write_text("file: running_states.json\n")
    (tmp_path / "components").mkdir()
    (tmp_path / "launchers").mkdir()
    (tmp_path / "launchers" / "train.py").write_text('METRICS = "final_metrics.json"\n')
    owner = tmp_path / "opensora_core" / "checkpoint" / "layout.py"
    owner.parent.mkdir()
    owner.write_text('MODEL_FILE = "model.safetensors"\n')
    assert format_literals_outside_owner(tmp_path) == [
        "opensora_core/sample/x.py:2: model.safetensors",
        "launchers/train.py:1: final_metrics.json",
        "workflows/p.yaml:1: running_states.json",
    ]


ALLOWED = (
    "opensora_core.checkpoint",
    "opensora_core.config",
    "opensora_core.models",
    "opensora_core.parallel",
)
ALLOWED_IO = ("storage",)


def _imports(path: Path) -> list[str]:
    """Every module an ``opensora_core`` file imports, function-level imports included
    (``from opensora_core.io import storage`` -> ``opensora_core.io.storage``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in ("opensora_core", "opensora_core.io"):
                out += [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                out.append(node.module)
    return [m for m in out if m.split(".")[0] == "opensora_core"]


def test_the_checkpoint_package_imports_only_lower_layers():
    bad = []
    for path in sorted(OWNER.glob("*.py")):
        for module in _imports(path):
            io_ok = module.startswith("opensora_core.io.") and module.split(".")[2] in ALLOWED_IO
            if not (io_ok or module.startswith(ALLOWED)):
                bad.append(f"{path.name}: {module}")
    assert bad == []


def test_sample_no_longer_imports_train():
    modules = [m for p in (ROOT / "opensora_core" / "sample").glob("*.py") for m in _imports(p)]
    assert not [m for m in modules if m.startswith("opensora_core.train")]
