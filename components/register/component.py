"""Pipeline step `register`: log the checkpoint to MLflow as a pyfunc model and register a version.

The body only calls :func:`opensora_core.model_registry.register_checkpoint`: lineage tags (dataset URI and
hash, config hash, git commit, image, pipeline run id), alias ``candidate`` always, ``champion`` when the
evaluate step's ``gate_decision`` passed (and the champion it compared with is still the champion), the
model card (:func:`opensora_core.eval.model_card.model_card`) as the version's description. Re-running with
the same checkpoint reuses its version.
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
    gate_decision: dict = None,
    tracking_uri: str = "",
    experiment: str = "opensora",
    eval_run_id: str = "",
    dataset_uri: str = "",
    dataset_sha256: str = "",
    image: str = "",
    pipeline_run_id: str = "",
    git_commit: str = "",
    weights: str = "ema",
    run_name: str = "",
) -> NamedTuple(
    "RegisterOutputs",
    [("model_name", str), ("version", str), ("aliases", list), ("champion", bool), ("model_uri", str)],
):
    """Register ``checkpoint_uri`` as a version of ``model_name`` (see opensora_core.model_registry).

    ``metrics``: the evaluation's (recorded with the version); ``gate_decision``: the evaluate step's (empty:
    never champion). ``eval_run_id``: the MLflow run the model is logged into (empty: a new run).
    ``tracking_uri`` empty means ``$MLFLOW_TRACKING_URI``. ``run_name``: the pipeline run's name, naming a new
    run ``{run_name}-register``.
    """
    import json
    import os
    from collections import namedtuple

    from opensora_core.champion import still_champion
    from opensora_core.checkpoint import CONFIG_JSON
    from opensora_core.eval.gate import GateDecision
    from opensora_core.eval.model_card import model_card
    from opensora_core.io import storage
    from opensora_core.io.tracking import step_run_name
    from opensora_core.model_registry import register_checkpoint

    lineage = {
        "dataset_uri": dataset_uri,
        "dataset_sha256": dataset_sha256,
        "image": image,
        "pipeline_run_id": pipeline_run_id,
        "git_commit": git_commit,
    }
    lineage = {k: v for k, v in lineage.items() if v}
    decision = GateDecision.from_dict(
        gate_decision or {"passed": False, "details": ["no gate decision given"]}
    )
    decision = still_champion(decision, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""), model_name)
    config = json.loads(storage.read_bytes(storage.join(checkpoint_uri, CONFIG_JSON)))
    result = register_checkpoint(
        checkpoint_uri,
        model_name,
        tracking_uri=tracking_uri or None,
        experiment=experiment or "opensora",
        run_id=eval_run_id or None,
        run_name=step_run_name(run_name or pipeline_run_id, "register"),
        metrics=dict(metrics or {}),
        lineage=lineage,
        weights=weights,
        decision=decision,
        description=model_card(checkpoint_uri, config, dict(metrics or {}), lineage, decision),
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
