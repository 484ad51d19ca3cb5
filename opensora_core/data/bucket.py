"""Multi-resolution buckets of Open-Sora v1.1 and v1.2 (``opensora/datasets/bucket.py`` behaviour).

A ``bucket_config`` maps a resolution name of :data:`~opensora_core.data.aspect.ASPECT_RATIOS` to
``{num_frames: (keep_prob, batch_size)}`` (batch size per GPU; ``(0.0, None)`` disables a bucket).
Open-Sora 1.2 also writes ``keep_prob`` as a pair ``(keep_prob, frame_prob)`` for video frame keys: the
frame key is only considered with probability ``frame_prob``, otherwise the sample tries the next smaller
frame key of the same resolution. A bucket key is ``(resolution, num_frames, ratio_key)``.

Assignment rule (reproduced exactly, see ``OPEN_SORA_REFERENCE.md`` §5):

* resolutions are tried from the largest pixel count to the smallest, frame keys from largest to smallest;
  bucket ids enumerate ``(resolution, num_frames)`` in that order;
* a resolution is a candidate when ``H * W >= 0.8 * pixels(resolution)``;
* an image (``T == 1``) can only go to frame key 1; a video takes the largest key ``t != 1`` with
  ``T > t * frame_interval`` (strict);
* with a pair ``(keep_prob, frame_prob)`` (1.2) the frame key is skipped when the first draw
  ``np.random.default_rng(seed + bucket_id).random()`` exceeds ``frame_prob``; the keep draw below is then the
  second draw of that same generator;
* the sample is kept with probability ``keep_prob``: the draw is
  ``np.random.default_rng(seed + bucket_id).random() < keep_prob`` (videos with ``keep_prob >= 1`` skip the draw);
  a sample that is not kept falls through to the next smaller resolution;
* the ratio key is the closest H/W ratio of that resolution's table.

Besides the scalar :meth:`Bucket.get_bucket_id`, :meth:`Bucket.assign` does the same for whole metadata columns
with numpy (the keep_prob draws are computed by a vectorised re-implementation of numpy's ``SeedSequence`` +
``PCG64`` first double, bit-identical to ``np.random.default_rng(seed).random()``) and reports why the rows that
fit no bucket were left out.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opensora_core.data.aspect import ASPECT_RATIOS, get_closest_ratio
from opensora_core.data.video_io import _available_cpus

logger = logging.getLogger(__name__)

BucketKey = tuple[str, int, str]
KeepProb = float | tuple[float, float]  # keep_prob, or (keep_prob, frame_prob) on video frame keys (1.2)

PIXEL_APPROX = 0.8  # a resolution is a candidate when H*W >= 0.8 * its pixel count

# Reasons for rows that fit no bucket (codes stored in BucketAssignment.reason).
REASON_ASSIGNED = 0
REASON_TOO_SMALL = 1  # H*W below 0.8x the pixels of every configured resolution
REASON_TOO_SHORT = (
    2  # a video with T <= t*frame_interval for every frame key t != 1 of the candidate resolutions
)
REASON_NO_IMAGE_BUCKET = 3  # an image, but no candidate resolution has frame key 1
REASON_KEEP_PROB = 4  # fitted at least one bucket but every keep_prob draw rejected it
REASON_INVALID = 5  # missing / non-positive num_frames, height or width
REASON_NAMES = {
    REASON_ASSIGNED: "assigned",
    REASON_TOO_SMALL: "too_small",
    REASON_TOO_SHORT: "too_short",
    REASON_NO_IMAGE_BUCKET: "no_image_bucket",
    REASON_KEEP_PROB: "dropped_by_keep_prob",
    REASON_INVALID: "invalid_metadata",
}

MIN_ROWS_PER_WORKER = 200_000  # one process assigns ~0.5-1M rows/s; smaller chunks do not pay for a process

_AR_SLOTS = 64  # > the largest ratio table (40 keys): bucket code = bucket_id * _AR_SLOTS + ratio index


def _parse_keep_prob(value: Any, where: str, t: int) -> KeepProb:
    """``keep_prob`` as a float, or the 1.2 pair ``(keep_prob, frame_prob)`` as two floats in [0, 1]."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if t == 1 or len(value) != 2:
            raise ValueError(
                f"{where}: keep_prob {tuple(value)!r} must be a number"
                + (
                    " (images, frame key 1, take no frame_prob)"
                    if t == 1
                    else " or a pair (keep_prob, frame_prob)"
                )
            )
        pair = tuple(_parse_keep_prob(v, where, 1) for v in value)
        if not all(0.0 <= v <= 1.0 for v in pair):  # type: ignore[operator]
            raise ValueError(f"{where}: (keep_prob, frame_prob) must both be in [0, 1], got {tuple(value)!r}")
        return pair  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0.0:
        raise ValueError(f"{where}: keep_prob must be >= 0 (a number), got {value!r}")
    return float(value)


