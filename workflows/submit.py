"""Submit a compiled pipeline to Kubeflow Pipelines without the `kfp` CLI: ``python -m workflows.submit``.

    python -m workflows.submit train_512 --experiment opensora \\
        --host https://kubeflow.example.org/pipeline \\
        --param raw_data_uri=s3://opensora-datasets/raw/clips --param num_nodes=4 \\
        --param 'tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]'

(``make submit PIPELINE=train_512 EXPERIMENT=opensora ARGS="--param num_nodes=4"``.) ``PIPELINE`` is a preset
name (``workflows/<name>.yaml``) or a path to a compiled YAML. ``--param KEY=VALUE`` values are JSON when they
parse as JSON (numbers, booleans, lists, dicts), strings otherwise; ``--params-file`` reads a JSON object.
``git_commit`` defaults to this checkout's HEAD so the registered model records the source it came from.

Connection: ``--host`` (or ``$KFP_HOST``), ``--namespace`` (multi-user Kubeflow profile, or
``$KFP_NAMESPACE``), ``--token`` (or ``$KFP_TOKEN``; in a Kubeflow notebook the service-account token is used
automatically), ``--service-account`` (the chart creates ``opensora-pipeline``, allowed to launch training
jobs). The run is created with ``kfp.Client.create_run_from_pipeline_package``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

WORKFLOWS_DIR = Path(__file__).resolve().parent


def resolve_pipeline(pipeline: str) -> Path:
    """A preset name (``train_512``) or a YAML path -> the compiled pipeline file (FileNotFoundError if none)."""
    candidates = [Path(pipeline), WORKFLOWS_DIR / pipeline, WORKFLOWS_DIR / f"{pipeline}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    presets = sorted(p.stem for p in WORKFLOWS_DIR.glob("*.yaml"))
    raise FileNotFoundError(
        f"no compiled pipeline {pipeline!r}: use one of {presets} or a path to a YAML file"
    )


def parse_params(items: list[str], params_file: str | None = None) -> dict[str, Any]:
    """``["a=1", "b=[1, 2]", "c=text"]`` -> ``{"a": 1, "b": [1, 2], "c": "text"}`` (file values first)."""
    params: dict[str, Any] = {}
    if params_file:
        loaded = json.loads(Path(params_file).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{params_file} must hold a JSON object of parameter values")
        params.update(loaded)
    from opensora_core.config import split_key_value

    for item in items:
        key, value = split_key_value(item, "--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def pipeline_parameters(path: Path) -> set[str]:
    """Names of the root parameters of a compiled pipeline."""
    import yaml

    spec = next(
        yaml.safe_load_all(path.read_text())
    )  # the pipeline spec; a second document has platform config
    return set(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def submit(
    pipeline: str,
    experiment: str,
    params: dict[str, Any] | None = None,
    *,
    host: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    run_name: str | None = None,
    service_account: str | None = None,
    client: Any = None,
) -> Any:
    """Create a run of ``pipeline`` in ``experiment``; returns kfp's RunPipelineResult (``.run_id``).

    Unknown parameter names are an error (listing the valid ones). ``client`` replaces ``kfp.Client`` (tests).
    """
    path = resolve_pipeline(pipeline)
    params = dict(params or {})
    valid = pipeline_parameters(path)
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"unknown pipeline parameters {unknown}; {path.name} takes {sorted(valid)}")
    if "git_commit" in valid and not params.get("git_commit"):
        from opensora_core.config.identity import git_commit

        commit = git_commit(WORKFLOWS_DIR)
        if commit:
            params["git_commit"] = commit
    if client is None:
        import kfp

        client = kfp.Client(
            host=host or os.environ.get("KFP_HOST") or None,
            namespace=namespace or os.environ.get("KFP_NAMESPACE") or "kubeflow",
            existing_token=token or os.environ.get("KFP_TOKEN") or None,
        )
    return client.create_run_from_pipeline_package(
        str(path),
        arguments=params,
        run_name=run_name or f"{path.stem}-{experiment}",
        experiment_name=experiment,
        namespace=namespace or os.environ.get("KFP_NAMESPACE") or None,
        enable_caching=False,
        service_account=service_account or None,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`make submit`)."""
    parser = argparse.ArgumentParser(prog="python -m workflows.submit", description=__doc__.splitlines()[0])
    parser.add_argument(
        "pipeline", help="preset name (train_256, train_512, train_v1_1) or compiled YAML path"
    )
    parser.add_argument("--experiment", "-e", required=True, help="Kubeflow Pipelines experiment name")
    parser.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--params-file", help="JSON object with parameter values")
    parser.add_argument("--host", help="KFP API endpoint (default $KFP_HOST)")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (default $KFP_NAMESPACE)")
    parser.add_argument("--token", help="bearer token (default $KFP_TOKEN)")
    parser.add_argument("--run-name", help="run name (default <pipeline>-<experiment>)")
    parser.add_argument(
        "--service-account", help="ServiceAccount the steps run as (the chart's: opensora-pipeline)"
    )
    args = parser.parse_args(argv)
    try:
        params = parse_params(args.param, args.params_file)
        result = submit(
            args.pipeline,
            args.experiment,
            params,
            host=args.host,
            namespace=args.namespace,
            token=args.token,
            run_name=args.run_name,
            service_account=args.service_account,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"submitted run {result.run_id} in experiment {args.experiment!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
