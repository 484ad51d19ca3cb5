"""Create the platform's S3 buckets; run by the chart's post-install/post-upgrade hook Job.

Environment: S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (from a Secret), AWS_REGION,
BUCKETS (comma-separated), WAIT_SECONDS (how long to wait for the endpoint to answer).
Existing buckets are kept as they are. Exit status 0 when every bucket exists afterwards.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MISSING = {"404", "NoSuchBucket", "NotFound"}
ALREADY_THERE = {"BucketAlreadyOwnedByYou"}


def s3_client():
    """A path-style S3 client for the configured endpoint (works with SeaweedFS, MinIO and AWS)."""
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def ensure_bucket(s3, name: str, region: str) -> str:
    """Create bucket `name` unless it exists; returns "exists" or "created"."""
    try:
        s3.head_bucket(Bucket=name)
        return "exists"
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in MISSING:
            raise
    kwargs = {}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=name, **kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ALREADY_THERE:
            return "exists"
        raise
    return "created"


def main() -> int:
    """Create every bucket in $BUCKETS, retrying while the endpoint starts up."""
    endpoint = os.environ["S3_ENDPOINT_URL"]
    region = os.environ.get("AWS_REGION", "us-east-1")
    buckets = [b.strip() for b in os.environ.get("BUCKETS", "").split(",") if b.strip()]
    if not buckets:
        print("error: BUCKETS is empty: set objectStorage.buckets in the chart values", file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "300"))
    s3 = s3_client()
    pending = list(buckets)
    while pending:
        name = pending[0]
        try:
            print(f"bucket {name}: {ensure_bucket(s3, name, region)}", flush=True)
            pending.pop(0)
            continue
        except ClientError as exc:
            err = exc.response.get("Error", {})
            last = f"{err.get('Code')}: {err.get('Message', '')}".strip()
        except (BotoCoreError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            print(
                f"error: could not create bucket {name!r} at {endpoint}: {last}. Check that the S3 service "
                "answers and that the credentials Secret (objectStorage.existingSecret or the generated one) "
                "holds a key pair allowed to create buckets.",
                file=sys.stderr,
            )
            return 1
        print(f"waiting for {endpoint} ({last})", flush=True)
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
