"""The container images of the pipeline steps and training jobs, tagged with the project version.

One source of truth: the tag is ``version`` in pyproject.toml (the Makefile's ``IMAGE_TAG`` reads the same
line). In a source checkout that file is read directly, so a version bump shows up without reinstalling; in an
image (no pyproject.toml beside the installed package) the installed distribution's metadata answers.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

DISTRIBUTION = "opensora-platform"
IMAGE_REPO = "ghcr.io/opensora-platform"
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project_version(pyproject: Path = _PYPROJECT) -> str:
    """The project version: pyproject.toml's when it is this project's source tree, else the installed one.

    Raises RuntimeError when neither is available (an uninstalled copy without its pyproject.toml).
    """
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == DISTRIBUTION and project.get("version"):
            return str(project["version"])
    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError as err:
        raise RuntimeError(
            f"cannot tell the {DISTRIBUTION} version: {pyproject} is missing and the package is not "
            "installed; run `pip install -e .` in the checkout"
        ) from err


def image(name: str, tag: str | None = None) -> str:
    """``ghcr.io/opensora-platform/<name>:<tag>``; ``tag`` defaults to :func:`project_version`."""
    return f"{IMAGE_REPO}/{name}:{tag or project_version()}"


RUNTIME_IMAGE = image("runtime")  # pipeline steps without a GPU (prepare, train launcher, register)
TRAIN_IMAGE = image("train")  # training jobs' pods and the evaluate step
