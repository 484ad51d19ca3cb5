"""Pipeline step `curate_shard`: probe / split-scenes / score / filter / caption on one shard listing.

One pod per shard (the pipeline's ``ParallelFor``). The body only calls
:func:`opensora_core.data.curate.shards.curate_shard`, which skips every stage whose input key is unchanged
since the last run over the same dataset root (so KFP's own cache is off for this step).
"""

from kfp import dsl

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def curate_shard(listing_uri: str, config: dict = {}) -> str:  # noqa: B006 - KFP reads defaults from the signature
    """Curate the shard ``listing_uri`` (``{root}/shards/listing-NNNNN.csv``) with ``config`` (a CurateConfig
    dict; unknown keys fail the step); returns the shard's ``result.json`` location for the merge."""
    import logging

    from opensora_core.data.curate.shards import curate_shard as run

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # per-shard progress in the pod log
    return run(listing_uri, config)
