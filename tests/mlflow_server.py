"""Start a real `mlflow server` (sqlite backend, local artifacts) on a free loopback port for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MLflowServer:
    uri: str
    port: int
    root: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> MLflowServer:
        """Launch the server and wait until /health answers."""
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root}/mlflow.db",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = open(self.root / f"server-{time.time_ns()}.log", "w")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"mlflow server on port {self.port} not healthy after {timeout}s")

    def stop(self) -> None:
        """Stop the server's whole process group (gunicorn/uvicorn workers included)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def start_mlflow_server(root: Path, port: int | None = None) -> MLflowServer:
    """Start a server storing everything under `root`; call `.stop()` when done."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    return MLflowServer(uri=f"http://127.0.0.1:{port}", port=port, root=root).start()
