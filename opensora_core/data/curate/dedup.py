"""Dedup stage: exact duplicates (SHA-256 of the file bytes) and near duplicates (dHash of sampled frames).

A row's near-duplicate signature is the 64-bit dHash (9x8 grayscale, left > right) of ``num_frames`` frames
spread over the clip; two rows are near duplicates when every pair of corresponding hashes differs in at most
``max_distance`` bits. The first row (table order) of a group is kept; the others are reported as
``exact duplicate of PATH`` / ``near duplicate of PATH (distance D)``. Near duplicates are found by comparing all
pairs (fine for shards of some ten thousand clips; buckets by hash prefix would be the next step).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import numpy as np

from opensora_core.data.curate.common import (
    StageReport,
    kept_rows,
    map_items,
    read_stage_input,
    sample_frames,
    sample_indices,
    write_stage,
)
from opensora_core.data.prepare import fetch_to_local


def file_sha256(path: str) -> str:
    """SHA-256 of a local or ``s3://`` file."""
    digest = hashlib.sha256()
    with fetch_to_local(path) as local, open(local, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dhash(frame: np.ndarray) -> int:
    """64-bit difference hash of an RGB uint8 ``[H, W, 3]`` frame."""
    import cv2

    gray = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (gray[:, 1:] > gray[:, :-1]).reshape(-1)
    return int(np.packbits(bits).view(">u8")[0])


def frame_hashes(path: str, num_frames: int, count: int) -> list[int]:
    """dHashes of ``count`` frames spread over a video (an image: its one frame)."""
    from opensora_core.data.video_io import is_image_path, read_image

    if is_image_path(path):
        return [dhash(read_image(path))] * count
    return [dhash(f) for f in sample_frames(path, sample_indices(num_frames, count))]


def _distance(a: list[int], b: list[int]) -> int:
    return max(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def dedup(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    near: bool = True,
    max_distance: int = 6,
    num_frames: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> StageReport:
    """Drop exact and (with ``near``) near duplicates of ``input``; write ``output`` with a ``sha256`` column."""
    t0 = time.perf_counter()
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src, ("path", "num_frames"))
    rows: list[dict[str, Any]] = df.to_dict("records")
    rules: list[str | None] = [None] * len(rows)
    digests = map_items(
        file_sha256, [(str(r["path"]),) for r in rows], desc="hashing files", progress=progress
    )
    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        if d in first:
            rules[i] = f"exact duplicate of {rows[first[d]]['path']}"
        else:
            first[d] = i
    if near:
        hashes: dict[int, list[int]] = {}
        for i, r in enumerate(rows):
            if rules[i] is None:
                try:
                    hashes[i] = frame_hashes(str(r["path"]), int(r["num_frames"]), num_frames)
                except Exception as exc:  # an undecodable clip is dropped, not fatal
                    rules[i] = f"cannot hash frames: {type(exc).__name__}: {exc}"
        kept: list[int] = []
        for i in sorted(hashes):
            match = next((k for k in kept if _distance(hashes[i], hashes[k]) <= max_distance), None)
            if match is None:
                kept.append(i)
            else:
                rules[i] = (
                    f"near duplicate of {rows[match]['path']} (distance {_distance(hashes[i], hashes[match])})"
                )
    df["sha256"] = digests
    dropped = [(str(r["path"]), rule) for r, rule in zip(rows, rules, strict=True) if rule]
    table = kept_rows(df, rules)
    return write_stage(
        "dedup", src, out, table, len(df), dropped, t0, overwrite, {"max_distance": max_distance}
    )
