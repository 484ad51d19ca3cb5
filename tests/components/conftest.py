"""Fixtures for component tests: the session's SeaweedFS S3 server (shared with tests/io and tests/train)."""

from tests.io.conftest import s3_bucket, s3_server  # noqa: F401
