"""Holdout stage (the issue's "split"): a deterministic train / held-out split by a hash of each clip's path.

The rule is :func:`opensora_core.data.split.split_table` (the one ``prepare_data`` and evaluation use): a row
is held out when the SHA-256 of its path relative to the input table's folder (``salt`` prefixed) maps below
``eval_fraction``, so adding or removing clips never moves another clip between the sides. ``by_source`` keys on
``source_path`` instead, keeping every clip of one long video on the same side. The training rows go to
``output``; the held-out rows to ``eval_output`` (default ``OUT.eval.csv`` next to it), the table
``eval.val_table`` reads. Held-out rows are not drops: the report counts them and names the held-out table.
"""

from __future__ import annotations

import json
import os
import time

from opensora_core.data.curate.common import (
    StageReport,
    _check_output,
    read_stage_input,
    report_path,
    write_stage,
)
from opensora_core.data.prepare import (
    TABLE_EXTENSIONS,
    OutputExistsError,
    _exists,
    _read_bytes,
    is_uri,
    write_table_with_backup,
)
from opensora_core.data.split import split_table, split_uris


def _check_eval_output(src: str, out: str, eval_out: str, overwrite: bool) -> None:
    """Refuse to replace an ``eval_out`` that this stage did not write from ``src`` (a re-run may)."""
    if overwrite or not _exists(eval_out):
        return
    rpath = report_path(out)
    previous = json.loads(_read_bytes(rpath)) if _exists(rpath) else {}
    if (
        previous.get("stage") != "holdout"
        or previous.get("input") != src
        or previous.get("details", {}).get("eval_output") != eval_out
    ):
        raise OutputExistsError(
            f"held-out table {eval_out} exists and was not written by `holdout` from {src}. Pass --overwrite "
            "to replace it (a backup is kept) or choose another --eval-output."
        )


def holdout(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    eval_fraction: float = 0.1,
    eval_output: str | os.PathLike[str] | None = None,
    salt: str = "",
    by_source: bool = False,
    overwrite: bool = False,
) -> StageReport:
    """Split ``input`` into the training table ``output`` and the held-out table ``eval_output`` (see the
    module docstring); raises ValueError for an ``eval_fraction`` outside [0, 1) or one that holds out every
    row."""
    t0 = time.perf_counter()
    src, out = os.fspath(input), os.fspath(output)
    out = out if is_uri(out) else os.path.abspath(out)
    eval_out = os.fspath(eval_output) if eval_output else split_uris(out)[1]
    eval_out = eval_out if is_uri(eval_out) else os.path.abspath(eval_out)
    for name, path in (("--output", out), ("--eval-output", eval_out)):
        if not path.lower().endswith(TABLE_EXTENSIONS):
            raise ValueError(f"{name} {path} must end in .csv, .parquet or .pq")
    if eval_out == out:
        raise ValueError(f"--eval-output {eval_out} is the training table; choose another file")
    df = read_stage_input(src)
    folder = src.rsplit("/", 1)[0] if is_uri(src) else os.path.dirname(os.path.abspath(src))
    train, held = split_table(df, eval_fraction, folder, salt, by_source)
    _check_output("holdout", src, out, overwrite)  # both checks before anything is written
    _check_eval_output(src, out, eval_out, overwrite)
    details = {
        "eval_fraction": eval_fraction,
        "salt": salt,
        "by_source": by_source,
        "eval_output": eval_out,
        "num_eval": len(held),
        "eval_backup": write_table_with_backup(held, eval_out),
    }
    return write_stage("holdout", src, out, train, len(df), [], t0, overwrite, details)
