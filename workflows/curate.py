"""The curation pipeline: plan_shards -> ParallelFor(curate_shard, one pod per shard) -> merge_shards.

    from workflows.curate import curate_pipeline   # compiled to workflows/curate.yaml by workflows.compile

Parameters: ``raw_data_uri`` (a folder of long raw videos with same-name ``.txt`` captions, or a ``path,text``
table), ``curated_uri`` (the dataset root; empty: the run-scoped ``{curated_root_uri}/{pipeline run id}``; pass
the same root again to re-run incrementally, see opensora_core/data/curate/shards.py), ``num_shards`` (how many
listings, i.e. pods), ``config`` (a ``CurateConfig`` dict: stages and thresholds; ``{}``: defaults),
``min_clips``, ``mlflow_tracking_uri`` (empty: from the platform ConfigMap) / ``mlflow_experiment`` (the
dataset run), ``runtime_image`` and the cluster wiring of workflows/train.py (ConfigMap, S3 and MLflow Secrets).

At most ``PARALLELISM`` shard pods run at once: KFP takes ``ParallelFor(parallelism=...)`` at compile time, so
it is an argument of :func:`make_curate_pipeline` rather than a run parameter (``num_shards`` is the run-time
knob). The merge step's ``report`` artifact is the HTML dataset report; its ``metadata_uri`` output is the
training table to pass to the train pipeline's ``metadata_uri``; ``eval_metadata_uri`` the held-out table of a
``holdout`` config (empty without one).
"""

from typing import Any, NamedTuple

from kfp import dsl

from components.curate_shard.component import curate_shard
from components.merge_shards.component import merge_shards
from components.plan_shards.component import plan_shards
from launchers.images import RUNTIME_IMAGE
from workflows.train import _cluster_wiring

PIPELINE_NAME = "opensora-curate"
PARALLELISM = 16
FILENAME = "curate.yaml"


class CurateOutputs(NamedTuple):
    """What a curation run returns."""

    metadata_uri: str
    eval_metadata_uri: str
    num_clips: int
    dataset_sha256: str
    mlflow_run_id: str


def make_curate_pipeline(parallelism: int = PARALLELISM) -> Any:
    """The curation pipeline with at most ``parallelism`` concurrent shard pods."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Open-Sora data curation: shard the raw listing -> probe / scene split / scores / filter / "
        "captions per shard (parallel pods) -> merge, dedup across shards, dataset report + MLflow lineage.",
    )
    def curate_pipeline(
        raw_data_uri: str = "s3://opensora-datasets/raw",
        curated_uri: str = "",
        curated_root_uri: str = "s3://opensora-datasets/curated",
        num_shards: int = 16,
        config: dict = {},  # noqa: B006 - KFP reads defaults from the signature
        min_clips: int = 1,
        runtime_image: str = RUNTIME_IMAGE,
        mlflow_tracking_uri: str = "",
        mlflow_experiment: str = "opensora-data",
        config_map_name: str = "opensora-platform",
        s3_secret_name: str = "opensora-platform-s3",
        mlflow_secret_name: str = "opensora-mlflow-credentials",
    ) -> CurateOutputs:
        """plan_shards -> curate_shard per shard -> merge_shards (see the module docstring)."""
        wiring = (config_map_name, s3_secret_name, mlflow_secret_name)
        plan = plan_shards(
            raw_data_uri=raw_data_uri,
            num_shards=num_shards,
            curated_uri=curated_uri,
            curated_root_uri=curated_root_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        # never cached: the listing must be re-read (new files under the same raw_data_uri)
        plan.set_display_name("plan-shards").set_container_image(runtime_image).set_caching_options(False)
        _cluster_wiring(plan, *wiring)
        with dsl.ParallelFor(plan.outputs["listings"], parallelism=parallelism) as listing:
            shard = curate_shard(listing_uri=listing, config=config)
            # KFP's cache keys on the listing's location; the step's own cache keys on its content
            shard.set_display_name("curate-shard").set_container_image(runtime_image).set_caching_options(
                False
            )
            _cluster_wiring(shard, *wiring)
        merged = merge_shards(
            results=dsl.Collected(shard.output),
            root_uri=plan.outputs["root_uri"],
            config=config,
            tracking_uri=mlflow_tracking_uri,
            experiment=mlflow_experiment,
            min_clips=min_clips,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        merged.set_display_name("merge-shards").set_container_image(runtime_image).set_caching_options(False)
        _cluster_wiring(merged, *wiring)
        return CurateOutputs(
            merged.outputs["metadata_uri"],
            merged.outputs["eval_metadata_uri"],
            merged.outputs["num_clips"],
            merged.outputs["dataset_sha256"],
            merged.outputs["mlflow_run_id"],
        )

    return curate_pipeline


curate_pipeline = make_curate_pipeline()
