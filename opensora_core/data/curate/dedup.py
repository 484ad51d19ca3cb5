"""Dedup stage: exact duplicates (SHA-256 of the file bytes) and near duplicates (dHash of sampled frames).

A row's near-duplicate signature is the 64-bit dHash (9x8 grayscale, left > right) of ``num_frames`` frames
spread over the clip; two rows are near duplicates when every pair of corresponding hashes differs in at most
``max_distance`` bits. The first row (table order) of a group is kept; the others are reported as
``exact duplicate of PATH`` / ``near duplicate of PATH (distance D)``.

Near duplicates are found with multi-index hashing (:func:`near_duplicate_matches`), not by comparing all pairs:
the kept rows are indexed by ``m`` bands of the 64-bit hash of one frame (the middle one, seldom a fade), and by
the pigeonhole principle two hashes within ``r = max_distance`` bits agree within ``r // m`` bits on at least one
band, so a row is compared only with the kept rows found by looking up every band value within ``r // m`` bits
of its own. Index and lookups cost ``O(n * m * V)`` with ``V = sum_{k <= r // m} C(64 / m, k)`` lookups per band,
plus the candidates found, about ``n * m * V / 2**(64 / m)`` per row for unrelated clips; ``m`` is chosen per
run to minimise that sum (for ``r = 6``: 4 bands of 16 bits at 10^5 rows, 3 bands of ~21 bits at 10^6 and
more), so the search is near-linear where the all-pairs loop was ``O(n^2)``. The result is exactly the
all-pairs result (tests compare both): each row is matched to the earliest kept row within the distance.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
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
    return max((x ^ y).bit_count() for x, y in zip(a, b, strict=True))


def _lookups(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def choose_bands(max_distance: int, num_rows: int) -> int:
    """The band count ``m`` (1..64) minimising lookups plus expected unrelated candidates per row (see the module
    docstring)."""

    def cost(m: int) -> float:
        width = 64 // m  # the narrowest band
        lookups = m * _lookups(width, max_distance // m)
        return lookups * (1 + num_rows / 2.0**width)

    return min(range(1, 65), key=cost)


def _bands(m: int) -> list[tuple[int, int]]:
    """``[(shift, mask)]`` of ``m`` bands covering the 64 bits (widths differ by at most one)."""
    edges = [round(64 * k / m) for k in range(m + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:], strict=False)]


def _flips(width: int, radius: int) -> list[int]:
    """Every ``width``-bit mask with at most ``radius`` bits set."""
    return [
        sum(1 << b for b in bits)
        for k in range(min(radius, width) + 1)
        for bits in itertools.combinations(range(width), k)
    ]


def near_duplicate_matches(signatures: Sequence[Sequence[int]], max_distance: int) -> list[int | None]:
    """For each signature (``F`` 64-bit frame hashes), the index of the earliest earlier kept signature whose
    every frame is within ``max_distance`` bits, else ``None`` (then it is kept). Multi-index hashing over the
    middle frame's hash (see the module docstring); the same result as comparing all pairs."""
    if not signatures:
        return []
    pivot = len(signatures[0]) // 2
    m = choose_bands(max_distance, len(signatures))
    radius = max_distance // m
    bands = _bands(m)
    flips = {mask: _flips(mask.bit_length(), radius) for _, mask in bands}
    index: list[dict[int, list[int]]] = [defaultdict(list) for _ in bands]
    matches: list[int | None] = []
    for i, sig in enumerate(signatures):
        key = sig[pivot]
        values = [(key >> shift) & mask for shift, mask in bands]
        candidates: set[int] = set()
        for table, value, (_, mask) in zip(index, values, bands, strict=True):
            for flip in flips[mask]:
                candidates.update(table.get(value ^ flip, ()))
        match = min((k for k in candidates if _distance(sig, signatures[k]) <= max_distance), default=None)
        matches.append(match)
        if match is None:
            for table, value in zip(index, values, strict=True):
                table[value].append(i)
    return matches


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
        order = sorted(hashes)
        for i, j in zip(order, near_duplicate_matches([hashes[i] for i in order], max_distance), strict=True):
            if j is not None:
                match = order[j]
                rules[i] = (
                    f"near duplicate of {rows[match]['path']} (distance {_distance(hashes[i], hashes[match])})"
                )
    df["sha256"] = digests
    dropped = [(str(r["path"]), rule) for r, rule in zip(rows, rules, strict=True) if rule]
    table = kept_rows(df, rules)
    return write_stage(
        "dedup", src, out, table, len(df), dropped, t0, overwrite, {"max_distance": max_distance}
    )
