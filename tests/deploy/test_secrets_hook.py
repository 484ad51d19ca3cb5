"""The chart's secrets hook (files/generate_once.py, run by the pre-install/pre-upgrade Job) against an HTTP server
that answers the four Secret calls the way the Kubernetes API does (GET 200/404, POST 201/409, merge PATCH).

It creates each Secret of the rendered plan once, keeps every stored value on later runs (upgrades), and only adds
keys a Secret lacks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.conftest import CHART_DIR, NAMESPACE, SECRETS_HOOK, render

TOKEN = "hook-test-token"


class FakeSecretsApi(ThreadingHTTPServer):
    """Secrets of one namespace in memory; every request must carry the ServiceAccount token."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secrets: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeSecretsApi

    def log_message(self, *args) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> str | None:
        """The Secret name ('' for the collection), or None after answering 401/404 for a foreign path."""
        self.server.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401, {"message": "Unauthorized"})
            return None
        prefix = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        if not self.path.startswith(prefix):
            self._reply(404, {"message": f"no route {self.path}"})
            return None
        return self.path[len(prefix) :].lstrip("/")

    def _body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        name = self._route()
        if name is None:
            return
        if name in self.server.secrets:
            self._reply(200, self.server.secrets[name])
        else:
            self._reply(404, {"message": f'secrets "{name}" not found'})

    def do_POST(self) -> None:  # noqa: N802
        if self._route() is None:
            return
        body = self._body()
        name = body["metadata"]["name"]
        if name in self.server.secrets:
            self._reply(409, {"message": f'secrets "{name}" already exists'})
            return
        self.server.secrets[name] = body
        self._reply(201, body)

    def do_PATCH(self) -> None:  # noqa: N802
        name = self._route()
        if name is None:
            return
        assert self.headers["Content-Type"] == "application/merge-patch+json"
        self.server.secrets[name]["data"].update(self._body()["data"])
        self._reply(200, self.server.secrets[name])


@pytest.fixture
def api() -> Iterator[FakeSecretsApi]:
    server = FakeSecretsApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hook(helm_bin: Path) -> dict[str, str]:
    """The hook ConfigMap of the default install: the script and the plan."""
    docs = render(helm_bin, CHART_DIR / "ci" / "default-values.yaml")
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == SECRETS_HOOK)["data"]


def _run(
    hook: dict[str, str], api: FakeSecretsApi, tmp_path: Path, token: str = TOKEN
) -> subprocess.CompletedProcess:
    (tmp_path / "generate_once.py").write_text(hook["generate_once.py"])
    sa = tmp_path / "sa"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text(token)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NAMESPACE": NAMESPACE,
        "SECRETS_SPEC": hook["plan.json"],
        "KUBERNETES_API_URL": f"http://127.0.0.1:{api.server_address[1]}",
        "SERVICEACCOUNT_DIR": str(sa),
    }
    return subprocess.run(
        [sys.executable, str(tmp_path / "generate_once.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _values(api: FakeSecretsApi) -> dict[str, dict[str, str]]:
    return {
        name: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for name, s in api.secrets.items()
    }


def test_hook_creates_every_secret_once_and_keeps_them_on_upgrade(hook, api, tmp_path):
    first = _run(hook, api, tmp_path)
    assert first.returncode == 0, first.stderr
    plan = {s["name"]: s["data"] for s in json.loads(hook["plan.json"])}
    assert (
        set(api.secrets)
        == set(plan)
        == {
            "opensora-opensora-platform-postgresql",
            "opensora-opensora-platform-mlflow-auth",
            "opensora-mlflow-credentials",
            "opensora-opensora-platform-s3-admin",
            "opensora-opensora-platform-s3-mlflow",
            "opensora-s3-prepare",
            "opensora-s3-train",
            "opensora-s3-evaluate",
        }
    )
    values = _values(api)
    for name, rules in plan.items():
        assert set(values[name]) == set(rules)
        for key, rule in rules.items():
            if "random" in rule:
                assert len(values[name][key]) == rule["random"] and values[name][key].isalnum()
            else:
                assert values[name][key] == rule["value"]
    assert values["opensora-mlflow-credentials"]["MLFLOW_TRACKING_USERNAME"] == "opensora-pipeline"
    assert first.stdout.count(": created") == 8
    # An upgrade (the hook runs again): every value stays exactly as it was, nothing is written.
    api.requests.clear()
    second = _run(hook, api, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": kept") == 8
    assert _values(api) == values
    assert {method for method, _ in api.requests} == {"GET"}


def test_hook_never_changes_a_stored_value_and_only_adds_missing_keys(hook, api, tmp_path):
    # A Secret from an older release (or made by hand) with one of the two keys.
    api.secrets["opensora-opensora-platform-mlflow-auth"] = {
        "metadata": {"name": "opensora-opensora-platform-mlflow-auth"},
        "data": {"admin-password": base64.b64encode(b"chosen-by-the-admin").decode()},
    }
    res = _run(hook, api, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "secret opensora-opensora-platform-mlflow-auth: kept, added flask-secret-key" in res.stdout
    auth = _values(api)["opensora-opensora-platform-mlflow-auth"]
    assert auth["admin-password"] == "chosen-by-the-admin"
    assert len(auth["flask-secret-key"]) == 48


def test_hook_reports_a_refusal_with_the_fix(hook, api, tmp_path):
    res = _run(hook, api, tmp_path, token="stale")
    assert res.returncode == 1
    assert "401" in res.stderr and "needs get/create/patch on Secrets" in res.stderr
    assert not api.secrets
