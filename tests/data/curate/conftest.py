"""Fixtures for curation tests: the session's SeaweedFS S3 server (shared with tests/io)."""

from tests.io.conftest import s3_bucket, s3_server  # noqa: F401
