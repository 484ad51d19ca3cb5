"""Bucket assignment reproduces Open-Sora v1.1 (ordering, ids, 0.8 rule, strict T > t*interval, keep_prob draws)."""

from __future__ import annotations

import numpy as np
import pytest

from opensora_core.data import bucket as bucket_module
from opensora_core.data.aspect import ASPECT_RATIOS
from opensora_core.data.bucket import Bucket, first_uniform, uniform_draw
from tests.data.bucket_configs import (
    FRAME_INTERVAL,
    STAGE2_BUCKET_CONFIG,
    STAGE3_BUCKET_CONFIG,
    V12_STAGE2_BUCKET_CONFIG,
)


def oracle_bucket_id(config: dict, T: int, H: int, W: int, fi: int, seed: int):
    """The rule of OPEN_SORA_REFERENCE.md §5, stated as plainly as possible (independent of Bucket)."""
    names = sorted(config, key=lambda r: -ASPECT_RATIOS[r][0])
    ids, n = {}, 0
    for r in names:
        for t in sorted(config[r], reverse=True):
            ids[(r, t)] = n
            n += 1
    for r in names:
        if 0.8 * ASPECT_RATIOS[r][0] > H * W:
            continue
        frame_keys = sorted(config[r], reverse=True)
        if T == 1:
            if 1 not in config[r]:
                continue
            t = 1
            if not np.random.default_rng(seed + ids[(r, 1)]).random() < config[r][1][0]:
                continue
        else:
            fitting = [t for t in frame_keys if t != 1 and t * fi < T]
            if not fitting:
                continue
            t = fitting[0]
            p = config[r][t][0]
            if not (p == 1 or np.random.default_rng(seed + ids[(r, t)]).random() < p):
                continue
        table = ASPECT_RATIOS[r][1]
        ar = min(table, key=lambda k: abs(float(k) - H / W))
        return r, t, ar
    return None


def test_num_bucket_of_stage_configs() -> None:
    assert Bucket(STAGE2_BUCKET_CONFIG).num_bucket == 729
    assert Bucket(STAGE3_BUCKET_CONFIG).num_bucket == 848
    b = Bucket(STAGE3_BUCKET_CONFIG)
    assert b.resolutions == ["1024", "720p", "480p", "512", "360p", "240p", "256", "144p"]
    assert list(b.bucket_probs["720p"]) == [96, 32, 16, 1]  # frame keys descending
    assert b.bucket_id["1024"][1] == 0 and b.bucket_id["720p"][96] == 1 and b.bucket_id["720p"][1] == 4
    assert b.bucket_id["144p"][1] == b.num_hw_t_buckets - 1


def test_first_uniform_is_bit_exact_with_numpy() -> None:
    rng = np.random.default_rng(123)
    seeds = np.concatenate(
        [
            np.arange(0, 300),
            rng.integers(0, 2**32, 300),
            rng.integers(2**32, 2**63, 300),
            np.array([2**32 - 1, 2**32, 2**63 - 1]),
        ]
    ).astype(np.uint64)
    expected = np.array([np.random.default_rng(int(s)).random() for s in seeds])
    np.testing.assert_array_equal(first_uniform(seeds), expected)


@pytest.mark.parametrize("config", [STAGE2_BUCKET_CONFIG, STAGE3_BUCKET_CONFIG], ids=["stage2", "stage3"])
def test_scalar_and_vectorised_match_oracle(config: dict) -> None:
    bucket = Bucket(config)
    rng = np.random.default_rng(7)
    n = 3000
    T = rng.choice([1, 1, 2, 16, 17, 48, 49, 96, 97, 100, 193, 385, 400], n)
    H = rng.integers(90, 2200, n)
    W = rng.integers(90, 2200, n)
    seeds = 42 + np.arange(n) * bucket.num_bucket
    assignment = bucket.assign(T, H, W, FRAME_INTERVAL, seeds)
    codes = bucket.codes(assignment)
    for i in range(n):
        want = oracle_bucket_id(config, int(T[i]), int(H[i]), int(W[i]), FRAME_INTERVAL, int(seeds[i]))
        got = bucket.get_bucket_id(int(T[i]), int(H[i]), int(W[i]), FRAME_INTERVAL, int(seeds[i]))
        assert got == want, (i, T[i], H[i], W[i])
        assert (None if codes[i] < 0 else bucket.key_of_code(int(codes[i]))) == want
    counts = assignment.reason_counts()
    assert counts["assigned"] == int((codes >= 0).sum())
    assert sum(counts.values()) == n


def test_parallel_assignment_equals_single_process() -> None:
    bucket = Bucket(STAGE3_BUCKET_CONFIG)
    rng = np.random.default_rng(3)
    n = 2 * bucket_module.MIN_ROWS_PER_WORKER + 10
    T = rng.choice([1, 49, 100, 400], n)
    H = rng.integers(100, 1200, n)
    W = rng.integers(100, 1200, n)
    seeds = 5 + np.arange(n) * bucket.num_bucket
    one = bucket.assign(T, H, W, 3, seeds)
    two = bucket.assign(T, H, W, 3, seeds, num_workers=2)
    for field in ("res_index", "num_frames", "ar_index", "reason"):
        np.testing.assert_array_equal(getattr(one, field), getattr(two, field))


