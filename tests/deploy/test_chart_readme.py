"""The chart README: its values table matches the schema and defaults, and the packaging it documents works."""

from __future__ import annotations

import importlib.util
import json
import re
import tarfile
from pathlib import Path

import yaml

from tests.deploy.conftest import CHART_DIR, REPO_ROOT, run_helm


def _generator():
    spec = importlib.util.spec_from_file_location("gen_values_doc", REPO_ROOT / "helm" / "gen_values_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _leaves(schema: dict, path: str = "") -> set[str]:
    out = set()
    for key, sub in schema.get("properties", {}).items():
        here = f"{path}.{key}" if path else key
        out |= _leaves(sub, here) if sub.get("properties") else {here}
    return out


def test_readme_values_table_is_current_and_lists_every_value():
    gen = _generator()
    readme = (CHART_DIR / "README.md").read_text()
    assert gen.render(readme) == readme, (
        "helm/opensora-platform/README.md is stale: python helm/gen_values_doc.py"
    )
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    rows = dict(re.findall(r"^\| `([^`]+)` \| [^|]+ \| (.*?) \|", readme, flags=re.M))
    assert set(rows) == _leaves(schema)
    assert rows["objectStorage.seaweedfs.port"] == "`8333`"  # defaults come from values.yaml


def test_generator_check_mode_reports_a_stale_table(tmp_path, monkeypatch):
    gen = _generator()
    stale = tmp_path / "README.md"
    stale.write_text((CHART_DIR / "README.md").read_text().replace("`8333`", "`9999`"))
    monkeypatch.setattr(gen, "README", stale)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0


def test_helm_package_gives_the_documented_archive(helm_bin: Path, tmp_path: Path):
    version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["version"]
    readme = (CHART_DIR / "README.md").read_text()
    run_helm(helm_bin, "lint", str(CHART_DIR))
    run_helm(helm_bin, "package", str(CHART_DIR), "-d", str(tmp_path))
    archive = tmp_path / f"opensora-platform-{version}.tgz"
    assert archive.is_file(), sorted(p.name for p in tmp_path.iterdir())
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"opensora-platform/README.md", "opensora-platform/values.schema.json"} <= names
    assert f"helm push dist/opensora-platform-{version}.tgz oci://" in readme
    assert f"oci://ghcr.io/opensora-platform/charts/opensora-platform --version {version}" in readme
