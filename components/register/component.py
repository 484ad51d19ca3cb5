"""Pipeline step `register`: log the checkpoint to MLflow as a pyfunc model and register a version.

The body only calls :func:`opensora_core.model_registry.register_checkpoint`: lineage tags (dataset URI and
hash, config hash, git commit, image, pipeline run id), alias ``candidate`` always, ``champion`` when the
evaluation metrics pass ``gate``. Re-running with the same checkpoint reuses its version.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def register(
    checkpoint_uri: str,
    model_name: str,
    registration: Output[Artifact],
    metrics: dict = None,
    gate: dict = None,
    tracking_uri: str = "",
    experiment: str = "opensora",
    eval_run_id: str = "",
    dataset_uri: str = "",
    dataset_sha256: str = "",
    image: str = "",
    pipeline_run_id: str = "",
    git_commit: str = "",
    weights: str = "ema",
) -> NamedTuple(
    "RegisterOutputs",
    [("model_name", str), ("version", str), ("aliases", list), ("champion", bool), ("model_uri", str)],
):
    """Register ``checkpoint_uri`` as a version of ``model_name`` (see opensora_core.model_registry).

    ``metrics`` (the evaluation's) are checked against ``gate`` (``{"metric": min, "metric<=": max}``; empty:
    never champion). ``eval_run_id``: the MLflow run the model is logged into (empty: a new run).
    ``tracking_uri`` empty means ``$MLFLOW_TRACKING_URI``.
    """
    import json
    from collections import namedtuple

    from opensora_core.model_registry import register_checkpoint

    lineage = {
        "dataset_uri": dataset_uri,
        "dataset_sha256": dataset_sha256,
        "image": image,
        "pipeline_run_id": pipeline_run_id,
        "git_commit": git_commit,
    }
    result = register_checkpoint(
        checkpoint_uri,
        model_name,
        tracking_uri=tracking_uri or None,
        experiment=experiment or "opensora",
        run_id=eval_run_id or None,
        metrics=dict(metrics or {}),
        gate=dict(gate or {}),
        lineage={k: v for k, v in lineage.items() if v},
        weights=weights,
        require_lineage=bool(pipeline_run_id),  # in a pipeline run, only promote pipeline-registered versions
    )
    print(
        f"registered {result.name} version {result.version} ({'reused' if result.reused else 'new'}), "
        f"aliases {result.aliases}; gate: {result.gate.summary()}",
        flush=True,
    )
    summary = {
        "model_name": result.name,
        "version": result.version,
        "aliases": result.aliases,
        "champion": result.champion,
        "gate_passed": result.gate.passed,
        "gate": list(result.gate.details),
        "reused": result.reused,
        "model_uri": result.model_uri,
        "run_id": result.run_id,
        "checkpoint_sha256": result.checkpoint_sha256,
    }
    with open(registration.path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    registration.metadata.update({k: v for k, v in summary.items() if k != "gate"})
    outputs = namedtuple("RegisterOutputs", ["model_name", "version", "aliases", "champion", "model_uri"])
    return outputs(result.name, result.version, result.aliases, result.champion, result.model_uri)