def _seed_where(bucket: Bucket, res: str, t: int, keep: bool) -> int:
    """A seed whose draw for bucket (res, t) keeps (or rejects) the sample."""
    p = bucket.bucket_probs[res][t]
    for seed in range(10_000):
        if (np.random.default_rng(seed + bucket.bucket_id[res][t]).random() < p) == keep:
            return seed
    raise AssertionError("no seed found")


def test_images_go_to_frame_key_one_and_fall_through_on_rejection() -> None:
    b = Bucket(STAGE3_BUCKET_CONFIG)
    seed = _seed_where(b, "1024", 1, keep=True)
    assert b.get_bucket_id(1, 1024, 1024, 3, seed) == ("1024", 1, "1.0")
    seed = _seed_where(b, "1024", 1, keep=False)
    got = b.get_bucket_id(1, 1024, 1024, 3, seed)
    assert got is not None and got[0] != "1024" and got[1] == 1
    assert got == oracle_bucket_id(STAGE3_BUCKET_CONFIG, 1, 1024, 1024, 3, seed)
    # an image never takes a video frame key, even at frame_interval 1
    only_video = {"240p": {16: (1.0, 4)}}
    assert Bucket(only_video).get_bucket_id(1, 240, 426, 1, 0) is None
    assert Bucket(only_video).get_reason(1, 240, 426, 1, 0) == "no_image_bucket"
    # keep_prob 1 images always land (144p image key has p=1.0 in stage3)
    assert b.get_bucket_id(1, 144, 256, 3, 99) == ("144p", 1, "0.56")


def test_frame_count_must_exceed_t_times_interval_strictly() -> None:
    b = Bucket(STAGE3_BUCKET_CONFIG)
    # 720p video with exactly 16 * 3 frames fits no 16-frame bucket at any resolution
    assert b.get_bucket_id(48, 720, 1280, 3, 0) is None
    assert b.get_reason(48, 720, 1280, 3, 0) == "too_short"
    assert b.get_bucket_id(16, 144, 256, 1, 0) is None  # 16 > 16 is false at interval 1 too
    assert b.get_bucket_id(17, 144, 256, 1, 0) == ("144p", 16, "0.56")
    # one more frame fits: the largest fitting key wins (720p, 16 frames) when its draw keeps it
    seed = _seed_where(b, "720p", 16, keep=True)
    assert b.get_bucket_id(49, 720, 1280, 3, seed) == ("720p", 16, "0.56")
    seed = _seed_where(b, "720p", 32, keep=True)
    assert b.get_bucket_id(97, 720, 1280, 3, seed) == ("720p", 32, "0.56")
    # a 720p key of 96 frames has keep_prob 0: 400 frames never land there
    for seed in range(50):
        got = b.get_bucket_id(400, 720, 1280, 3, seed)
        assert got is None or got[:2] != ("720p", 96)
        assert got == oracle_bucket_id(STAGE3_BUCKET_CONFIG, 400, 720, 1280, 3, seed)


def test_pixel_threshold_is_eighty_percent() -> None:
    b = Bucket({"144p": {1: (1.0, 4), 16: (1.0, 2)}})
    # 0.8 * 36864 = 29491.2: 171x171 = 29241 is below, 172x172 = 29584 above
    assert b.get_bucket_id(100, 171, 171, 1, 0) is None
    assert b.get_reason(100, 171, 171, 1, 0) == "too_small"
    assert b.get_bucket_id(100, 172, 172, 1, 0) == ("144p", 16, "1.00")
    # a 240p-sized video is below 0.8 of 360p (230400): it only fits the 240p buckets
    b2 = Bucket({"360p": {16: (1.0, 1)}, "240p": {16: (1.0, 1)}})
    assert b2.get_bucket_id(100, 240, 426, 1, 0) == ("240p", 16, "0.56")
    assert b2.get_bucket_id(100, 360, 640, 1, 0) == ("360p", 16, "0.56")


def test_keep_prob_zero_never_keeps_and_reports_reason() -> None:
    config = {"240p": {1: (0.0, None), 16: (0.0, None)}}
    b = Bucket(config)
    for seed in range(20):
        assert b.get_bucket_id(50, 240, 426, 1, seed) is None
        assert b.get_bucket_id(1, 240, 426, 1, seed) is None
    assert b.get_reason(50, 240, 426, 1, 0) == "dropped_by_keep_prob"
    a = b.assign(
        np.array([50, 1, 5, 50]),
        np.array([240, 240, 240, 10]),
        np.array([426, 426, 426, 10]),
        1,
        np.arange(4),
    )
    assert a.reason_counts() == {
        "assigned": 0,
        "too_small": 1,
        "too_short": 1,
        "no_image_bucket": 0,
        "dropped_by_keep_prob": 2,
        "invalid_metadata": 0,
    }


