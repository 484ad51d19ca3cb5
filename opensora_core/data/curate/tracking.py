"""The curation run in MLflow: a dataset run with ``mlflow.log_input`` lineage, stage counts and the report.

:func:`log_dataset_run` opens a run in ``experiment`` and logs the training table as an MLflow dataset
(``mlflow.data.from_pandas``, source = the table's location, digest = its SHA-256) with context ``training``,
parameters (root, table, shards), metrics per stage (``<stage>/rows_in``, ``<stage>/rows_out``,
``<stage>/dropped``) plus ``rows``, and as artifacts under ``report/``: the histogram PNGs, ``report.html`` and
``curation.json``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from opensora_core.data.prepare import _read_table


def log_dataset_run(
    curation: dict[str, Any],
    tracking_uri: str,
    experiment: str = "opensora-data",
    run_name: str | None = None,
    artifact_location: str | None = None,
) -> str:
    """Log the curation report of :func:`opensora_core.data.curate.merge.merge_shards`; returns the run id.

    ``artifact_location`` is used when the experiment is created (with a ``sqlite:///`` store and no server it
    decides where artifacts go; see :func:`opensora_core.io.registry.ensure_experiment`)."""
    import mlflow

    from opensora_core.io.registry import ensure_experiment, scrub_uri, sha256_of

    table = str(curation["table"])
    df = _read_table(table)
    digest = sha256_of(table)
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    mlflow.set_tracking_uri(tracking_uri)
    name = run_name or f"curate-{os.path.basename(str(curation['root']).rstrip('/'))}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        with warnings.catch_warnings():  # the source's type ambiguity and the int-column schema hint
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(df, source=scrub_uri(table), name=name, digest=digest[:16])
        mlflow.log_input(dataset, context="training", tags={"sha256": digest})
        mlflow.log_params(
            {
                "root": scrub_uri(str(curation["root"])),
                "table": scrub_uri(table),
                "num_shards": curation["num_shards"],
            }
        )
        metrics = {"rows": float(curation["rows"])}
        for stage in curation["stages"]:
            metrics[f"{stage['stage']}/rows_in"] = float(stage["num_in"])
            metrics[f"{stage['stage']}/rows_out"] = float(stage["num_out"])
            metrics[f"{stage['stage']}/dropped"] = float(stage["num_in"] - stage["num_out"])
        mlflow.log_metrics(metrics)
        for plot in curation["dataset"]["plots"]:
            mlflow.log_artifact(plot, "report")
        html = curation["html"]
        mlflow.log_artifact(html, "report")
        mlflow.log_artifact(os.path.join(os.path.dirname(html), "curation.json"), "report")
        return run.info.run_id
