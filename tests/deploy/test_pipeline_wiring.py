"""The chart and the compiled pipeline agree: `helm install opensora helm/opensora-platform -n ml` followed by
`kfp run create -f workflows/train_512.yaml` with default parameters finds every name it refers to.

Checked on the rendered chart (release `opensora`, namespace `ml`) against the compiled YAML: Secrets and their
keys, the ConfigMap and its keys, the cache PVC, the RBAC subjects, the pod labels the NetworkPolicies accept,
the user the images run as, the image names (Makefile, chart, pipeline), and the training pods the launchers build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchers import TrainingJobSpec
from launchers.images import TRAIN_IMAGE
from launchers.pytorchjob import build_pytorchjob
from launchers.task_config import spec_fields_from_task_config
from launchers.trainjob import build_trainjob
from tests.deploy.conftest import CHART_DIR, NAMESPACE, REPO_ROOT, generated_secrets, render

PIPELINE_FILE = REPO_ROOT / "workflows" / "train_512.yaml"
IMAGE_UID = 10001  # images/README.md: both images run as uid/gid 10001


# ---------------------------------------------------------------- helpers


def _pipeline() -> tuple[dict[str, Any], dict[str, dict]]:
    """(root parameter defaults, kubernetes executor configs) of the compiled pipeline."""
    spec, platform = list(yaml.safe_load_all(PIPELINE_FILE.read_text()))
    defaults = {
        name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()
    }
    return defaults, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _param(ref: dict, defaults: dict[str, Any]) -> str:
    """The default value a `componentInputParameter` reference resolves to (tasks sit in the root DAG)."""
    if "componentInputParameter" in ref:
        return defaults[ref["componentInputParameter"]]
    return ref["runtimeValue"]["constant"]


def _find(docs: list[dict], kind: str, name: str) -> dict | None:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) <= 1
    return matches[0] if matches else None


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches `labels` (matchLabels plus In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": key not in labels or labels[key] not in values,
        }[op]
        if not ok:
            return False
    return True


def _admitted(docs: list[dict], policy: str, labels: dict[str, str]) -> bool:
    """Whether a pod of the release namespace with `labels` may reach the pods of NetworkPolicy `policy`."""
    spec = _find(docs, "NetworkPolicy", policy)["spec"]
    peers = [p for rule in spec["ingress"] for p in rule["from"]]
    return any(
        "podSelector" in p and "namespaceSelector" not in p and _selects(p["podSelector"], labels)
        for p in peers
    )


@pytest.fixture(scope="module")
def chart(helm_bin: Path) -> list[dict]:
    return render(helm_bin, CHART_DIR / "ci" / "default-values.yaml")


@pytest.fixture(scope="module")
def chart_auth(helm_bin: Path) -> list[dict]:
    return render(helm_bin, CHART_DIR / "ci" / "auth-values.yaml")


FULL = "opensora-opensora-platform"
STORES = (f"{FULL}-mlflow", f"{FULL}-seaweedfs")  # NetworkPolicies of MLflow and the S3 gateway


# ---------------------------------------------------------------- pipeline -> chart


def test_every_secret_the_pipeline_reads_exists_with_its_keys(chart):
    defaults, executors = _pipeline()
    created = generated_secrets(chart)  # the chart renders no Secret: its hook Job creates them once
    checked = set()
    for name, ex in executors.items():
        for ref in ex.get("secretAsEnv", []):
            secret_name = _param(ref["secretNameParameter"], defaults)
            keys = {k["secretKey"] for k in ref["keyToEnv"]}
            assert secret_name in created, f"{name}: Secret {secret_name!r} is not created by the chart"
            assert keys <= set(created[secret_name]), (
                f"{name}: Secret {secret_name} lacks {keys - set(created[secret_name])}"
            )
            checked.add(secret_name)
    assert checked == {
        "opensora-s3-prepare",
        "opensora-s3-train",
        "opensora-s3-evaluate",
        "opensora-mlflow-credentials",
    }


# Which of the chart's S3 identities each pipeline step must run with (the training job inherits train's).
STEP_IDENTITY = {
    "exec-prepare-data": "prepare",
    "exec-train": "train",
    "exec-evaluate": "evaluate",
    "exec-register": "evaluate",
}


def _seaweedfs_identities(chart: list[dict]) -> dict[str, tuple[str, list[str]]]:
    """Identity name -> (Secret the SeaweedFS pod reads its key pair from, the actions SeaweedFS grants it)."""
    init = _find(chart, "Deployment", f"{FULL}-seaweedfs")["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e for e in init["env"]}
    actions = {i["name"]: i["actions"] for i in json.loads(env["IDENTITIES"]["value"])}
    return {
        name: (env[f"S3_{name.upper()}_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"], acts)
        for name, acts in actions.items()
    }


def test_each_step_mounts_the_s3_identity_the_chart_scopes_for_it(chart):
    """Issue 14: every step reads its S3 key pair from the Secret the chart made for that step's identity, and
    the pipeline's default locations lie where that identity may write (no step gets the admin pair)."""
    defaults, executors = _pipeline()
    identities = _seaweedfs_identities(chart)
    s3_secrets = {}
    for step, ex in executors.items():
        refs = [
            r
            for r in ex.get("secretAsEnv", [])
            if any(k["envVar"] == "AWS_ACCESS_KEY_ID" for k in r["keyToEnv"])
        ]
        assert len(refs) == 1, f"{step}: {len(refs)} S3 key pairs"
        s3_secrets[step] = _param(refs[0]["secretNameParameter"], defaults)
    assert s3_secrets == {step: identities[who][0] for step, who in STEP_IDENTITY.items()}
    assert identities["admin"][0] not in s3_secrets.values()
    cm = _find(chart, "ConfigMap", defaults["config_map_name"])["data"]
    assert [cm[f"OPENSORA_S3_{k}_SECRET"] for k in ("PREPARE", "TRAIN", "EVALUATE")] == [
        defaults["prepare_s3_secret_name"],
        defaults["train_s3_secret_name"],
        defaults["evaluate_s3_secret_name"],
    ]

    def may(identity: str, action: str, uri: str) -> bool:
        path = uri.removeprefix("s3://")
        bucket = path.split("/")[0]
        return any(
            a in (f"{action}:{bucket}", "Admin")
            or (a.startswith(f"{action}:") and a.endswith("/*") and path.startswith(a.split(":", 1)[1][:-1]))
            for a in identities[identity][1]
        )

    assert may("prepare", "Write", defaults["raw_data_uri"] + "/meta.csv")
    assert may("train", "Read", defaults["raw_data_uri"] + "/meta.csv")
    assert may("train", "Write", defaults["outputs_uri"] + "/run/ckpt")
    assert may("evaluate", "Read", defaults["outputs_uri"] + "/run/ckpt")
    assert may("evaluate", "Write", defaults["eval_output_uri"] + "/run/grid.png")
    assert not may("evaluate", "Write", defaults["outputs_uri"] + "/run/ckpt")
    assert not may("train", "Write", defaults["raw_data_uri"] + "/meta.csv")
    assert not may("prepare", "Read", defaults["outputs_uri"] + "/run/ckpt")


