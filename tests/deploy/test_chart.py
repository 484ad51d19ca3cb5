"""Offline checks of the Helm chart: lint, schema, Kubernetes schemas and security assertions per CI scenario."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy._helm import HELM_VERSION, ensure_helm, helm_path
from tests.deploy.conftest import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO_ROOT,
    SCENARIOS,
    SECRETS_HOOK,
    generated_secrets,
    render,
    run_helm,
)

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest release kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}
SENSITIVE = re.compile(r"pass(word)?|secret|token|credential|private|(^|_)key($|_)|access_?key", re.I)
FULL = "opensora-opensora-platform"
INGRESS_TLS = (
    "--set",
    "mlflow.ingress.tls[0].secretName=tls",
    "--set",
    "mlflow.ingress.tls[0].hosts[0]=mlflow.example.com",
)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(resource id, pod spec) of every workload."""
    out = []
    for d in docs:
        if d["kind"] not in WORKLOAD_KINDS:
            continue
        spec = d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]
        out.append((f"{d['kind']}/{d['metadata']['name']}", spec))
    return out


def containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def inventory(docs: list[dict]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs}


# ---------------------------------------------------------------- helm itself


def test_helm_is_the_pinned_real_binary(helm_bin: Path):
    res = run_helm(helm_bin, "version", "--template", "{{.Version}}")
    if helm_bin == helm_path() and "OPENSORA_HELM" not in os.environ:
        assert res.stdout.strip() == HELM_VERSION
    assert ensure_helm() == helm_bin  # second call: no fetch, same binary


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(helm_bin: Path, scenario: str):
    res = run_helm(
        helm_bin, "lint", "--strict", str(CHART_DIR), "-f", str(CHART_DIR / "ci" / f"{scenario}.yaml")
    )
    assert "[ERROR]" not in res.stdout and "[WARNING]" not in res.stdout, res.stdout


def test_ci_scenarios_cover_the_required_cases():
    assert set(SCENARIOS) >= {"default-values", "external-values", "auth-values", "ingress-values"}


# ---------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "mlflow.replicas=2"], "additional properties 'replicas' not allowed"),
        (["--set", "mlflow.port=http"], "/mlflow/port"),
        (["--set", "objectStorage.provider=minio"], "/objectStorage/provider"),
        (["--set", "postgresql.auth.password=hunter2"], "additional properties 'password' not allowed"),
        (["--set", "networkPolicy.enabled=yes please"], "/networkPolicy/enabled"),
        (["--set", "objectStorage.buckets.datasets=Bad_Bucket"], "/objectStorage/buckets/datasets"),
    ],
    ids=[
        "unknown-key",
        "typo-nested",
        "wrong-type",
        "bad-enum",
        "plaintext-password",
        "not-bool",
        "bad-bucket",
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(helm_bin: Path, args: list[str], expected: str):
    res = run_helm(helm_bin, "template", RELEASE, str(CHART_DIR), *args, check=False)
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr
    assert expected in res.stderr, res.stderr


def test_schema_rejects_a_bad_values_file(helm_bin: Path, tmp_path: Path):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("mlflow:\n  workers: two\n  ingres:\n    enabled: true\n")
    res = run_helm(helm_bin, "lint", "--strict", str(CHART_DIR), "-f", str(bad), check=False)
    assert res.returncode != 0
    assert "ingres" in res.stdout + res.stderr and "/mlflow/workers" in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "postgresql.image.tag=latest"], 'needs a pinned tag (not empty, not "latest")'),
        (["--set", "runtimeImage.tag=latest"], 'needs a pinned tag (not empty, not "latest")'),
        (["--set", "objectStorage.provider=external"], "set objectStorage.external.endpoint"),
        (
            [
                "--set",
                "objectStorage.provider=external",
                "--set",
                "objectStorage.external.endpoint=https://s3.x.io",
            ],
            "objectStorage.existingSecret must name a Secret",
        ),
        (["--set", "postgresql.enabled=false"], "set externalDatabase.host"),
        (
            ["--set", "postgresql.enabled=false", "--set", "externalDatabase.host=db"],
            "externalDatabase.existingSecret is required",
        ),
        (["--set", "externalDatabase.host=db"], "not both"),
        (
            ["--set", "objectStorage.accessKeyIdKey=access-key"],
            "the generated S3 Secrets hold AWS_ACCESS_KEY_ID",
        ),
        (
            ["--set", "mlflow.ingress.enabled=true", "--set", "mlflow.auth.enabled=false", *INGRESS_TLS],
            "would publish MLflow without authentication",
        ),
        (["--set", "mlflow.ingress.enabled=true"], "without mlflow.ingress.tls would send MLflow passwords"),
        (
            ["--set", "mlflow.service.type=LoadBalancer"],
            "mlflow.service.type=LoadBalancer exposes MLflow's plain",
        ),
        (
            ["--set", "mlflow.service.type=NodePort", "--set", "mlflow.auth.enabled=false"],
            "mlflow.service.type=NodePort exposes",
        ),
    ],
    ids=[
        "latest-postgres",
        "latest-runtime",
        "s3-no-endpoint",
        "s3-no-secret",
        "db-none",
        "db-no-secret",
        "db-both",
        "generated-s3-key-names",
        "ingress-without-auth",
        "ingress-without-tls",
        "loadbalancer",
        "nodeport-without-auth",
    ],
)
def test_inconsistent_values_fail_with_the_fix(helm_bin: Path, args: list[str], expected: str):
    res = run_helm(helm_bin, "template", RELEASE, str(CHART_DIR), *args, check=False)
    assert res.returncode != 0
    assert expected in res.stderr, res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "mlflow.ingress.enabled=true", "--set", "mlflow.ingress.dangerouslyAllowInsecure=true"],
        [
            "--set",
            "mlflow.service.type=LoadBalancer",
            "--set",
            "mlflow.service.dangerouslyAllowInsecure=true",
        ],
    ],
    ids=["ingress", "loadbalancer"],
)
def test_insecure_exposure_renders_only_with_the_loud_override(helm_bin: Path, args: list[str]):
    docs = render(helm_bin, extra=tuple(args))
    exposed = [d for d in docs if d["kind"] == "Ingress" or d.get("spec", {}).get("type") == "LoadBalancer"]
    assert len(exposed) == 1