def keep_part(prob: KeepProb) -> float:
    """The keep probability of a bucket entry (the first number of a 1.2 pair)."""
    return prob[0] if isinstance(prob, tuple) else prob


def _parse_bucket_config(
    bucket_config: Mapping[str, Any],
) -> dict[str, dict[int, tuple[KeepProb, int | None]]]:
    """Validate a bucket_config and normalise frame keys to int and values to (keep_prob, int | None)."""
    if not isinstance(bucket_config, Mapping) or not bucket_config:
        raise ValueError(
            "bucket_config must be a non-empty dict {resolution: {num_frames: (keep_prob, batch_size)}}"
        )
    parsed: dict[str, dict[int, tuple[KeepProb, int | None]]] = {}
    for res, frames in bucket_config.items():
        if res not in ASPECT_RATIOS:
            hint = difflib.get_close_matches(str(res), list(ASPECT_RATIOS), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"bucket_config: unknown resolution {res!r}{extra}; known: {list(ASPECT_RATIOS)}"
            )
        if not isinstance(frames, Mapping) or not frames:
            raise ValueError(
                f"bucket_config[{res!r}] must be a non-empty dict {{num_frames: (keep_prob, batch_size)}}"
            )
        entries: dict[int, tuple[KeepProb, int | None]] = {}
        for t_key, value in frames.items():
            try:
                t = int(t_key)
            except (TypeError, ValueError):
                raise ValueError(f"bucket_config[{res!r}]: frame key {t_key!r} is not an integer") from None
            if t < 1 or str(t) != str(t_key).strip():
                raise ValueError(f"bucket_config[{res!r}]: frame key {t_key!r} must be a positive integer")
            if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
                raise ValueError(
                    f"bucket_config[{res!r}][{t}] must be (keep_prob, batch_size), got {value!r}; "
                    "use (0.0, None) to disable a bucket"
                )
            prob, bs = _parse_keep_prob(value[0], f"bucket_config[{res!r}][{t}]", t), value[1]
            if bs is not None:
                if isinstance(bs, bool) or int(bs) != bs or int(bs) < 1:
                    raise ValueError(
                        f"bucket_config[{res!r}][{t}]: batch_size must be a positive int, got {bs!r}"
                    )
                bs = int(bs)
            elif keep_part(prob) > 0:
                raise ValueError(
                    f"bucket_config[{res!r}][{t}]: batch_size is None but keep_prob is {keep_part(prob)}; "
                    "give a batch size or disable the bucket with (0.0, None)"
                )
            if t in entries:
                raise ValueError(f"bucket_config[{res!r}]: frame key {t} given twice")
            entries[t] = (prob, bs)
        parsed[str(res)] = entries
    return parsed


@dataclass
class BucketAssignment:
    """Vectorised result of :meth:`Bucket.assign` for N rows.

    ``res_index`` indexes :attr:`Bucket.resolutions` (-1: no bucket), ``num_frames`` is the frame key (0: none),
    ``ar_index`` indexes that resolution's ratio table, ``reason`` holds the ``REASON_*`` codes.
    """

    res_index: np.ndarray
    num_frames: np.ndarray
    ar_index: np.ndarray
    reason: np.ndarray

    @property
    def assigned(self) -> np.ndarray:
        """Boolean mask of rows that got a bucket."""
        return self.res_index >= 0

    def reason_counts(self) -> dict[str, int]:
        """Counts of rows per reason name (``assigned`` included)."""
        codes, counts = np.unique(self.reason, return_counts=True)
        out = {name: 0 for name in REASON_NAMES.values()}
        for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
            out[REASON_NAMES[int(code)]] = int(count)
        return out


