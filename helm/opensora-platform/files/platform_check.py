"""`helm test` check: MLflow answers (health, version, API with or without auth) and every bucket is
readable and writable with the platform's S3 credentials.

Environment: MLFLOW_URL, MLFLOW_EXPECTED_VERSION (optional), MLFLOW_AUTH ("true"/"false"),
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (from the auth Secret when auth is on),
S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, BUCKETS.
Prints one PASS/FAIL line per check; exit status 1 when any check fails.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
import uuid

import boto3
from botocore.config import Config


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """GET `url`; returns (status, body) also for HTTP error statuses."""
    req = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def check_mlflow(url: str) -> list[str]:
    """Failures of the MLflow checks (empty when all pass)."""
    failures = []
    auth_on = os.environ.get("MLFLOW_AUTH", "false").lower() == "true"
    creds = (
        (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) if auth_on else None
    )
    status, body = http_get(f"{url}/health")
    if status != 200 or body.strip() != "OK":
        failures.append(f"MLflow /health answered {status} {body[:200]!r}")
    expected = os.environ.get("MLFLOW_EXPECTED_VERSION", "")
    status, body = http_get(f"{url}/version", auth=creds)
    if status != 200 or (expected and body.strip() != expected):
        failures.append(f"MLflow /version answered {status} {body[:100]!r}, expected {expected or 'any'}")
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    if creds is not None:
        status, _ = http_get(api)
        if status != 401:
            failures.append(f"MLflow API without credentials answered {status}, expected 401 (auth is on)")
        status, body = http_get(api, auth=creds)
        if status != 200:
            failures.append(f"MLflow API with the admin credentials answered {status} {body[:200]!r}")
    else:
        status, body = http_get(api)
        if status != 200:
            failures.append(f"MLflow API answered {status} {body[:200]!r}")
    return failures


def check_buckets(buckets: list[str]) -> list[str]:
    """Failures of the S3 checks: each bucket must exist and take a put/get/delete round trip."""
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
    )
    failures = []
    for bucket in buckets:
        key = f".helm-test/{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes
        try:
            s3.head_bucket(Bucket=bucket)
            s3.put_object(Bucket=bucket, Key=key, Body=payload)
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            s3.delete_object(Bucket=bucket, Key=key)
            if got != payload:
                failures.append(f"bucket {bucket}: read back different bytes")
        except Exception as exc:  # every S3 or network error is a failed check with its reason
            failures.append(f"bucket {bucket}: {type(exc).__name__}: {exc}")
    return failures


def main() -> int:
    """Run all checks and report each."""
    buckets = [b.strip() for b in os.environ.get("BUCKETS", "").split(",") if b.strip()]
    results = {
        "mlflow": check_mlflow(os.environ["MLFLOW_URL"].rstrip("/")),
        "buckets": check_buckets(buckets) if buckets else ["BUCKETS is empty"],
    }
    for name, failures in results.items():
        for failure in failures:
            print(f"FAIL {name}: {failure}")
        if not failures:
            print(f"PASS {name}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