def test_the_configmap_the_pipeline_reads_exists_with_its_keys(chart):
    defaults, executors = _pipeline()
    for name, ex in executors.items():
        refs = ex.get("configMapAsEnv", [])
        assert refs, f"{name}: no endpoints ConfigMap"
        for ref in refs:
            cm = _find(chart, "ConfigMap", _param(ref["configMapNameParameter"], defaults))
            assert cm is not None, f"{name}: ConfigMap {ref} is not created by the chart"
            missing = {k["configMapKey"] for k in ref["keyToEnv"]} - set(cm["data"])
            assert not missing, f"{name}: ConfigMap {cm['metadata']['name']} lacks {missing}"
    cm = _find(chart, "ConfigMap", defaults["config_map_name"])["data"]
    # The ConfigMap lists the other names pipeline users need.
    assert cm["OPENSORA_MODEL_CACHE_PVC"] == defaults["cache_pvc"]
    assert cm["OPENSORA_PIPELINE_SERVICE_ACCOUNT"] == "opensora-pipeline"


def test_the_cache_pvc_exists_and_is_shared(chart):
    defaults, executors = _pipeline()
    mounted = {
        _param(m["pvcNameParameter"], defaults) for ex in executors.values() for m in ex.get("pvcMount", [])
    }
    assert mounted == {defaults["cache_pvc"]}
    for claim in mounted:
        pvc = _find(chart, "PersistentVolumeClaim", claim)
        assert pvc is not None, f"PVC {claim!r} is not created by the chart"
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # pods of several nodes mount it
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_service_accounts_the_pipeline_uses_are_bound_to_the_role(chart):
    defaults, _ = _pipeline()
    binding = _find(chart, "RoleBinding", f"{FULL}-pipeline")
    subjects = {(s["name"], s["namespace"]) for s in binding["subjects"]}
    # The runner of multi-user Kubeflow profile namespaces launches the jobs; the chart's SA is bound as well.
    assert {("default-editor", NAMESPACE), ("opensora-pipeline", NAMESPACE)} <= subjects
    assert _find(chart, "ServiceAccount", "opensora-pipeline") is not None
    if defaults["service_account"]:  # the training pods' ServiceAccount, when a preset names one
        assert _find(chart, "ServiceAccount", defaults["service_account"]) is not None


