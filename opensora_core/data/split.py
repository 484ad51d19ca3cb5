"""Deterministic train / held-out split of a metadata table, by a hash of each clip's path.

    from opensora_core.data.split import split_metadata
    split = split_metadata("s3://data/raw/meta.csv", eval_fraction=0.1)
    split.train_uri, split.eval_uri        # s3://data/raw/meta.train.csv, s3://data/raw/meta.eval.csv

A row is held out when ``u(path) < eval_fraction``, where ``u`` maps the SHA-256 of ``salt/key`` to [0, 1) and
``key`` is the path relative to the table's folder (so the split survives moving the dataset to another bucket
or machine) or the path as written when it lies elsewhere. Adding or removing rows never moves another row
between the two sides. With ``eval_fraction > 0`` at least one row is held out (the one with the smallest
``u``) and at least one row stays for training, otherwise ValueError.

``by_source=True`` hashes a row's ``source_path`` (the long video a scene clip was cut from) instead of its
path, so all clips of one source land on the same side and no held-out clip has a sibling in training; rows
without a source use their path (the at-least-one rules above then move whole groups).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pandas as pd

TRAIN_SUFFIX = ".train"
EVAL_SUFFIX = ".eval"


@dataclass(frozen=True)
class SplitReport:
    """Where :func:`split_metadata` wrote the two tables and how many rows each holds."""

    train_uri: str
    eval_uri: str
    num_train: int
    num_eval: int


def split_key(path: str, table_folder: str | None) -> str:
    """The string hashed for ``path``: relative to ``table_folder`` when inside it, else ``path`` itself."""
    path = str(path)
    if table_folder:
        base = table_folder.rstrip("/") + "/"
        if path.startswith(base):
            return path[len(base) :]
    return path


def held_out_score(key: str, salt: str = "") -> float:
    """``u(key)`` in [0, 1): the first 8 bytes of SHA-256(``salt/key``) as a fraction."""
    digest = hashlib.sha256(f"{salt}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_table(
    table: pd.DataFrame,
    eval_fraction: float,
    table_folder: str | None = None,
    salt: str = "",
    by_source: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, held_out)`` rows of ``table`` (its ``path`` column, or ``source_path`` with ``by_source``; see
    the module docstring)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if "path" not in table.columns:
        raise ValueError(f"the metadata table has no 'path' column (has {list(table.columns)})")
    keys = table["path"].astype(str).tolist()
    if by_source and "source_path" in table.columns:
        keys = [s if isinstance(s, str) and s else k for s, k in zip(table["source_path"], keys, strict=True)]
    scores = pd.Series([held_out_score(split_key(k, table_folder), salt) for k in keys], index=table.index)
    held = scores < eval_fraction
    if eval_fraction > 0 and not held.any() and len(table):
        held = scores == scores.min()
    if eval_fraction > 0 and held.all() and len(table) > 1:
        held = scores != scores.max()  # keep the highest-scoring row for training
    if eval_fraction > 0 and held.all():
        raise ValueError(
            f"eval_fraction={eval_fraction} holds out all {len(table)} rows: add clips or lower eval_fraction"
        )
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True)


def split_uris(table_uri: str) -> tuple[str, str]:
    """``meta.csv`` -> ``(meta.train.csv, meta.eval.csv)`` next to it (same extension)."""
    stem, ext = os.path.splitext(table_uri)
    return f"{stem}{TRAIN_SUFFIX}{ext}", f"{stem}{EVAL_SUFFIX}{ext}"


def split_metadata(table_uri: str, eval_fraction: float, salt: str = "") -> SplitReport:
    """Write the train and held-out tables of ``table_uri`` next to it (local or ``s3://``).

    Paths stay as the table has them; the key hashed is relative to the table's folder.
    """
    from opensora_core.data.datasets import read_table
    from opensora_core.data.prepare import _write_table

    table = read_table(table_uri)
    folder = os.path.dirname(table_uri if "://" in table_uri else os.path.abspath(table_uri))
    train, held = split_table(table, eval_fraction, folder, salt)
    train_uri, eval_uri = split_uris(table_uri)
    _write_table(train, train_uri)
    _write_table(held, eval_uri)
    return SplitReport(train_uri, eval_uri, len(train), len(held))