@dataclass
class BucketSummary:
    """Per-epoch bucket statistics: samples/batches per bucket and why rows were left out."""

    num_rows: int
    num_assigned: int
    dropped: dict[str, int]
    buckets: dict[BucketKey, tuple[int, int]] = field(default_factory=dict)  # key -> (samples, batches)
    num_batches: int = 0

    def format(self, max_lines: int = 40) -> str:
        """Human-readable table (aggregated per (resolution, num_frames)) for the training log."""
        head = (
            f"buckets: {self.num_assigned}/{self.num_rows} samples in {len(self.buckets)} buckets, "
            f"{self.num_batches} batches"
        )
        dropped = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v)
        lines = [f"{head}; no bucket: {dropped}" if dropped else f"{head}; every row fits a bucket"]
        per_rt: dict[tuple[str, int], list[int]] = {}
        for (res, t, _ar), (samples, batches) in self.buckets.items():
            acc = per_rt.setdefault((res, t), [0, 0, 0])
            acc[0] += samples
            acc[1] += batches
            acc[2] += 1
        lines.append(f"  {'resolution':>10} {'frames':>6} {'ratios':>6} {'samples':>9} {'batches':>8}")
        for i, ((res, t), (samples, batches, n_ar)) in enumerate(
            sorted(per_rt.items(), key=lambda kv: -kv[1][0])
        ):
            if i >= max_lines:
                lines.append(f"  ... {len(per_rt) - max_lines} more")
                break
            lines.append(f"  {res:>10} {t:>6} {n_ar:>6} {samples:>9} {batches:>8}")
        return "\n".join(lines)


