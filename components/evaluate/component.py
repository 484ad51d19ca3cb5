"""Pipeline step `evaluate`: score the checkpoint, compare it with the registered champion, log to MLflow.

The body only calls :func:`opensora_core.eval.evaluate` (sampling, validation loss on the held-out table,
metrics, preview grid, MLflow run) and :func:`opensora_core.champion.gate_against_champion` (the gate
decision against ``model_name@champion``, the side-by-side page). Videos and previews go to
``{output_uri}/{run_id}`` (local or ``s3://``) and to the MLflow run; KFP gets the headline numbers (a
``Metrics`` artifact and a ``metrics`` dict output), the side-by-side ``HTML`` and a small JSON report.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Metrics, Output

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def evaluate(
    checkpoint_uri: str,
    output_uri: str,
    eval_metrics: Output[Metrics],
    report: Output[Artifact],
    comparison: Output[HTML],
    prompts: list = None,
    weights: list = None,
    overrides: list = None,
    num_sampling_steps: int = 0,
    cfg_scale: float = -1.0,
    seed: int = 0,
    batch_size: int = 16,
    tracking_uri: str = "",
    experiment: str = "",
    run_id: str = "",
    train_run_id: str = "",
    val_table: str = "",
    num_eval_timesteps: int = 10,
    model_name: str = "",
    gate: dict = None,
    run_name: str = "",
    clip_model: str = "",
    fvd_extractor: str = "",
    processes: int = 1,
) -> NamedTuple(
    "EvalOutputs",
    [
        ("metrics", dict),
        ("output_uri", str),
        ("mlflow_run_id", str),
        ("gate_decision", dict),
        ("model_name", str),
    ],
):
    """Evaluate ``checkpoint_uri`` (see opensora_core.eval.evaluate).

    ``prompts``: the evaluation prompt set (empty: every synthetic caption). ``weights``: variants to sample
    (default ``["ema", "untrained"]``: the trained EMA weights and the untrained model, same seed).
    ``overrides``: sampling config overrides (``KEY=VALUE``). ``num_sampling_steps`` 0 and ``cfg_scale`` < 0
    keep the config's values. MLflow logging is on when ``tracking_uri`` or ``$MLFLOW_TRACKING_URI`` is set.
    ``val_table``: the held-out metadata table for the validation loss (empty: none). ``model_name``: the
    registered model whose champion the gate compares with (empty: ``opensora-{family}-{size}`` of the
    checkpoint's config); ``gate``: ``{"thresholds": {...}, "margins": {...}}`` (empty: the defaults).
    ``run_name``: the pipeline run's name (the MLflow run is ``{run_name}-eval``; empty: ``{run_id}-eval``).
    ``clip_model``: CLIP hub id or folder for ``clip_score`` (empty: off); ``fvd_extractor``: TorchScript file
    (trusted: it runs its graph) or transformers video model for ``fvd`` against ``val_table`` (empty: off).
    ``processes``: ranks of the evaluation in this pod (the pipeline passes its GPU count); above 1 the prompts
    and held-out batches are split over ``torchrun`` ranks (``opensora_core.eval.cli.evaluate_data_parallel``),
    with the same results as one process.
    """
    import json
    import math
    import os
    from collections import namedtuple

    from opensora_core.champion import gate_against_champion
    from opensora_core.eval import evaluate as run_evaluation
    from opensora_core.eval.cli import evaluate_data_parallel
    from opensora_core.eval.model_card import resolve_model_name
    from opensora_core.io import storage
    from opensora_core.io.tracking import step_run_name

    out_uri = storage.join(output_uri, run_id) if run_id else output_uri
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    tracking = None
    if uri:
        tracking = {"uri": uri, "experiment": experiment or "opensora"}
        tracking["run_name"] = step_run_name(run_name or run_id, "eval")
    tags = {"opensora.pipeline_run_id": run_id, "opensora.train_run_id": train_run_id}
    settings = dict(
        weights=list(weights or ["ema", "untrained"]),
        overrides=list(overrides or []),
        num_sampling_steps=num_sampling_steps or None,
        cfg_scale=None if cfg_scale < 0 else cfg_scale,
        seed=seed,
        batch_size=batch_size,
        tracking=tracking,
        tags={k: v for k, v in tags.items() if v},
        val_table=val_table or None,
        num_eval_timesteps=num_eval_timesteps,
        clip_model=clip_model or None,
        fvd_extractor=fvd_extractor or None,
    )
    if processes > 1:
        result = evaluate_data_parallel(processes, checkpoint_uri, out_uri, list(prompts or []), **settings)
    else:
        result = run_evaluation(checkpoint_uri, out_uri, list(prompts or []) or None, **settings)
    print(result.summary(), flush=True)
    name = resolve_model_name(model_name, checkpoint_uri)
    outcome = gate_against_champion(
        result.output_dir, name, tracking_uri=uri or None, gate=gate, run_id=result.mlflow_run_id
    )
    print(f"gate ({name}): {outcome.decision.summary()}", flush=True)
    with open(comparison.path, "w", encoding="utf-8") as f, storage.open_read(outcome.html) as page:
        f.write(page.read().decode("utf-8"))
    finite = {k: float(v) for k, v in result.metrics.items() if math.isfinite(v)}
    for key, value in finite.items():
        if "/t0" not in key and "/bucket/" not in key:  # headline numbers; the details are in MLflow
            eval_metrics.log_metric(key.replace("/", "."), value)
    summary = {
        "checkpoint_uri": checkpoint_uri,
        "output_uri": result.output_dir,
        "global_step": result.global_step,
        "metrics": finite,
        "previews": result.previews,
        "report": result.report,
        "mlflow_run_id": result.mlflow_run_id,
        "gate_decision": outcome.decision.as_dict(),
    }
    with open(report.path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    report.metadata.update({"output_uri": result.output_dir, "mlflow_run_id": result.mlflow_run_id or ""})
    fields = ["metrics", "output_uri", "mlflow_run_id", "gate_decision", "model_name"]
    outputs = namedtuple("EvalOutputs", fields)
    return outputs(finite, result.output_dir, result.mlflow_run_id or "", outcome.decision.as_dict(), name)
