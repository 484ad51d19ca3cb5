"""Near-duplicate search by multi-index hashing gives exactly the all-pairs result."""

from __future__ import annotations

import random

import pytest

from opensora_core.data.curate.dedup import _distance, choose_bands, near_duplicate_matches


def _brute_force(signatures: list[list[int]], max_distance: int) -> list[int | None]:
    kept: list[int] = []
    matches: list[int | None] = []
    for i, sig in enumerate(signatures):
        match = next((k for k in kept if _distance(sig, signatures[k]) <= max_distance), None)
        matches.append(match)
        if match is None:
            kept.append(i)
    return matches


def _flip(h: int, bits: int, rng: random.Random) -> int:
    for b in rng.sample(range(64), bits):
        h ^= 1 << b
    return h


def _signatures(n: int, seed: int) -> list[list[int]]:
    """Random 3-frame signatures, a third of them copies of an earlier one with up to 0-12 bits flipped per frame
    (so distances fall on both sides of every tested radius), and chains of copies of copies."""
    rng = random.Random(seed)
    out: list[list[int]] = []
    for _ in range(n):
        if out and rng.random() < 0.35:
            base = rng.choice(out)
            level = rng.randint(0, 12)
            out.append([_flip(h, rng.randint(0, level), rng) for h in base])
        else:
            out.append([rng.getrandbits(64) for _ in range(3)])
    return out


@pytest.mark.parametrize("max_distance", [0, 1, 3, 6, 10, 20])
def test_matches_equal_all_pairs(max_distance: int) -> None:
    signatures = _signatures(800, seed=max_distance)
    got = near_duplicate_matches(signatures, max_distance)
    assert got == _brute_force(signatures, max_distance)
    assert sum(m is not None for m in got) > (0 if max_distance == 0 else 10)  # the planted copies are found


def test_band_choice_grows_bands_with_the_row_count() -> None:
    assert choose_bands(0, 10**6) == 1  # exact hash lookup
    assert choose_bands(6, 1000) == 7  # pigeonhole: one of 7 bands is equal
    assert choose_bands(6, 10**6) == 3  # 3 bands of ~21 bits searched within 2 bits
    assert near_duplicate_matches([], 6) == []
