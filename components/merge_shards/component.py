"""Pipeline step `merge_shards`: the shards' tables -> one training table (dedup across shards) + one report.

The body only calls :func:`opensora_core.data.curate.merge.merge_shards` and, with a tracking URI,
:func:`opensora_core.io.dataset_run.log_dataset_run`; the ``report`` artifact is the HTML page (counts per
stage, drop reasons, clips per bucket, histograms inlined) that the KFP UI shows.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Output

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def merge_shards(
    results: list,
    root_uri: str,
    report: Output[HTML],
    config: dict = {},  # noqa: B006 - KFP reads defaults from the signature
    tracking_uri: str = "",
    experiment: str = "opensora-data",
    min_clips: int = 1,
    run_name: str = "",
) -> NamedTuple(
    "MergeOutputs",
    [
        ("metadata_uri", str),
        ("eval_metadata_uri", str),
        ("num_clips", int),
        ("dataset_sha256", str),
        ("mlflow_run_id", str),
    ],
):
    """Merge the shard ``results`` (``result.json`` locations from ``curate_shard``) under ``root_uri``.

    ``tracking_uri`` (empty: ``MLFLOW_TRACKING_URI`` from the environment, none: no MLflow run) receives a dataset
    run with ``mlflow.log_input`` lineage and the report, named ``{run_name}-dataset`` (``run_name``: the pipeline
    run's name; empty: ``curate-<root folder>``). Fails when fewer than ``min_clips`` clips remain.
    ``eval_metadata_uri`` is the held-out table of a ``holdout`` config (empty without one).
    """
    import logging
    import os
    import shutil
    from collections import namedtuple

    from opensora_core.data.curate.merge import merge_shards as merge

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    curation = merge(results, root_uri, config)
    shutil.copyfile(curation["html"], report.path)
    if curation["rows"] < min_clips:
        raise RuntimeError(
            f"only {curation['rows']} clips left in {curation['table']} (min_clips={min_clips}); see the report"
        )
    run_id = ""
    uri = tracking_uri.strip() or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        from opensora_core.io.dataset_run import log_dataset_run
        from opensora_core.io.tracking import step_run_name

        run_id = log_dataset_run(curation, uri, experiment, run_name=step_run_name(run_name, "dataset"))
    digest = curation["sha256"]
    report.metadata.update(
        {"metadata_uri": curation["table"], "num_clips": curation["rows"], "sha256": digest}
    )
    outputs = namedtuple(
        "MergeOutputs",
        ["metadata_uri", "eval_metadata_uri", "num_clips", "dataset_sha256", "mlflow_run_id"],
    )
    return outputs(curation["table"], curation["eval_table"] or "", curation["rows"], digest, run_id)
