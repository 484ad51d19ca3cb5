"""Fixtures for launcher tests: the Kubeflow CRDs from ../shared (tests skip with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import shared_path


@pytest.fixture
def crds() -> Path:
    """Folder with the PyTorchJob / TrainJob CRD YAML files."""
    return shared_path("reference", "crds")
