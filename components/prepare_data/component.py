"""Pipeline step `prepare_data`: raw videos + captions -> metadata table + quarantine report.

The body only calls :func:`opensora_core.data.prepare.prepare` (PyAV probe, validation, quarantine) and
hashes the resulting table for lineage. Videos never pass through KFP: the step reads ``raw_data_uri`` and writes
``metadata_uri`` (local paths or ``s3://``; by default the run-scoped ``{prepared_root_uri}/{run_id}/meta.csv``, never
a file inside the raw input); the ``metadata`` artifact holds a small JSON summary.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from launchers.images import RUNTIME_IMAGE


@dsl.component(base_image=RUNTIME_IMAGE, packages_to_install=[], install_kfp_package=False)
def prepare_data(
    raw_data_uri: str,
    metadata: Output[Dataset],
    metadata_uri: str = "",
    prepared_root_uri: str = "",
    run_id: str = "",
    workers: int = 4,
    allow_missing_captions: bool = False,
    min_clips: int = 1,
    eval_fraction: float = 0.1,
    overwrite: bool = False,
) -> NamedTuple(
    "PrepareOutputs",
    [
        ("metadata_uri", str),
        ("train_metadata_uri", str),
        ("eval_metadata_uri", str),
        ("quarantine_uri", str),
        ("num_kept", int),
        ("num_quarantined", int),
        ("dataset_sha256", str),
    ],
):
    """Probe every video of ``raw_data_uri`` and write the metadata table.

    ``raw_data_uri``: a folder of videos/images with same-name ``.txt`` captions, or a ``path,text`` table.
    ``metadata_uri`` (empty: ``{prepared_root_uri}/{run_id}/meta.csv``): an existing table there is merged into
    or, when that would lose rows, refused unless ``overwrite`` (the old table is then kept as a backup).
    Fails when fewer than ``min_clips`` clips survive validation (the quarantine report names the reasons).
    ``eval_fraction`` of the clips (chosen by a hash of the path, see opensora_core.data.split) go to the
    held-out table ``meta.eval.csv`` that training never sees; the rest to ``meta.train.csv``.
    """
    import json
    from collections import namedtuple

    from opensora_core.data.prepare import prepare
    from opensora_core.data.split import split_metadata
    from opensora_core.model_registry import sha256_of

    source = raw_data_uri.strip()
    if not source:
        raise ValueError(
            "raw_data_uri is empty: pass a folder of videos (local or s3://) or a path,text table"
        )
    target = metadata_uri.strip()
    if not target:
        if not (prepared_root_uri.strip() and run_id.strip()):
            raise ValueError(
                "metadata_uri is empty: pass it, or prepared_root_uri and run_id for the run-scoped "
                "{prepared_root_uri}/{run_id}/meta.csv"
            )
        target = f"{prepared_root_uri.strip().rstrip('/')}/{run_id.strip()}/meta.csv"
    report = prepare(
        source,
        target,
        workers=max(1, workers),
        allow_missing_captions=allow_missing_captions,
        progress=False,
        overwrite=overwrite,
    )
    print(report, flush=True)
    if report.num_kept < min_clips:
        raise RuntimeError(
            f"only {report.num_kept} usable clips in {source} (min_clips={min_clips}); "
            f"see the quarantine report {report.quarantine}: {report.reasons}"
        )
    digest = sha256_of(report.output)
    split = split_metadata(report.output, eval_fraction)
    print(f"held out {split.num_eval} clips for evaluation: {split.eval_uri}", flush=True)
    summary = {
        "metadata_uri": report.output,
        "train_metadata_uri": split.train_uri,
        "eval_metadata_uri": split.eval_uri,
        "num_train": split.num_train,
        "num_eval": split.num_eval,
        "quarantine_uri": report.quarantine,
        "num_kept": report.num_kept,
        "num_quarantined": report.num_quarantined,
        "quarantine_reasons": report.reasons,
        "sha256": digest,
    }
    with open(metadata.path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    metadata.metadata.update({k: v for k, v in summary.items() if k != "quarantine_reasons"})
    outputs = namedtuple(
        "PrepareOutputs",
        [
            "metadata_uri",
            "train_metadata_uri",
            "eval_metadata_uri",
            "quarantine_uri",
            "num_kept",
            "num_quarantined",
            "dataset_sha256",
        ],
    )
    return outputs(
        report.output,
        split.train_uri,
        split.eval_uri,
        report.quarantine,
        report.num_kept,
        report.num_quarantined,
        digest,
    )
