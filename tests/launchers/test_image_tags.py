"""launchers.images: every image tag comes from the project version, defined once (pyproject.toml)."""

from __future__ import annotations

import re
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

from launchers import images

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pyproject_version() -> str:
    # The same line the Makefile's IMAGE_TAG reads with sed.
    text = (REPO_ROOT / "pyproject.toml").read_text()
    return re.search(r'(?m)^version = "(.*)"', text).group(1)


def test_image_tags_follow_pyproject_version():
    tag = _pyproject_version()
    assert images.project_version() == tag
    assert (
        f"ghcr.io/opensora-platform/runtime:{tag}",
        f"ghcr.io/opensora-platform/train:{tag}",
    ) == (images.RUNTIME_IMAGE, images.TRAIN_IMAGE)
    assert images.image("train", "9.9.9") == "ghcr.io/opensora-platform/train:9.9.9"


def test_source_tree_version_wins_over_installed_metadata(tmp_path: Path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "opensora-platform"\nversion = "7.8.9"\n')
    assert images.project_version(pyproject) == "7.8.9"


@pytest.mark.parametrize("content", [None, '[project]\nname = "someone-else"\nversion = "3.0"\n'])
def test_falls_back_to_installed_version(tmp_path: Path, content: str | None):
    pyproject = tmp_path / "pyproject.toml"
    if content is not None:
        pyproject.write_text(content)
    assert images.project_version(pyproject) == installed_version("opensora-platform")


def test_no_image_tag_is_written_anywhere_else():
    pattern = re.compile(r"opensora-platform/(runtime|train):")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for folder in ("components", "launchers", "workflows")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if path != REPO_ROOT / "launchers" / "images.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"image names with a tag outside launchers/images.py: {offenders}"
