"""Shared fixtures: location of ../shared reference material (skip cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("OPENSORA_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Return a path under ../shared, skipping the calling test when it does not exist."""
    p = SHARED_DIR.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"reference material {p} is absent (checkout outside CI without ../shared)")
    return p


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder; tests using it skip with a reason when it is absent."""
    return shared_path()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (sqlite backend) on a free loopback port, shared by the session."""
    from tests.mlflow_server import start_mlflow_server

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