def test_mlflow_auth_is_on_by_default(rendered):
    dep = find(rendered["default-values"], "Deployment", f"{FULL}-mlflow")
    assert "--app-name=basic-auth" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def _schema_paths(schema: dict, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every key path the schema defines explicitly (free-form maps excluded); list items use '[]'."""
    paths: set[tuple[str, ...]] = set()
    for key, sub in schema.get("properties", {}).items():
        path = (*prefix, key)
        paths.add(path)
        paths |= _schema_paths(sub, path)
    if isinstance(schema.get("items"), dict):
        paths |= _schema_paths(schema["items"], (*prefix, "[]"))
    return paths


def _commented_value_paths(text: str) -> dict[tuple[str, ...], bool]:
    """Key path -> whether the key has a comment (on the lines right above it or at the end of its line)."""
    result: dict[tuple[str, ...], bool] = {}
    stack: list[tuple[int, str]] = []  # (indent, key)
    comment_above = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment_above = False
            continue
        if stripped.startswith("#"):
            comment_above = True
            continue
        m = re.match(r"^(\s*)(- )?([A-Za-z0-9_.\-/]+):(\s|$)", line)
        if not m:
            comment_above = False
            continue
        indent = len(m.group(1))
        if m.group(2):  # "- key:" starts a list item: the key sits two columns further in
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, "[]"))
            indent += 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = tuple(k for _, k in stack) + (m.group(3),)
        has_inline = " #" in line.split(":", 1)[1]
        result[path] = comment_above or has_inline
        stack.append((indent, m.group(3)))
        comment_above = False
    return result


def test_every_values_key_is_commented_and_known_to_the_schema():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values_text = (CHART_DIR / "values.yaml").read_text()
    known = _schema_paths(schema)
    found = _commented_value_paths(values_text)
    chart_keys = {p: c for p, c in found.items() if p in known}
    uncommented = sorted(".".join(p) for p, c in chart_keys.items() if not c)
    assert not uncommented, f"values.yaml keys without a comment: {uncommented}"
    # Every top-level key of values.yaml is a schema property (and the schema forbids others).
    top = {p[0] for p in found if len(p) == 1}
    assert top <= set(schema["properties"]), top - set(schema["properties"])
    assert schema["additionalProperties"] is False
    defaults = yaml.safe_load(values_text)
    assert "mlflow" in defaults and defaults["networkPolicy"]["enabled"] is True


# ---------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_validate_against_kubernetes_schemas(rendered, scenario: str, version: str):
    errors = []
    for doc in rendered[scenario]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_validation_catches_an_invalid_manifest(rendered):
    """Control: the validator really is strict (an unknown field in a rendered Deployment is an error)."""
    doc = json.loads(json.dumps(find(rendered["default-values"], "Deployment", f"{FULL}-mlflow")))
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# ---------------------------------------------------------------- resources per scenario


DEFAULT_RESOURCES = {
    ("ServiceAccount", FULL),
    ("ServiceAccount", "opensora-pipeline"),
    ("Role", f"{FULL}-pipeline"),
    ("RoleBinding", f"{FULL}-pipeline"),
    ("ConfigMap", "opensora-platform"),
    ("ConfigMap", f"{FULL}-mlflow"),
    ("ConfigMap", f"{FULL}-scripts"),
    ("ConfigMap", f"{FULL}-mlflow-auth"),
    ("ServiceAccount", SECRETS_HOOK),
    ("Role", SECRETS_HOOK),
    ("RoleBinding", SECRETS_HOOK),
    ("ConfigMap", SECRETS_HOOK),
    ("Job", SECRETS_HOOK),
    ("PersistentVolumeClaim", f"{FULL}-postgresql"),
    ("PersistentVolumeClaim", f"{FULL}-seaweedfs"),
    ("PersistentVolumeClaim", "opensora-model-cache"),
    ("Service", f"{FULL}-mlflow"),
    ("Service", f"{FULL}-postgresql"),
    ("Service", f"{FULL}-seaweedfs"),
    ("Deployment", f"{FULL}-mlflow"),
    ("Deployment", f"{FULL}-seaweedfs"),
    ("StatefulSet", f"{FULL}-postgresql"),
    ("Job", f"{FULL}-create-buckets"),
    ("Pod", f"{FULL}-test"),
    ("NetworkPolicy", f"{FULL}-default-deny"),
    ("NetworkPolicy", f"{FULL}-egress"),
    ("NetworkPolicy", f"{FULL}-mlflow"),
    ("NetworkPolicy", f"{FULL}-postgresql"),
    ("NetworkPolicy", f"{FULL}-seaweedfs"),
    ("NetworkPolicy", f"{FULL}-pytorchjob"),
    ("NetworkPolicy", f"{FULL}-trainjob"),
    ("NetworkPolicy", f"{FULL}-kube-api"),
    ("NetworkPolicy", SECRETS_HOOK),
    ("PodDisruptionBudget", f"{FULL}-mlflow"),
    ("PodDisruptionBudget", f"{FULL}-postgresql"),
}


def test_default_scenario_resources(rendered):
    assert inventory(rendered["default-values"]) == DEFAULT_RESOURCES


def test_external_scenario_uses_no_in_cluster_stores_and_generates_no_secret(rendered):
    docs = rendered["external-values"]
    names = inventory(docs)
    assert not {n for n in names if "postgresql" in n[1] or "seaweedfs" in n[1]}
    assert not by_kind(docs, "Secret") and not generated_secrets(docs), (
        "external scenario: every credential must come from an existing Secret"
    )
    assert ("Job", SECRETS_HOOK) not in names  # nothing to generate
    cfg = find(docs, "ConfigMap", f"{FULL}-mlflow")["data"]
    assert cfg["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql+psycopg2://mlflow@mlflow-db.databases.svc.cluster.local:5432/mlflow"
    )
    assert cfg["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://acme-opensora-mlflow/tracking"
    env = {
        e["name"]: e
        for e in find(docs, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlflow-db-credentials",
        "key": "password",
    }
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials",
        "key": "secret-access-key",
    }
    assert env["S3_ENDPOINT_URL"]["value"] == "https://s3.eu-west-1.amazonaws.com"
    binding = find(docs, "RoleBinding", f"{FULL}-pipeline")
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in binding[
        "subjects"
    ]


def test_auth_scenario_wires_basic_auth_from_a_secret(rendered):
    docs = rendered["auth-values"]
    created = generated_secrets(docs)
    assert created[f"{FULL}-mlflow-auth"] == {
        "admin-password": {"random": 24},
        "flask-secret-key": {"random": 48},
    }
    dep = find(docs, "Deployment", f"{FULL}-mlflow")
    assert dep["spec"]["replicas"] == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    for name, key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin-password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": f"{FULL}-mlflow-auth", "key": key}
    ini = find(docs, "ConfigMap", f"{FULL}-mlflow-auth")["data"]["basic_auth.ini"]
    assert "default_permission = READ" in ini and "postgresql+psycopg2://mlflow@" in ini
    assert "admin_password" not in ini
    # The pipeline's MLflow login: a Secret with a fixed name created once by the hook, and an init container that
    # creates the (non-admin) user from it; the password is never a plain value.
    assert created["opensora-mlflow-credentials"] == {
        "MLFLOW_TRACKING_USERNAME": {"value": "opensora-pipeline"},
        "MLFLOW_TRACKING_PASSWORD": {"random": 32},
    }
    init = {i["name"]: i for i in dep["spec"]["template"]["spec"]["initContainers"]}
    assert list(init) == ["migrate-database", "pipeline-user"]
    init_env = {e["name"]: e for e in init["pipeline-user"]["env"]}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert init_env[name]["valueFrom"]["secretKeyRef"] == {
            "name": "opensora-mlflow-credentials",
            "key": name,
        }
    assert init["pipeline-user"]["command"] == ["python", "/scripts/mlflow_pipeline_user.py"]
    endpoints = find(docs, "ConfigMap", "opensora-platform")["data"]
    assert endpoints["OPENSORA_MLFLOW_CREDENTIALS_SECRET"] == "opensora-mlflow-credentials"
    test_env = {e["name"]: e for e in find(docs, "Pod", f"{FULL}-test")["spec"]["containers"][0]["env"]}
    assert test_env["MLFLOW_AUTH"]["value"] == "true"
    assert test_env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULL}-mlflow-auth"


def test_ingress_scenario(rendered):
    docs = rendered["ingress-values"]
    ing = find(docs, "Ingress", f"{FULL}-mlflow")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"secretName": "mlflow-tls", "hosts": ["mlflow.ml.example.org"]}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULL}-mlflow", "port": {"name": "http"}}
    hosts = find(docs, "ConfigMap", f"{FULL}-mlflow")["data"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow.ml.example.org" in hosts and f"{FULL}-mlflow.{NAMESPACE}.svc.cluster.local:*" in hosts
    created = generated_secrets(docs)
    assert not [name for name in created if "auth" in name]  # existingSecret used
    assert "opensora-mlflow-credentials" in created  # the pipeline's login is still generated


def test_mlflow_server_settings(rendered):
    docs = rendered["default-values"]
    c = find(docs, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["mlflow", "server"] and "--serve-artifacts" in c["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    init = find(docs, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["initContainers"]
    assert [i["name"] for i in init] == ["migrate-database", "pipeline-user"]  # auth on by default
    assert init[0]["command"][-1] == 'exec mlflow db upgrade "$MLFLOW_BACKEND_STORE_URI"'
    cfg = find(docs, "ConfigMap", f"{FULL}-mlflow")["data"]
    assert cfg["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] == "true"
    assert cfg["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://opensora-mlflow"
    endpoints = find(docs, "ConfigMap", "opensora-platform")["data"]
    assert endpoints["MLFLOW_TRACKING_URI"] == f"http://{FULL}-mlflow.{NAMESPACE}.svc.cluster.local:5000"
    assert endpoints["S3_ENDPOINT_URL"] == f"http://{FULL}-seaweedfs.{NAMESPACE}.svc.cluster.local:8333"
    assert [endpoints[f"OPENSORA_S3_{step}_SECRET"] for step in ("PREPARE", "TRAIN", "EVALUATE")] == [
        "opensora-s3-prepare",
        "opensora-s3-train",
        "opensora-s3-evaluate",
    ]
    assert endpoints["OPENSORA_EVAL_PREFIX"] == "eval"
    # MLflow gets the key pair of its own identity (its artifacts bucket only), not the admin pair.
    mlflow_env = find(docs, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    s3_refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in mlflow_env
        if "valueFrom" in e and e["name"].startswith("AWS_")
    }
    assert s3_refs == {f"{FULL}-s3-mlflow"}
    assert endpoints["OPENSORA_MODEL_CACHE_PVC"] == "opensora-model-cache"
    assert endpoints["OPENSORA_CLIENT_LABEL"] == "opensora.io/client=true"
    assert endpoints["OPENSORA_MLFLOW_CREDENTIALS_SECRET"] == "opensora-mlflow-credentials"  # auth on
    cache = find(docs, "PersistentVolumeClaim", "opensora-model-cache")
    assert cache["spec"]["accessModes"] == ["ReadWriteMany"]
    assert cache["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_bucket_hook_and_helm_test(rendered):
    for docs in rendered.values():
        job = find(docs, "Job", f"{FULL}-create-buckets")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        buckets = {
            e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        }["BUCKETS"]
        assert len(buckets.split(",")) == 3
        pod = find(docs, "Pod", f"{FULL}-test")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["containers"][0]["command"] == ["python", "/scripts/platform_check.py"]
    scripts = find(rendered["default-values"], "ConfigMap", f"{FULL}-scripts")["data"]
    for name in ("create_buckets.py", "platform_check.py", "mlflow_pipeline_user.py"):
        assert scripts[name] == (CHART_DIR / "files" / name).read_text()


def test_notes_explain_the_ui_and_pipeline_submission(helm_bin: Path):
    res = run_helm(helm_bin, "install", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "--dry-run=client")
    notes = res.stdout.split("NOTES:", 1)[1]
    assert f"port-forward svc/{FULL}-mlflow 5000:5000" in notes
    assert "kfp run create -e <experiment> -f workflows/train_512.yaml" in notes
    assert f"helm test {RELEASE}" in notes


# ---------------------------------------------------------------- security assertions


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_restricted(rendered, scenario: str):
    problems = []
    for rid, spec in pod_specs(rendered[scenario]):
        psc = spec.get("securityContext", {})
        if (
            psc.get("runAsNonRoot") is not True
            or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault"
        ):
            problems.append(f"{rid}: pod securityContext not restricted")
        if (psc.get("runAsUser") or 0) < 1:
            problems.append(f"{rid}: runAsUser must be a non-root uid")
        # The secrets hook Job is the one pod with a token: its own ServiceAccount, deleted after the hook.
        token_ok = rid == f"Job/{SECRETS_HOOK}" and spec["serviceAccountName"] == SECRETS_HOOK
        if spec.get("automountServiceAccountToken") is not False and not token_ok:
            problems.append(f"{rid}: mounts a ServiceAccount token")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{rid}: uses host namespaces")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            problems.append(f"{rid}: mounts a hostPath")
        for c in containers(spec):
            sc = c.get("securityContext", {})
            expected = {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "privileged": False,
            }
            for key, want in expected.items():
                if sc.get(key) is not want:
                    problems.append(f"{rid}/{c['name']}: securityContext.{key} is {sc.get(key)!r}")
            if sc.get("capabilities") != {"drop": ["ALL"]}:
                problems.append(f"{rid}/{c['name']}: capabilities must drop ALL and add nothing")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{rid}/{c['name']}: seccomp is not RuntimeDefault")
            if "memory" not in c.get("resources", {}).get("limits", {}):
                problems.append(f"{rid}/{c['name']}: no memory limit")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                problems.append(f"{rid}/{c['name']}: no writable /tmp (read-only root filesystem)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_namespaced_and_minimal(rendered, scenario: str):
    docs = rendered[scenario]
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role = find(docs, "Role", f"{FULL}-pipeline")
    rules = {
        (r["apiGroups"][0], res): tuple(sorted(r["verbs"])) for r in role["rules"] for res in r["resources"]
    }
    job_verbs = tuple(sorted(["create", "get", "list", "watch", "delete"]))
    assert rules == {
        ("kubeflow.org", "pytorchjobs"): job_verbs,
        ("trainer.kubeflow.org", "trainjobs"): job_verbs,
        ("", "pods"): ("get", "list", "watch"),
        ("", "events"): ("get", "list", "watch"),
        ("", "pods/log"): ("get",),
    }
    binding = find(docs, "RoleBinding", f"{FULL}-pipeline")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{FULL}-pipeline",
    }
    assert {"kind": "ServiceAccount", "name": "opensora-pipeline", "namespace": NAMESPACE} in binding[
        "subjects"
    ]
    assert find(docs, "ServiceAccount", FULL)["automountServiceAccountToken"] is False


def _plaintext_credentials(docs: list[dict]) -> list[str]:
    found = []
    userinfo = re.compile(r"://[^/@\s:]+:[^/@\s]+@")  # scheme://user:password@host
    for d in docs:
        rid = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "ConfigMap":
            for key, value in d.get("data", {}).items():
                if SENSITIVE.search(key) and not key.endswith(
                    ("_SECRET", "_SECRETS", "_KEY_KEY", "_KEY_ID_KEY")
                ):
                    found.append(f"{rid}: data key {key}")
                if userinfo.search(value) or re.search(r"(?im)^\s*\w*password\s*=", value):
                    found.append(f"{rid}: data {key} holds a credential")
        for _, spec in pod_specs([d]) if d["kind"] in WORKLOAD_KINDS else []:
            for c in containers(spec):
                for e in c.get("env", []):
                    if SENSITIVE.search(e["name"]) and "value" in e:
                        found.append(f"{rid}/{c['name']}: env {e['name']} has a plain value")
                    if "value" in e and userinfo.search(str(e["value"])):
                        found.append(f"{rid}/{c['name']}: env {e['name']} embeds a password in a URI")
                for arg in [*c.get("command", []), *c.get("args", [])]:
                    if userinfo.search(arg) or re.search(r"pass(word)?=", arg, re.I):
                        found.append(f"{rid}/{c['name']}: argument {arg!r}")
                for src in c.get("envFrom", []):
                    if "secretRef" not in src and "configMapRef" not in src:
                        found.append(f"{rid}/{c['name']}: unexpected envFrom {src}")
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_plaintext_credentials(rendered, scenario: str):
    docs = rendered[scenario]
    assert not _plaintext_credentials(docs)
    # Helm renders no Secret at all: credentials come from existing Secrets or the hook Job creates them once.
    assert not by_kind(docs, "Secret")
    for rules in generated_secrets(docs).values():
        assert all(set(rule) in ({"random"}, {"value"}) for rule in rules.values())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_renders_are_byte_identical(helm_bin: Path, scenario: str):
    """Issue 14: a render must not generate passwords (helm template / Argo CD would rotate them each time)."""
    args = [
        "template",
        RELEASE,
        str(CHART_DIR),
        "-n",
        NAMESPACE,
        "-f",
        str(CHART_DIR / "ci" / f"{scenario}.yaml"),
    ]
    first, second = run_helm(helm_bin, *args).stdout, run_helm(helm_bin, *args).stdout
    assert first == second


def test_no_template_generates_or_looks_up_values():
    for tpl in (CHART_DIR / "templates").rglob("*"):
        if tpl.is_file():
            text = tpl.read_text()
            assert not re.search(
                r"\{\{[^}]*\b(lookup|rand(AlphaNum|Alpha|Numeric|Ascii|Bytes|Int)|uuidv4|now|genCA)\b", text
            ), f"{tpl.name} is not deterministic"


def test_plaintext_credential_detector_flags_examples():
    """Control: the detector above is not vacuous."""
    bad = [
        {
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "env": [{"name": "DB_PASSWORD", "value": "hunter2"}],
                                "args": ["--backend-store-uri=postgresql://u:hunter2@db/x"],
                            }
                        ]
                    }
                }
            },
        },
        {"kind": "ConfigMap", "metadata": {"name": "y"}, "data": {"AWS_SECRET_ACCESS_KEY": "abc"}},
    ]
    assert len(_plaintext_credentials(bad)) == 3


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies(rendered, scenario: str):
    docs = rendered[scenario]
    policies = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    deny = policies[f"{FULL}-default-deny"]
    assert deny["podSelector"] == {} and sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny
    mlflow = policies[f"{FULL}-mlflow"]["ingress"][0]
    peers = [json.dumps(p, sort_keys=True) for p in mlflow["from"]]
    for needle in (
        "pipelines.kubeflow.org/v2_component",
        "training.kubeflow.org/job-name",
        "jobset.sigs.k8s.io/jobset-name",
        '"app.kubernetes.io/instance": "opensora"',
    ):
        assert any(needle in p for p in peers), f"MLflow is not reachable from {needle}"
    # The ingress controller's namespace is opt-in (issue 14): only the Ingress scenario lets it in.
    assert any("ingress-nginx" in p for p in peers) == (scenario == "ingress-values")
    assert not any('"namespaceSelector": {}' in p for p in peers)
    assert mlflow["ports"] == [{"protocol": "TCP", "port": 5000}]
    for name, label in (
        ("pytorchjob", "training.kubeflow.org/job-name"),
        ("trainjob", "jobset.sigs.k8s.io/jobset-name"),
    ):
        spec = policies[f"{FULL}-{name}"]
        assert label in json.dumps(spec["podSelector"])
        assert spec["ingress"] == [{"from": [{"podSelector": spec["podSelector"]}]}]  # all ports: NCCL
    egress = policies[f"{FULL}-egress"]["egress"]
    assert policies[f"{FULL}-egress"]["podSelector"] == {}
    assert any(r.get("ports", [{}])[0].get("port") == 53 for r in egress)
    ip_blocks = [t["ipBlock"] for r in egress for t in r["to"] if "ipBlock" in t]
    assert all("169.254.169.254/32" in b["except"] for b in ip_blocks), "cloud metadata reachable"
    # Issue 14: no pod-wide egress to the internet or the API server; the API only for job-launching pods.
    everyone_ports = {p["port"] for r in egress if any("ipBlock" in t for t in r["to"]) for p in r["ports"]}
    assert not everyone_ports & {443, 6443} or scenario == "external-values"  # external S3 is on 443
    api = policies[f"{FULL}-kube-api"]
    assert api["podSelector"] == {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}}
    assert {p["port"] for p in api["egress"][0]["ports"]} == {443, 6443}
    assert f"{FULL}-internet" not in policies  # model hub downloads: only when configured
    if scenario == "external-values":
        assert f"{FULL}-seaweedfs" not in policies and f"{FULL}-postgresql" not in policies
        assert {5432, 443} <= {p["port"] for r in egress for p in r.get("ports", [])}
    else:
        s3 = policies[f"{FULL}-seaweedfs"]["ingress"][0]
        assert s3["from"] == mlflow["from"] and s3["ports"] == [{"protocol": "TCP", "port": 8333}]
        pg = policies[f"{FULL}-postgresql"]["ingress"][0]["from"]
        assert pg == [{"podSelector": {"matchLabels": {**_selector("mlflow")}}}]


def _selector(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "opensora-platform",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": component,
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_image_is_pinned(rendered, scenario: str):
    for rid, spec in pod_specs(rendered[scenario]):
        for c in containers(spec):
            image = c["image"]
            name, _, digest = image.partition("@")
            repo, _, tag = name.rpartition(":")
            assert repo and tag and "/" not in tag, f"{rid}/{c['name']}: {image} has no tag"
            assert tag != "latest", f"{rid}/{c['name']}: {image} uses latest"
            assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image


def test_digest_scenario_pins_every_image_by_digest(rendered):
    images = [c["image"] for _, spec in pod_specs(rendered["ingress-values"]) for c in containers(spec)]
    assert images and all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in images), images


def test_pod_disruption_budgets(rendered):
    docs = rendered["default-values"]
    mlflow = find(docs, "PodDisruptionBudget", f"{FULL}-mlflow")["spec"]
    assert mlflow == {"maxUnavailable": 1, "selector": {"matchLabels": _selector("mlflow")}}
    pg = find(docs, "PodDisruptionBudget", f"{FULL}-postgresql")["spec"]
    assert pg == {"minAvailable": 1, "selector": {"matchLabels": _selector("postgresql")}}
    external = {d["metadata"]["name"] for d in by_kind(rendered["external-values"], "PodDisruptionBudget")}
    assert external == {f"{FULL}-mlflow"}  # no in-cluster Postgres there


def test_internet_egress_is_opt_in_and_scoped(helm_bin: Path):
    docs = render(helm_bin, extra=("--set", "networkPolicy.internet.enabled=true"))
    spec = find(docs, "NetworkPolicy", f"{FULL}-internet")["spec"]
    assert spec["podSelector"] == {"matchLabels": {"opensora.io/client": "true"}}
    assert spec["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert spec["egress"][0]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]


def test_default_images_match_the_project_versions(rendered):
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject).group(1)
    assert chart["appVersion"] == version, "Chart appVersion must equal the project version (image tag)"
    pins = dict(
        line.split("==", 1)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )
    assert chart["annotations"]["opensora.io/mlflow-version"] == pins["mlflow"].strip()
    images = {c["image"] for _, spec in pod_specs(rendered["default-values"]) for c in containers(spec)}
    assert f"ghcr.io/opensora-platform/runtime:{version}" in images


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_data_survives_uninstall(rendered, scenario: str):
    for pvc in by_kind(rendered[scenario], "PersistentVolumeClaim"):
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_no_template_renders_more_than_one_resource():
    for tpl in (CHART_DIR / "templates").rglob("*.yaml"):
        text = tpl.read_text()
        assert len(re.findall(r"(?m)^kind:", text)) == 1, f"{tpl.name}: one resource per template"
        assert "\n---" not in text, f"{tpl.name}: one resource per template"


def test_extra_values_render_and_validate(helm_bin: Path, tmp_path: Path):
    """Optional knobs render valid manifests too (pull secrets, scheduling, existing claims, extras)."""
    extra = tmp_path / "extra.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "imagePullSecrets": [{"name": "regcred"}],
                "commonLabels": {"team": "video"},
                "mlflow": {
                    "nodeSelector": {"pool": "cpu"},
                    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                    "corsAllowedOrigins": ["https://notebooks.example.org"],
                    "allowedHosts": ["*.example.org"],
                    "service": {"type": "ClusterIP", "port": 80, "annotations": {"a": "b"}},
                },
                "postgresql": {
                    "persistence": {
                        "size": "20Gi",
                        "existingClaim": "old-mlflow-db",
                        "accessModes": ["ReadWriteOnce"],
                    }
                },
                "objectStorage": {
                    "seaweedfs": {
                        "persistence": {
                            "size": "1Ti",
                            "storageClass": "fast",
                            "accessModes": ["ReadWriteOnce"],
                        }
                    }
                },
                "networkPolicy": {"egress": {"extraRules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}},
            }
        )
    )
    docs = render(helm_bin, extra)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    assert ("PersistentVolumeClaim", f"{FULL}-postgresql") not in inventory(docs)
    sts = find(docs, "StatefulSet", f"{FULL}-postgresql")
    assert (
        sts["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "old-mlflow-db"
    )
    assert find(docs, "ConfigMap", "opensora-platform")["data"]["MLFLOW_TRACKING_URI"].endswith(":80")
    assert all(d["metadata"]["labels"]["team"] == "video" for d in docs)


def test_deploy_guide_matches_the_chart():
    guide = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for needle in (
        "helm install opensora helm/opensora-platform -n ml -f my-values.yaml",
        "run create -e <experiment> -f workflows/train_512.yaml",
        "helm.sh/resource-policy: keep",
        "helm uninstall opensora -n ml",
        "helm upgrade opensora helm/opensora-platform -n ml -f my-values.yaml",
    ):
        assert needle in guide, f"docs/deploy.md lacks {needle!r}"
    # Every resource name the guide tells users to delete or port-forward exists in the default install.
    names = {name for _, name in DEFAULT_RESOURCES} | {
        f"{FULL}-mlflow-auth",
        "opensora-mlflow-credentials",
        f"{FULL}-s3-admin",
        f"{FULL}-s3-mlflow",
        "opensora-s3-prepare",
        "opensora-s3-train",
        "opensora-s3-evaluate",
        f"{FULL}-postgresql",
    }
    mentioned = set(re.findall(r"\b(opensora-opensora-platform(?:-[a-z0-9]+)*)\b", guide))
    assert mentioned <= names, mentioned - names


def test_launch_policy_values_reach_the_pipeline_configmap(helm_bin):
    """pipelines.launchPolicy lists become the comma-separated OPENSORA_ALLOWED_* keys the train step reads
    (launchers.policy.LaunchPolicy.from_env); the model-cache claim is always allowed when the chart makes it."""
    from launchers.policy import LaunchPolicy

    extra = (
        "--set",
        "pipelines.launchPolicy.namespaces={ml-a,ml-b}",
        "--set",
        "pipelines.launchPolicy.pvcs={datasets}",
        "--set",
        "pipelines.launchPolicy.secrets={hf-token}",
    )
    docs = render(helm_bin, extra=extra)
    data = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "opensora-platform")[
        "data"
    ]
    assert data["OPENSORA_ALLOWED_NAMESPACES"] == "ml-a,ml-b"
    assert data["OPENSORA_ALLOWED_PVCS"] == "opensora-model-cache,datasets"
    assert data["OPENSORA_ALLOWED_SECRETS"] == "hf-token"
    assert data["OPENSORA_ALLOWED_SERVICE_ACCOUNTS"] == ""
    policy = LaunchPolicy.from_env("ml", data)
    assert policy.namespaces == ("ml", "ml-a", "ml-b") and policy.pvcs == ("opensora-model-cache", "datasets")
