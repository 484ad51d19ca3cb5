"""KFP ``TaskConfig`` -> ``TrainingJobSpec`` fields: what the pipeline set on the train task goes to the job.

The train component declares the passthroughs (resources, tolerations, node selector, env, volumes); this
module translates what KFP hands it. It takes the ``TaskConfig`` or a plain dict with the same keys and imports
no kfp.
"""

import os
from collections.abc import Mapping
from typing import Any

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def spec_fields_from_task_config(
    task_config: Any, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``TrainingJobSpec`` fields from a KFP ``TaskConfig`` (or a dict with the same keys).

    - resources: GPU limits -> ``gpus_per_node`` (and ``gpu_resource``), cpu/memory -> ``cpu``/``memory``;
    - tolerations, node selector: as they are;
    - env: plain values -> ``env``; Secret references -> ``secret_env``; ConfigMap/field references are
      resolved from ``environ`` (this pod's environment, where Kubernetes already put their values);
    - volumes + mounts: PVC, ConfigMap, Secret, emptyDir and hostPath volumes with their mount (the launcher
      manages ``/dev/shm``; other volume kinds are skipped with a note in ``"skipped"``).

    Absent fields are left out, so the pipeline parameters apply.
    """
    environ = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    skipped: list[str] = []

    resources = _get(task_config, "resources") or {}
    limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    for gpu in GPU_RESOURCES:
        if gpu in limits:
            out["gpus_per_node"] = int(str(limits[gpu]))
            out["gpu_resource"] = gpu
            break
    for key in ("cpu", "memory"):
        if key in limits:
            out[key] = str(limits[key])

    tolerations = _get(task_config, "tolerations")
    if tolerations:
        out["tolerations"] = [
            {
                "key": t.get("key"),
                "operator": t.get("operator") or "Equal",
                "value": t.get("value"),
                "effect": t.get("effect"),
                "toleration_seconds": t.get("tolerationSeconds"),
            }
            for t in tolerations
        ]
    selector = _get(task_config, "node_selector")
    if selector:
        out["node_selector"] = {str(k): str(v) for k, v in selector.items()}

    env, secret_env = {}, []
    for item in _get(task_config, "env") or []:
        name = item.get("name")
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            entry = {"name": name, "secret": ref["name"], "key": ref["key"]}
            if ref.get("optional"):  # e.g. the MLflow login Secret, absent when MLflow auth is off
                entry["optional"] = True
            secret_env.append(entry)
        elif source:
            if name in environ:
                env[name] = environ[name]
            else:
                skipped.append(f"env {name} (valueFrom {sorted(source)} not resolvable here)")
        elif "value" in item:
            env[name] = str(item["value"])
    if env:
        out["env"] = env
    if secret_env:
        out["secret_env"] = secret_env

    mounts = {m["name"]: m for m in _get(task_config, "volume_mounts") or []}
    volumes = []
    for vol in _get(task_config, "volumes") or []:
        name = vol.get("name")
        mount = mounts.get(name)
        if mount is None:
            skipped.append(f"volume {name} (not mounted)")
            continue
        if mount.get("mountPath") == "/dev/shm" or name == "dshm":
            skipped.append(f"volume {name} (/dev/shm is sized by the launcher's shm_size)")
            continue
        spec: dict[str, Any] = {
            "name": name,
            "mount_path": mount["mountPath"],
            "read_only": bool(mount.get("readOnly", False)),
            "sub_path": mount.get("subPath") or None,
        }
        if "persistentVolumeClaim" in vol:
            spec["pvc"] = vol["persistentVolumeClaim"]["claimName"]
        elif "configMap" in vol:
            spec["config_map"] = vol["configMap"]["name"]
        elif "secret" in vol:
            spec["secret"] = vol["secret"]["secretName"]
        elif "emptyDir" in vol:
            spec["empty_dir"] = True
            spec["size_limit"] = (vol["emptyDir"] or {}).get("sizeLimit")
        elif "hostPath" in vol:
            spec["host_path"] = vol["hostPath"]["path"]
        else:
            skipped.append(f"volume {name} (kind {sorted(k for k in vol if k != 'name')} not supported)")
            continue
        volumes.append(spec)
    if volumes:
        out["volumes"] = volumes
    if skipped:
        out["skipped"] = skipped
    return out
