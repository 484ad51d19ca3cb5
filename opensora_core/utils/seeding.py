"""Keyed seeds: one stable hash from a tuple of parts to a 63-bit seed, used by training and sampling.

Training keys its draws by ``(seed, "step", dp_rank, step)`` and ``(seed, "sample", epoch, index)``
(:mod:`opensora_core.train.rng`); sampling by ``(seed, "noise", prompt index, sample index)`` and
``(seed, "reference", prompt index, reference index)`` (:mod:`opensora_core.sample.pipeline`). The leading
string names the consumer, so no two consumers can draw the same stream.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 63


def derive_seed(*parts: object) -> int:
    """A stable ``SEED_BITS``-bit seed from printable parts (same on every machine, process and Python run).

    Parts are hashed by ``repr``, so ``1`` and ``"1"`` give different seeds.
    """
    text = "\x1f".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> (64 - SEED_BITS)
