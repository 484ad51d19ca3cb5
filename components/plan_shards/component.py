"""Pipeline step `plan_shards`: list the raw input into shard listings under the dataset root.

The body only calls :func:`opensora_core.data.curate.shards.plan_shards`; the listing locations are the items of
the pipeline's ``ParallelFor`` (one ``curate_shard`` pod each).
"""

from typing import NamedTuple

from kfp import dsl

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def plan_shards(
    raw_data_uri: str,
    num_shards: int,
    curated_uri: str = "",
    curated_root_uri: str = "",
    run_id: str = "",
) -> NamedTuple("PlanOutputs", [("root_uri", str), ("listings", list)]):
    """Write ``{root}/shards/listing-NNNNN.csv`` for the files of ``raw_data_uri`` (a folder with same-name
    ``.txt`` captions or a ``path,text`` table) spread over ``num_shards`` by a hash of their path.

    ``curated_uri`` (empty: the run-scoped ``{curated_root_uri}/{run_id}``) is the dataset root; pass the same
    one again to re-run incrementally (unchanged shard stages are reused).
    """
    from collections import namedtuple

    from opensora_core.data.curate.shards import plan_shards as plan

    source = raw_data_uri.strip()
    if not source:
        raise ValueError(
            "raw_data_uri is empty: pass a folder of videos (local or s3://) or a path,text table"
        )
    root = curated_uri.strip().rstrip("/")
    if not root:
        if not (curated_root_uri.strip() and run_id.strip()):
            raise ValueError(
                "curated_uri is empty: pass it, or curated_root_uri and run_id for {curated_root_uri}/{run_id}"
            )
        root = f"{curated_root_uri.strip().rstrip('/')}/{run_id.strip()}"
    listings = plan(source, root, num_shards)
    if not listings:
        raise RuntimeError(f"{source} lists no videos or images to curate (see {root}/shards/plan.json)")
    print(f"{len(listings)} shards under {root}", flush=True)
    return namedtuple("PlanOutputs", ["root_uri", "listings"])(root, listings)