def test_bucket_accessors() -> None:
    b = Bucket(STAGE2_BUCKET_CONFIG)
    assert b.get_thw(("240p", 16, "0.56")) == (16, 240, 426)
    assert b.get_thw(("256", 1, "1.0")) == (1, 256, 256)
    assert b.get_batch_size(("240p", 16, "0.56")) == 17
    assert b.get_prob(("512", 128, "1.0")) == 0.0
    assert b.get_batch_size(("512", 128, "1.0")) is None
    key = ("480p", 16, "0.75")
    assert b.key_of_code(b.bucket_code(key)) == key
    assert len(b) == 729


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"240P": {16: (1.0, 2)}}, "did you mean '240p'"),
        ({"240p": {"x": (1.0, 2)}}, "not an integer"),
        ({"240p": {16: (1.0, None)}}, "batch_size is None"),
        ({"240p": {16: (-1.0, 2)}}, "keep_prob must be >= 0"),
        ({"240p": {16: (1.0,)}}, "must be \\(keep_prob, batch_size\\)"),
        ({}, "non-empty"),
    ],
)
def test_bad_bucket_config_is_a_clear_error(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Bucket(config)


def test_string_frame_keys_from_json_configs() -> None:
    b = Bucket({"240p": {"16": [1.0, 4], "1": [0.5, 8]}})
    assert list(b.bucket_probs["240p"]) == [16, 1]
    assert b.get_bucket_id(20, 240, 426, 1, 0) == ("240p", 16, "0.56")


def oracle_bucket_id_v12(config: dict, T: int, H: int, W: int, fi: int, seed: int):
    """Open-Sora 1.2's rule, stated plainly: a (keep_prob, frame_prob) pair first draws frame_prob (skipping
    the frame key when the draw exceeds it), then the keep draw is the same generator's second number."""
    names = sorted(config, key=lambda r: -ASPECT_RATIOS[r][0])
    ids = {}
    for r in names:
        for t in sorted(config[r], reverse=True):
            ids[(r, t)] = len(ids)
    for r in names:
        if 0.8 * ASPECT_RATIOS[r][0] > H * W:
            continue
        if T == 1:
            if 1 in config[r] and np.random.default_rng(seed + ids[(r, 1)]).random() < config[r][1][0]:
                return r, 1, min(ASPECT_RATIOS[r][1], key=lambda k: abs(float(k) - H / W))
            continue
        chosen = None
        for t in sorted(config[r], reverse=True):
            g = np.random.default_rng(seed + ids[(r, t)])
            prob = config[r][t][0]
            if isinstance(prob, tuple) and g.random() > prob[1]:
                continue
            if t * fi < T and t != 1:
                chosen = t
                break
        if chosen is None:
            continue
        keep = prob[0] if isinstance(prob, tuple) else prob
        if keep >= 1 or g.random() < keep:
            return r, chosen, min(ASPECT_RATIOS[r][1], key=lambda k: abs(float(k) - H / W))
    return None


def test_second_uniform_is_bit_exact_with_numpy() -> None:
    seeds = np.r_[np.arange(0, 200), np.array([2**32 + 5, 2**63 - 1])].astype(np.uint64)
    for index in (1, 2):
        expected = np.array([np.random.default_rng(int(s)).random(index + 1)[index] for s in seeds])
        np.testing.assert_array_equal(uniform_draw(seeds, index), expected)


@pytest.mark.parametrize("fi", [1, 3])
def test_v12_pair_keep_probs_match_the_v12_oracle(fi: int) -> None:
    bucket = Bucket(V12_STAGE2_BUCKET_CONFIG)
    assert bucket.get_prob(("144p", 102, "0.56")) == (1.0, 0.33)
    rng = np.random.default_rng(11)
    n = 3000
    T = rng.choice([1, 1, 40, 52, 103, 150, 205, 300, 409, 1300], n)
    H = rng.integers(100, 2400, n)
    W = rng.integers(100, 2400, n)
    seeds = 42 + np.arange(n) * bucket.num_bucket
    codes = bucket.codes(bucket.assign(T, H, W, fi, seeds))
    for i in range(n):
        want = oracle_bucket_id_v12(
            V12_STAGE2_BUCKET_CONFIG, int(T[i]), int(H[i]), int(W[i]), fi, int(seeds[i])
        )
        assert bucket.get_bucket_id(int(T[i]), int(H[i]), int(W[i]), fi, int(seeds[i])) == want, i
        assert (None if codes[i] < 0 else bucket.key_of_code(int(codes[i]))) == want, i
    # a 144p 409-frame video takes 408 frames only when its frame_prob draw (0.1) passes, else 204 (0.1),
    # else 102 (0.33), else 51 (a plain 1.0)
    taken = [bucket.get_bucket_id(409 * fi, 144, 256, fi, seed)[1] for seed in range(400)]
    assert set(taken) == {408, 204, 102, 51}
    assert 0.05 < taken.count(408) / 400 < 0.15


def test_v12_pair_on_the_image_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="images, frame key 1"):
        Bucket({"240p": {1: ((1.0, 0.5), 4)}})
    with pytest.raises(ValueError, match="must both be in"):
        Bucket({"240p": {51: ((1.0, 1.5), 4)}})