def test_pipeline_step_pods_are_admitted_by_the_network_policies(chart):
    _, executors = _pipeline()
    for name, ex in executors.items():
        labels = ex.get("podMetadata", {}).get("labels", {})
        assert labels, f"{name}: no pod labels"
        for policy in STORES:
            # The explicit label alone suffices (KFP's own v2_component label is allowed too).
            assert _admitted(chart, policy, labels), f"{name} ({labels}) may not reach {policy}"
    assert not _admitted(chart, f"{FULL}-mlflow", {"app": "unrelated"})  # control


def test_pipeline_step_pods_run_as_the_images_user(chart):
    _, executors = _pipeline()
    for name, ex in executors.items():
        sc = ex.get("securityContext", {})
        assert int(sc.get("runAsUser", -1)) == IMAGE_UID, name
        assert int(sc.get("runAsGroup", -1)) == IMAGE_UID, name
        assert sc.get("runAsNonRoot") is True, name
    mlflow = _find(chart, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]
    assert mlflow["securityContext"]["runAsUser"] == IMAGE_UID


# ---------------------------------------------------------------- launchers -> chart


def _default_spec(**fields: Any) -> TrainingJobSpec:
    return TrainingJobSpec(
        name="opensora-train-run1",
        namespace=NAMESPACE,
        image=TRAIN_IMAGE,
        config="configs/opensora/train/16x512x512.py",
        **fields,
    )


def _check_training_pod(chart: list[dict], labels: dict[str, str], pod: dict, operator_label: str) -> None:
    for policy in STORES:
        assert _admitted(chart, policy, labels), f"training pod {labels} may not reach {policy}"
        # Also with the operator's label alone (added by the Training Operator / JobSet).
        assert _admitted(chart, policy, {operator_label: "opensora-train-run1"})
    psc = pod["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (IMAGE_UID, IMAGE_UID, IMAGE_UID)
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", "/cache", "/dev/shm"):
        assert path in mounts, f"training pod has no writable {path}"
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_pytorchjob_pods_carry_the_labels_and_user_the_chart_and_images_need(chart):
    job = build_pytorchjob(_default_spec(num_nodes=2))
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        template = replica["template"]
        _check_training_pod(
            chart, template["metadata"]["labels"], template["spec"], "training.kubeflow.org/job-name"
        )
        assert "emptyDir" in {v["name"]: v for v in template["spec"]["volumes"]}["scratch-cache"]


def test_trainjob_pods_carry_the_labels_and_user_the_chart_and_images_need(chart):
    job = build_trainjob(_default_spec())
    replicated = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    template = replicated[0]["template"]["spec"]["template"]
    _check_training_pod(
        chart, template["metadata"]["labels"], template["spec"], "jobset.sigs.k8s.io/jobset-name"
    )


def test_forwarded_step_settings_reach_the_training_pods(chart):
    """The train step's env and volumes (TaskConfig) as KFP hands them over, with the chart's default names."""
    defaults, _ = _pipeline()
    task_config = {
        "env": [
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {
                    "secretKeyRef": {"name": defaults["train_s3_secret_name"], "key": "AWS_ACCESS_KEY_ID"}
                },
            },
            {
                "name": "MLFLOW_TRACKING_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": defaults["mlflow_secret_name"],
                        "key": "MLFLOW_TRACKING_PASSWORD",
                        "optional": True,
                    }
                },
            },
        ],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": defaults["cache_pvc"]}}],
        "volume_mounts": [{"name": "cache", "mountPath": "/cache"}],
    }
    fields = spec_fields_from_task_config(task_config, environ={})
    fields.pop("skipped", None)
    job = build_pytorchjob(_default_spec(**fields))
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"] if "valueFrom" in e}
    assert env["AWS_ACCESS_KEY_ID"]["name"] in generated_secrets(chart)
    # The MLflow login Secret (auth is on by default); optional, so pods also start where auth is turned off.
    assert env["MLFLOW_TRACKING_PASSWORD"]["name"] in generated_secrets(chart)
    assert env["MLFLOW_TRACKING_PASSWORD"]["optional"] is True
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/cache"]]["persistentVolumeClaim"]["claimName"] == defaults["cache_pvc"]
    assert "scratch-cache" not in volumes  # the PVC replaces the emptyDir
    assert _find(chart, "PersistentVolumeClaim", defaults["cache_pvc"]) is not None