class Bucket:
    """Open-Sora v1.1 bucket set built from a ``bucket_config`` (see module docstring).

    Attributes mirror the reference: ``bucket_probs[res][t]``, ``bucket_bs[res][t]``, ``bucket_id[res][t]``,
    ``hw_criteria[res]`` (pixel count), ``ar_criteria[res][t]`` (ratio table), ``num_bucket``.
    """

    def __init__(self, bucket_config: Mapping[str, Any]) -> None:
        parsed = _parse_bucket_config(bucket_config)
        # sorted() is stable: equal pixel counts (none in the tables) would keep the config order
        self.resolutions: list[str] = sorted(parsed, key=lambda r: ASPECT_RATIOS[r][0], reverse=True)
        self.bucket_probs: dict[str, dict[int, KeepProb]] = {}
        self.bucket_bs: dict[str, dict[int, int | None]] = {}
        self.bucket_id: dict[str, dict[int, int]] = {}
        self.hw_criteria: dict[str, int] = {}
        self.t_criteria: dict[str, dict[int, int]] = {}
        self.ar_criteria: dict[str, dict[int, dict[str, tuple[int, int]]]] = {}
        num_bucket = 0
        next_id = 0
        for res in self.resolutions:
            frame_keys = sorted(parsed[res], reverse=True)
            table = ASPECT_RATIOS[res][1]
            self.hw_criteria[res] = ASPECT_RATIOS[res][0]
            self.bucket_probs[res] = {t: parsed[res][t][0] for t in frame_keys}
            self.bucket_bs[res] = {t: parsed[res][t][1] for t in frame_keys}
            self.bucket_id[res] = {}
            self.t_criteria[res] = {}
            self.ar_criteria[res] = {}
            for t in frame_keys:
                self.bucket_id[res][t] = next_id
                self.t_criteria[res][t] = t
                self.ar_criteria[res][t] = table
                next_id += 1
                num_bucket += len(table)
        self.num_bucket: int = num_bucket
        self.num_hw_t_buckets: int = next_id
        self._ratio_keys = {res: list(ASPECT_RATIOS[res][1]) for res in self.resolutions}
        self._ratio_values = {
            res: np.array([float(k) for k in keys]) for res, keys in self._ratio_keys.items()
        }
        logger.debug("Bucket: %d resolutions, %d buckets", len(self.resolutions), num_bucket)

    def __len__(self) -> int:
        return self.num_bucket

    # ----------------------------------------------------------------- scalar API (reference-exact)
    def get_bucket_id(
        self, T: int, H: int, W: int, frame_interval: int = 1, seed: int | None = None
    ) -> BucketKey | None:
        """Bucket ``(resolution, num_frames, ratio_key)`` of one sample, or ``None`` if it fits no bucket.

        ``seed`` seeds the keep_prob draws (``default_rng(seed + bucket_id)``); the sampler passes
        ``sampler.seed + epoch + row_index * num_bucket``. With ``seed=None`` draws come from an unseeded
        generator (the reference would raise a TypeError there).
        """
        key, _reason = self._assign_one(int(T), int(H), int(W), int(frame_interval), seed)
        return key

    @staticmethod
    def _rng(seed: int | None, bucket_id: int) -> np.random.Generator:
        return np.random.default_rng() if seed is None else np.random.default_rng(seed + bucket_id)

    def _draw(self, seed: int | None, bucket_id: int) -> float:
        return float(self._rng(seed, bucket_id).random())

    def _video_try(self, res: str, T: int, frame_interval: int, seed: int | None) -> tuple[int | None, bool]:
        """One resolution's try for a video: (chosen frame key or None, whether any frame key fits T).

        Frame keys are walked from the largest; a 1.2 pair's frame_prob draw may skip a fitting key.
        """
        fits = [t for t in self.bucket_probs[res] if t != 1 and t * frame_interval < T]
        for t in fits:
            prob = self.bucket_probs[res][t]
            rng = self._rng(seed, self.bucket_id[res][t])
            if isinstance(prob, tuple) and rng.random() > prob[1]:
                continue
            keep = keep_part(prob)
            if keep >= 1 or rng.random() < keep:
                return t, True
            return None, True
        return None, bool(fits)

    def _assign_one(
        self, T: int, H: int, W: int, frame_interval: int, seed: int | None
    ) -> tuple[BucketKey | None, int]:
        if T < 1 or H < 1 or W < 1:
            return None, REASON_INVALID
        pixels = H * W
        any_pixel_fit = False
        any_frame_fit = False
        for res in self.resolutions:
            if pixels < self.hw_criteria[res] * PIXEL_APPROX:
                continue
            any_pixel_fit = True
            probs = self.bucket_probs[res]
            if T == 1:
                if 1 not in probs:
                    continue
                any_frame_fit = True
                if self._draw(seed, self.bucket_id[res][1]) < probs[1]:
                    return (res, 1, get_closest_ratio(H, W, self.ar_criteria[res][1])), REASON_ASSIGNED
                continue
            chosen, fits = self._video_try(res, T, frame_interval, seed)
            any_frame_fit = any_frame_fit or fits
            if chosen is not None:
                return (res, chosen, get_closest_ratio(H, W, self.ar_criteria[res][chosen])), REASON_ASSIGNED
        if not any_pixel_fit:
            return None, REASON_TOO_SMALL
        if not any_frame_fit:
            return None, REASON_NO_IMAGE_BUCKET if T == 1 else REASON_TOO_SHORT
        return None, REASON_KEEP_PROB

    def get_reason(self, T: int, H: int, W: int, frame_interval: int = 1, seed: int | None = None) -> str:
        """Why a sample fits no bucket (``"assigned"`` when it does); names as in :data:`REASON_NAMES`."""
        return REASON_NAMES[self._assign_one(int(T), int(H), int(W), int(frame_interval), seed)[1]]

    def get_thw(self, bucket_key: Sequence[Any]) -> tuple[int, int, int]:
        """``(T, H, W)`` a sample of ``bucket_key = (res, t, ratio_key)`` is cropped to."""
        if len(bucket_key) != 3:
            raise ValueError(f"bucket key must be (resolution, num_frames, ratio_key), got {bucket_key!r}")
        res, t, ar = bucket_key
        h, w = self.ar_criteria[res][t][ar]
        return self.t_criteria[res][t], h, w

    def get_prob(self, bucket_key: Sequence[Any]) -> KeepProb:
        """keep_prob (or the 1.2 pair ``(keep_prob, frame_prob)``) of the ``(res, t)`` part of a bucket key."""
        return self.bucket_probs[bucket_key[0]][bucket_key[1]]

    def get_batch_size(self, bucket_key: Sequence[Any]) -> int | None:
        """Per-GPU batch size of the ``(res, t)`` part of a bucket key (``None`` for disabled buckets)."""
        return self.bucket_bs[bucket_key[0]][bucket_key[1]]

    # ----------------------------------------------------------------- vectorised API
    def bucket_code(self, key: BucketKey) -> int:
        """Integer code of a bucket key (``bucket_id[res][t] * 64 + ratio index``)."""
        res, t, ar = key
        return self.bucket_id[res][t] * _AR_SLOTS + self._ratio_keys[res].index(ar)

    def key_of_code(self, code: int) -> BucketKey:
        """Inverse of :meth:`bucket_code`."""
        hw_t, ar_idx = divmod(int(code), _AR_SLOTS)
        for res in self.resolutions:
            for t, bid in self.bucket_id[res].items():
                if bid == hw_t:
                    return res, t, self._ratio_keys[res][ar_idx]
        raise KeyError(f"no bucket with code {code}")

    def codes(self, assignment: BucketAssignment) -> np.ndarray:
        """int64 bucket codes of an assignment (-1 where no bucket)."""
        out = np.full(assignment.res_index.shape, -1, dtype=np.int64)
        for r, res in enumerate(self.resolutions):
            for t, bid in self.bucket_id[res].items():
                sel = (assignment.res_index == r) & (assignment.num_frames == t)
                out[sel] = bid * _AR_SLOTS + assignment.ar_index[sel]
        return out

    def assign(
        self,
        num_frames: np.ndarray,
        height: np.ndarray,
        width: np.ndarray,
        frame_interval: int,
        seeds: np.ndarray | None,
        num_workers: int = 1,
        mp_context: str | None = "fork",
    ) -> BucketAssignment:
        """Assign buckets to N rows at once; row ``i`` gets exactly ``get_bucket_id(T[i], H[i], W[i], fi, seeds[i])``.

        ``seeds`` are non-negative integers below 2**64 (``None`` only when every keep_prob is 0 or >= 1).
        ``num_workers > 1`` splits the rows over that many processes, capped by the CPUs available and by
        ``MIN_ROWS_PER_WORKER`` rows per process (below that a process costs more than it saves).
        """
        if int(frame_interval) < 1:
            raise ValueError(f"frame_interval must be >= 1, got {frame_interval}")
        T = _as_int_column(num_frames, "num_frames")
        H = _as_int_column(height, "height")
        W = _as_int_column(width, "width")
        n = T.shape[0]
        if H.shape[0] != n or W.shape[0] != n:
            raise ValueError(f"num_frames/height/width lengths differ: {n}, {H.shape[0]}, {W.shape[0]}")
        seed_arr = None
        if seeds is not None:
            seed_arr = np.asarray(seeds)
            if seed_arr.shape != (n,):
                raise ValueError(f"seeds must have shape ({n},), got {seed_arr.shape}")
            if seed_arr.dtype.kind == "i" and n and seed_arr.min() < 0:
                raise ValueError("seeds must be non-negative (numpy's SeedSequence rejects negative seeds)")
            seed_arr = seed_arr.astype(np.uint64)
        workers = min(int(num_workers), _available_cpus(), n // MIN_ROWS_PER_WORKER)
        if workers <= 1:
            return self._assign_arrays(T, H, W, int(frame_interval), seed_arr)
        return self._assign_parallel(T, H, W, int(frame_interval), seed_arr, workers, mp_context)

    def _assign_parallel(
        self,
        T: np.ndarray,
        H: np.ndarray,
        W: np.ndarray,
        frame_interval: int,
        seeds: np.ndarray | None,
        num_workers: int,
        mp_context: str | None,
    ) -> BucketAssignment:
        """Split rows into ``num_workers`` chunks: ``num_workers - 1`` child processes plus this process.

        With the ``fork`` start method the children inherit the input columns (nothing is pickled on the way in).
        """
        import multiprocessing as mp

        n = T.shape[0]
        bounds = np.linspace(0, n, num_workers + 1).astype(np.int64)
        spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        ctx = mp.get_context(mp_context) if mp_context else mp.get_context()
        inherit = ctx.get_start_method() == "fork"
        if inherit:
            _FORK_INPUTS["args"] = (self, T, H, W, frame_interval, seeds)
        try:
            with ProcessPoolExecutor(max_workers=len(spans) - 1, mp_context=ctx) as pool:
                if inherit:
                    futures = [pool.submit(_assign_inherited_span, a, b) for a, b in spans[1:]]
                else:
                    futures = [
                        pool.submit(
                            self._assign_arrays,
                            T[a:b],
                            H[a:b],
                            W[a:b],
                            frame_interval,
                            None if seeds is None else seeds[a:b],
                        )
                        for a, b in spans[1:]
                    ]
                a, b = spans[0]
                parts = [
                    self._assign_arrays(
                        T[a:b], H[a:b], W[a:b], frame_interval, None if seeds is None else seeds[a:b]
                    )
                ]
                parts += [f.result() for f in futures]
        finally:
            _FORK_INPUTS.clear()
        return BucketAssignment(
            res_index=np.concatenate([p.res_index for p in parts]),
            num_frames=np.concatenate([p.num_frames for p in parts]),
            ar_index=np.concatenate([p.ar_index for p in parts]),
            reason=np.concatenate([p.reason for p in parts]),
        )

    def _attempts(self, first_fit: int, t_class: int, image: bool, thresholds: np.ndarray, fi: int) -> list:
        """The tries ``(res index, [(t, prob), ...])`` of every row with these properties, in the reference
        order: per resolution the frame keys the row fits, largest first (images: key 1 only).

        ``first_fit``: index of the largest resolution the row's pixels fit (0.8 rule); ``t_class``: how many
        ``t * frame_interval`` thresholds lie strictly below the row's T.
        """
        tries = []
        for r in range(first_fit, len(self.resolutions)):
            probs = self.bucket_probs[self.resolutions[r]]
            if image:
                if 1 in probs:
                    tries.append((r, [(1, probs[1])]))
                continue
            fitting = [t for t in probs if t != 1 and np.searchsorted(thresholds, t * fi) < t_class]
            if fitting:
                tries.append((r, [(t, probs[t]) for t in fitting]))
        return tries

    def _try_resolution(
        self, r: int, options: list, rows: np.ndarray, seeds: np.ndarray | None
    ) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
        """Vectorised :meth:`_video_try` (and the image draw) of ``rows`` at resolution index ``r``.

        Returns the kept rows per frame key and the rows that go on to the next resolution.
        """
        res = self.resolutions[r]
        kept_by_t: list[tuple[np.ndarray, int]] = []
        rejected: list[np.ndarray] = []
        undecided = rows
        for t, prob in options:
            if undecided.size == 0:
                break
            bid = np.uint64(self.bucket_id[res][t])
            keep = keep_part(prob)
            if isinstance(prob, tuple):  # the frame_prob draw is the generator's first double
                if seeds is None:
                    first = np.random.default_rng().random(undecided.size)
                else:
                    first = uniform_draw(seeds[undecided] + bid, 0)
                taken, undecided = undecided[first <= prob[1]], undecided[first > prob[1]]
            else:
                taken, undecided = undecided, undecided[:0]
            if keep >= 1:
                hit = np.ones(taken.size, dtype=bool)
            elif keep <= 0:
                hit = np.zeros(taken.size, dtype=bool)
            elif seeds is None:
                hit = np.random.default_rng().random(taken.size) < keep
            else:
                hit = uniform_draw(seeds[taken] + bid, 1 if isinstance(prob, tuple) else 0) < keep
            kept_by_t.append((taken[hit], t))
            rejected.append(taken[~hit])
        return kept_by_t, np.concatenate([undecided, *rejected])

    def _assign_arrays(
        self, T: np.ndarray, H: np.ndarray, W: np.ndarray, frame_interval: int, seeds: np.ndarray | None
    ) -> BucketAssignment:
        """Vectorised rule. Rows are grouped by their list of (resolution, t) tries, which depends only on how
        many resolutions their pixels fit, where T falls among the ``t * frame_interval`` thresholds and whether
        they are images; each group then only needs its keep_prob draws."""
        n = T.shape[0]
        res_index = np.full(n, -1, dtype=np.int16)
        chosen_t = np.zeros(n, dtype=np.int32)
        ar_index = np.full(n, -1, dtype=np.int16)
        reason = np.full(n, REASON_ASSIGNED, dtype=np.int8)
        valid = (T >= 1) & (H >= 1) & (W >= 1)
        reason[~valid] = REASON_INVALID
        num_res = len(self.resolutions)
        # pixel rule: resolution r is a candidate iff H*W >= 0.8 * pixels(r); pixels descend with r
        pixel_thr = np.array([self.hw_criteria[r] * PIXEL_APPROX for r in self.resolutions])
        first_fit = num_res - np.searchsorted(pixel_thr[::-1], (H * W).astype(np.float64), side="right")
        # frame rule: t fits iff t * frame_interval < T
        thresholds = np.unique(
            [t * frame_interval for res in self.resolutions for t in self.bucket_probs[res] if t != 1]
        )
        t_class = np.searchsorted(thresholds, T, side="left")
        image = T == 1
        plan = (first_fit * (len(thresholds) + 1) + t_class) * 2 + image
        plan[~valid] = -1
        order = np.argsort(plan, kind="stable")
        sorted_plan = plan[order]
        starts = np.flatnonzero(np.r_[True, sorted_plan[1:] != sorted_plan[:-1]])
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            key = int(sorted_plan[a])
            if key < 0:
                continue
            rows = order[a:b]
            is_image, rest = key % 2 == 1, key // 2
            fit, t_cls = divmod(rest, len(thresholds) + 1)
            if fit >= num_res:
                reason[rows] = REASON_TOO_SMALL
                continue
            tries = self._attempts(fit, t_cls, is_image, thresholds, frame_interval)
            if not tries:
                reason[rows] = REASON_NO_IMAGE_BUCKET if is_image else REASON_TOO_SHORT
                continue
            for r, options in tries:
                if rows.size == 0:
                    break
                kept_by_t, rows = self._try_resolution(r, options, rows, seeds)
                for kept, t in kept_by_t:
                    res_index[kept] = r
                    chosen_t[kept] = t
            reason[rows] = REASON_KEEP_PROB
        for r, res in enumerate(self.resolutions):  # ratio key of each assigned row
            kept = np.flatnonzero(res_index == r)
            if kept.size:
                ratio = H[kept] / W[kept]
                diffs = np.abs(self._ratio_values[res][None, :] - ratio[:, None])
                ar_index[kept] = np.argmin(diffs, axis=1)  # first minimum, as the reference's min()
        return BucketAssignment(res_index=res_index, num_frames=chosen_t, ar_index=ar_index, reason=reason)


_FORK_INPUTS: dict[str, Any] = {}  # inputs inherited by forked assignment workers


def _assign_inherited_span(start: int, end: int) -> BucketAssignment:
    bucket, T, H, W, frame_interval, seeds = _FORK_INPUTS["args"]
    return bucket._assign_arrays(
        T[start:end], H[start:end], W[start:end], frame_interval, None if seeds is None else seeds[start:end]
    )


def _as_int_column(values: Any, name: str) -> np.ndarray:
    """int64 column; NaN / missing values become 0 (reported as invalid metadata)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise ValueError(f"column {name!r} is boolean, expected integers")
    try:
        f = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"column {name!r} holds non-numeric values; re-run prepare to fill it") from None
    f = np.where(np.isfinite(f), f, 0.0)
    return f.astype(np.int64)


# --------------------------------------------------------------------------------------------------------
# Vectorised np.random.default_rng(seed).random(): SeedSequence(seed) -> PCG64 -> first double.
# Constants are numpy's published SeedSequence / PCG64 parameters.
_M32 = 0xFFFFFFFF
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_PCG_MULT_LIMBS = [np.uint64((_PCG_MULT >> (32 * k)) & _M32) for k in range(4)]


def _hash_stream(init: int, mult: int):
    """Yield the successive hash constants of SeedSequence (value used, then multiplied)."""
    h = init
    while True:
        yield h
        h = (h * mult) & _M32


def _mix_entropy(words: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence pool (4 uint32 words per row) from per-row entropy words (little-endian uint32)."""
    consts = _hash_stream(_INIT_A, _MULT_A)

    def hashmix(value: np.ndarray) -> np.ndarray:
        c = next(consts)
        value = value ^ np.uint32(c)
        value = value * np.uint32((c * _MULT_A) & _M32)
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = np.uint32(_MIX_MULT_L) * x - np.uint32(_MIX_MULT_R) * y
        return result ^ (result >> np.uint32(16))

    zeros = np.zeros_like(words[0])
    pool = [hashmix(words[i] if i < len(words) else zeros) for i in range(4)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(4, len(words)):
        for dst in range(4):
            pool[dst] = mix(pool[dst], hashmix(words[src]))
    return pool


def _generate_state(pool: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence.generate_state(4, uint64) as 8 uint32 words (little-endian pairs)."""
    consts = _hash_stream(_INIT_B, _MULT_B)
    out = []
    for i in range(8):
        c = next(consts)
        value = pool[i % 4] ^ np.uint32(c)
        value = value * np.uint32((c * _MULT_B) & _M32)
        out.append(value ^ (value >> np.uint32(16)))
    return out


def _carry(limbs: list[np.ndarray]) -> list[np.ndarray]:
    mask, shift = np.uint64(_M32), np.uint64(32)
    for k in range(3):
        limbs[k + 1] = limbs[k + 1] + (limbs[k] >> shift)
        limbs[k] = limbs[k] & mask
    limbs[3] = limbs[3] & mask
    return limbs


def _add128(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
    return _carry([a[k] + b[k] for k in range(4)])


def _mul128_pcg(a: list[np.ndarray]) -> list[np.ndarray]:
    """a * PCG multiplier mod 2**128 with 32-bit limbs held in uint64."""
    mask, shift = np.uint64(_M32), np.uint64(32)
    acc = [np.zeros_like(a[0]) for _ in range(4)]
    for i in range(4):
        for j in range(4 - i):
            prod = a[i] * _PCG_MULT_LIMBS[j]
            acc[i + j] = acc[i + j] + (prod & mask)
            if i + j + 1 < 4:
                acc[i + j + 1] = acc[i + j + 1] + (prod >> shift)
    return _carry(acc)


def first_uniform(seeds: np.ndarray) -> np.ndarray:
    """``np.random.default_rng(s).random()`` for every ``s`` in ``seeds`` (uint64), vectorised and bit-exact."""
    return uniform_draw(seeds, 0)


def uniform_draw(seeds: np.ndarray, index: int) -> np.ndarray:
    """Draw number ``index`` (0 = first) of ``g = np.random.default_rng(s)``'s ``g.random()`` calls, for every
    ``s`` in ``seeds`` (uint64); vectorised and bit-exact."""
    seeds = np.asarray(seeds, dtype=np.uint64)
    out = np.empty(seeds.shape, dtype=np.float64)
    if seeds.size == 0:
        return out
    lo = (seeds & np.uint64(_M32)).astype(np.uint32)
    hi = (seeds >> np.uint64(32)).astype(np.uint32)
    one_word = hi == 0  # SeedSequence uses as many 32-bit words as the integer needs
    for sel, two in ((one_word, False), (~one_word, True)):
        if not sel.any():
            continue
        words = [lo[sel], hi[sel]] if two else [lo[sel]]
        state = [w.astype(np.uint64) for w in _generate_state(_mix_entropy(words))]
        out[sel] = _pcg64_double(state, index)
    return out


def _pcg64_double(w: list[np.ndarray], index: int) -> np.ndarray:
    """PCG64 seeded from generate_state words -> next_double() number ``index`` (0 = first)."""
    mask, one = np.uint64(_M32), np.uint64(1)
    # uint64 words u0=(w0,w1) .. u3=(w6,w7); initstate = u0<<64 | u1, initseq = u2<<64 | u3 (limbs low first)
    initstate = [w[2], w[3], w[0], w[1]]
    initseq = [w[6], w[7], w[4], w[5]]
    inc = [((initseq[0] << one) & mask) | one]
    for k in range(1, 4):
        inc.append(((initseq[k] << one) & mask) | (initseq[k - 1] >> np.uint64(31)))
    state = _add128(inc, initstate)  # state=0 -> step gives inc; then += initstate
    state = _add128(_mul128_pcg(state), inc)  # second step of seeding
    for _ in range(index + 1):  # one step per draw
        state = _add128(_mul128_pcg(state), inc)
    high = (state[3] << np.uint64(32)) | state[2]
    low = (state[1] << np.uint64(32)) | state[0]
    x = high ^ low
    rot = state[3] >> np.uint64(26)  # top 6 bits of the 128-bit state
    value = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
    return (value >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
