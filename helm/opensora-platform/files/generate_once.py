"""Create the chart's credential Secrets once; run by the pre-install/pre-upgrade hook Job `<release>-secrets`.

Helm never renders these Secrets, so `helm template` (Argo CD, GitOps) prints no password and two renders are
identical, and an upgrade can never replace a password the database or object store was initialised with.

Environment:
- SECRETS_SPEC: JSON list of {"name": ..., "labels": {...}, "data": {KEY: {"random": LENGTH} | {"value": TEXT}}};
- NAMESPACE: the release namespace;
- KUBERNETES_API_URL and SERVICEACCOUNT_DIR: the API server and the folder with the token (and ca.crt for
  https); they default to the in-cluster address and the mounted ServiceAccount.

For each Secret: missing -> created with fresh random values; present -> kept, only keys it lacks are added.
A value already stored is never changed. Exit status 0 when every Secret holds every key afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import string
import sys
import urllib.error
import urllib.request
from pathlib import Path

ALPHABET = string.ascii_letters + string.digits


class ApiError(RuntimeError):
    """The API server refused a request (status and message)."""


class SecretsApi:
    """The four Secret calls this script needs, over plain HTTPS with the pod's ServiceAccount token."""

    def __init__(self, url: str, namespace: str, sa_dir: Path) -> None:
        self.base = f"{url.rstrip('/')}/api/v1/namespaces/{namespace}/secrets"
        self.token = (sa_dir / "token").read_text().strip()
        ca = sa_dir / "ca.crt"
        self.context = ssl.create_default_context(cafile=str(ca)) if ca.is_file() else None

    def _call(self, method: str, path: str, body: dict | None = None, ctype: str = "application/json"):
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": ctype,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, name: str) -> dict | None:
        """The Secret's data (base64 values), or None when it does not exist."""
        status, body = self._call("GET", f"/{name}")
        if status == 404:
            return None
        if status != 200:
            raise ApiError(f"GET secret {name}: {status} {body.get('message', '')}")
        return body.get("data") or {}

    def create(self, name: str, labels: dict[str, str], data: dict[str, str]) -> bool:
        """Create the Secret; False when another writer created it first (409)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "type": "Opaque",
            "data": data,
        }
        status, reply = self._call("POST", "", body)
        if status == 409:
            return False
        if status not in (200, 201):
            raise ApiError(f"create secret {name}: {status} {reply.get('message', '')}")
        return True

    def add_keys(self, name: str, data: dict[str, str]) -> None:
        """Merge-patch keys into the Secret (only keys it lacks are ever passed)."""
        status, reply = self._call("PATCH", f"/{name}", {"data": data}, "application/merge-patch+json")
        if status != 200:
            raise ApiError(f"add keys {sorted(data)} to secret {name}: {status} {reply.get('message', '')}")


def make_value(rule: dict) -> str:
    """Base64 of a fresh random alphanumeric string ({"random": n}) or of a fixed text ({"value": s})."""
    if "random" in rule:
        text = "".join(secrets.choice(ALPHABET) for _ in range(int(rule["random"])))
    else:
        text = str(rule["value"])
    return base64.b64encode(text.encode()).decode()


def ensure_secret(api: SecretsApi, spec: dict) -> str:
    """Make Secret spec["name"] hold every key of spec["data"]; returns what was done."""
    name = spec["name"]
    for _ in range(2):  # a 409 on create means another writer won: read again and keep its values
        existing = api.get(name)
        if existing is None:
            data = {key: make_value(rule) for key, rule in spec["data"].items()}
            if api.create(name, spec.get("labels", {}), data):
                return "created"
            continue
        missing = {key: make_value(rule) for key, rule in spec["data"].items() if key not in existing}
        if not missing:
            return "kept"
        api.add_keys(name, missing)
        return f"kept, added {', '.join(sorted(missing))}"
    raise ApiError(f"secret {name}: created and deleted concurrently; run the hook again")


def main() -> int:
    """Entry point of the hook Job."""
    try:
        specs = json.loads(os.environ["SECRETS_SPEC"])
        namespace = os.environ["NAMESPACE"]
    except (KeyError, json.JSONDecodeError) as exc:
        print(f"error: SECRETS_SPEC (JSON) and NAMESPACE must be set: {exc}", file=sys.stderr)
        return 2
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    default_url = f"https://{host}:{port}" if host else "https://kubernetes.default.svc"
    sa_dir = Path(os.environ.get("SERVICEACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount"))
    api = SecretsApi(os.environ.get("KUBERNETES_API_URL", default_url), namespace, sa_dir)
    try:
        for spec in specs:
            print(f"secret {spec['name']}: {ensure_secret(api, spec)}", flush=True)
    except (ApiError, OSError) as exc:
        print(
            f"error: {exc}. The hook's ServiceAccount needs get/create/patch on Secrets in {namespace}, and its "
            "pod must reach the Kubernetes API (networkPolicy.kubernetesApi).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