# ---------------------------------------------------------------- images


def test_makefile_chart_and_pipeline_name_the_same_images(chart):
    makefile = (REPO_ROOT / "Makefile").read_text()
    repo = re.search(r"(?m)^IMAGE_REPO \?= (\S+)$", makefile).group(1)
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    assert repo == "ghcr.io/opensora-platform"
    runtime, train = f"{repo}/runtime:{version}", f"{repo}/train:{version}"
    mlflow = _find(chart, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["image"] == runtime
    defaults, _ = _pipeline()
    assert (defaults["runtime_image"], defaults["train_image"]) == (runtime, train)
    assert train == TRAIN_IMAGE
    spec = next(yaml.safe_load_all(PIPELINE_FILE.read_text()))
    # The train component's own default is empty (= this release's train image, resolved at run time by
    # launchers.images); the pipeline always passes train_image.
    assert spec["components"]["comp-train"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == ""
    executor_images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    # Every step's image is one of the two pipeline parameters checked above.
    assert executor_images == {
        "{{$.inputs.parameters['pipelinechannel--runtime_image']}}",
        "{{$.inputs.parameters['pipelinechannel--train_image']}}",
    }


# ---------------------------------------------------------------- the pipeline's MLflow user


def test_pipeline_user_script_creates_then_updates_the_user(chart_auth, tmp_path: Path):
    """The MLflow pods' `pipeline-user` init container script, run against a SQLite user store."""
    import subprocess
    import sys

    script = tmp_path / "mlflow_pipeline_user.py"
    script.write_text(_find(chart_auth, "ConfigMap", f"{FULL}-scripts")["data"]["mlflow_pipeline_user.py"])
    ini = _find(chart_auth, "ConfigMap", f"{FULL}-mlflow-auth")["data"]["basic_auth.ini"]
    db = tmp_path / "auth.db"
    (tmp_path / "auth.ini").write_text(
        re.sub(r"(?m)^database_uri = .*$", f"database_uri = sqlite:///{db}", ini)
    )
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_TRACKING_USERNAME": "opensora-pipeline",
    }
    outputs = []
    for secret in (
        "first-generated-pw-0123456789",
        "first-generated-pw-0123456789",
        "rotated-pw-0123456789abc",
    ):
        res = subprocess.run(
            [sys.executable, str(script)],
            env={**base, "MLFLOW_TRACKING_PASSWORD": secret},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert res.returncode == 0, res.stderr
        outputs.append(res.stdout.strip().splitlines()[-1])
    assert outputs == [
        "MLflow user opensora-pipeline: created",
        "MLflow user opensora-pipeline: unchanged",
        "MLflow user opensora-pipeline: password updated",
    ]
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{db}")
    assert store.authenticate_user("opensora-pipeline", "rotated-pw-0123456789abc")
    assert store.get_user("opensora-pipeline").is_admin is False
    # The admin account is never touched.
    res = subprocess.run(
        [sys.executable, str(script)],
        env={**base, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "x" * 20},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 2 and "is the admin user" in res.stderr
