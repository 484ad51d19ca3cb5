"""SeaweedFS S3 server fixtures shared with tests/io (s3:// checkpoint tests)."""

from tests.io.conftest import s3_bucket, s3_server  # noqa: F401
