"""Data pipeline benchmarks; one JSON line per measurement (name, ours, baseline, ratio, unit, machine).

1. Clip loading: 16 frames at frame_interval 3 (random temporal windows, reference TemporalRandomCrop) from
   10-second 1280x720 30 fps H.264 videos written with PyAV (x264 preset veryfast, crf 23), for two GOP sizes:
   x264's default keyint 250 and a 2-second keyint 60. ``ours`` = :func:`opensora_core.data.video_io.read_clip`:
   seek to the keyframe before the window, decode up to the window's last frame with FFmpeg frame threading
   (automatic thread count, what a DataLoader with num_workers <= 1 gets) while dropping unrequested
   non-reference frames, convert only the 16 requested frames; also measured with 1 decoder thread (what many
   DataLoader workers get). ``baseline`` = :func:`~opensora_core.data.video_io.read_video_full` + indexing, a
   faithful imitation of ``torchvision.io.read_video`` (pyav backend) in the reference loader: decode every
   frame with PyAV's default codec settings, convert every frame to RGB, stack, index. All variants load the
   same windows, interleaved in rounds; wall-time rates are the best round, CPU-time rates (process CPU time
   of all threads, insensitive to other load on the machine) the best round too. With ``--reference REF12
   --reference-torchvision TV`` the reference itself is measured too (``*_vs_reference`` lines): Open-Sora 1.2's
   ``read_video(path, backend="av")`` imported from the checkout REF12 with torchvision's pyav reader from TV
   (:mod:`benchmarks._reference_video`), and ours is checked to return its pixels.
2. Bucket assignment over synthetic metadata rows with the Open-Sora v1.1 stage3 bucket_config:
   ``baseline`` = the reference way, ``DataFrame.apply(get_bucket_id, axis=1)`` in one process (pandarallel
   with ``num_bucket_build_workers=1``; measured on a subset, rows/s); ``ours`` = the vectorised
   :meth:`Bucket.assign` (bit-exact keep_prob draws) with 1 process and with 2 worker processes.
3. The whole per-epoch bucket plan of :class:`VariableVideoBatchSampler` (assignment, grouping, shuffles).

Usage: ``python benchmarks/data.py [--quick] [--rows N] [--videos N] [--clips N] [--reference REF12
--reference-torchvision TV]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import emit  # noqa: E402
from opensora_core.data.bucket import Bucket  # noqa: E402
from opensora_core.data.sampler import VariableVideoBatchSampler  # noqa: E402
from opensora_core.data.video_io import (  # noqa: E402
    read_clip,
    read_video_full,
    resolve_decode_threads,
    temporal_random_crop_indices,
    write_video,
)

STAGE3_BUCKET_CONFIG = {
    "144p": {1: (1.0, 200), 16: (1.0, 36), 32: (1.0, 18), 64: (1.0, 9), 128: (1.0, 4)},
    "256": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 11), 64: (0.5, 6), 128: (0.8, 4)},
    "240p": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 10), 64: (0.5, 6), 128: (0.5, 3)},
    "360p": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.5, 1)},
    "512": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.8, 1)},
    "480p": {1: (0.4, 80), 16: (0.6, 6), 32: (0.6, 3), 64: (0.6, 1), 128: (0.0, None)},
    "720p": {1: (0.4, 40), 16: (0.6, 3), 32: (0.6, 1), 96: (0.0, None)},
    "1024": {1: (0.3, 40)},
}


def best_of(repeats: int, fn):  # noqa: ANN001, ANN201 - tiny timing helper
    """(result, best wall time in seconds) of ``repeats`` calls of ``fn``."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def synthetic_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Moving gradients + texture + a moving block: compresses like camera footage, not like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 40, (height, width, 1), dtype=np.uint8)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        r = (xx + 4 * t) % 256
        g = (yy + 2 * t) % 256
        b = ((xx + yy) / 2 + 3 * t) % 256
        frame = np.stack([r, g, b], axis=-1).astype(np.uint8)
        frame = frame // 2 + np.roll(texture, t, axis=1)
        y0, x0 = (t * 5) % (height - 100), (t * 9) % (width - 100)
        frame[y0 : y0 + 100, x0 : x0 + 100] = (255, 255, 255)
        frames[t] = frame
    return frames


def clip_rates(load, paths: list[Path], windows: int) -> tuple[float, float]:  # noqa: ANN001
    """(wall clips/s, CPU clips/s) of one pass loading ``windows`` clips; CPU time counts all threads."""
    rng = random.Random(0)  # the same windows in every round and for every variant
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(windows):
        load(paths[i % len(paths)], rng)
    return windows / (time.perf_counter() - t0), windows / max(time.process_time() - c0, 1e-9)


def bench_clip_loading(args: argparse.Namespace, workdir: Path) -> None:
    h, w, fps, seconds = args.height, args.width, 30, args.seconds
    num_frames = int(fps * seconds)

    def baseline(path: Path, rng: random.Random) -> None:
        full, _ = read_video_full(path)
        clip = full[temporal_random_crop_indices(len(full), 16, 3, rng)]
        assert clip.shape == (16, h, w, 3)

    reference = None
    if args.reference:
        from benchmarks._reference_video import load_read_video

        reference = load_read_video(Path(args.reference), Path(args.reference_torchvision))

    def reference_load(path: Path, rng: random.Random) -> None:
        full, _ = reference(str(path), backend="av")  # uint8 [T, C, H, W] tensor
        clip = full[temporal_random_crop_indices(len(full), 16, 3, rng)]
        assert tuple(clip.shape) == (16, 3, h, w)

    def ours(threads: int | None):  # noqa: ANN202
        def load(path: Path, rng: random.Random) -> None:
            clip, _ = read_clip(path, 16, 3, rng, decode_threads=threads)
            assert clip.shape == (16, h, w, 3)

        return load

    for keyint in (250, 2 * fps):
        paths = []
        for i in range(args.videos):
            frames = synthetic_frames(num_frames, h, w, seed=i)
            paths.append(
                write_video(
                    workdir / f"v{i}_k{keyint}.mp4", frames, fps=fps, crf=23, keyint=keyint, preset="veryfast"
                )
            )
        read_clip(paths[0], 16, 3, random.Random(0))  # warm-up: first decode in a process is slower
        if reference is not None:  # the same pixels as the reference's reader, for every file
            window = temporal_random_crop_indices(num_frames, 16, 3, random.Random(7))
            for path in paths:
                ref = reference(str(path), backend="av")[0][window].permute(0, 2, 3, 1).numpy()
                assert np.array_equal(read_clip(path, 16, 3, random.Random(7), decode_threads=1)[0], ref)
        threads = resolve_decode_threads(None)
        base = ours_auto = ours_one = ref_rates = (0.0, 0.0)
        for _ in range(max(1, args.repeats)):  # interleaved so that every variant sees the same load
            base = max_rates(base, clip_rates(baseline, paths, args.baseline_clips))
            if reference is not None:
                ref_rates = max_rates(ref_rates, clip_rates(reference_load, paths, args.baseline_clips))
            ours_auto = max_rates(ours_auto, clip_rates(ours(None), paths, args.clips))
            ours_one = max_rates(ours_one, clip_rates(ours(1), paths, args.clips))
        name = f"clip_load_16f_interval3_{h}p_{seconds:g}s_keyint{keyint}"
        detail = (
            f"{args.videos} videos {w}x{h} {fps}fps x264 veryfast crf23 keyint {keyint}; ours {args.clips} / "
            f"baseline {args.baseline_clips} random windows, best of {max(1, args.repeats)} interleaved rounds; "
            "baseline PyAV default codec settings (slice threading = 1 thread here)"
        )
        auto = (
            f"ours decode_threads auto ({threads or 'FFmpeg automatic: cores + 1'} threads, frame threading)"
        )
        emit(name, ours_auto[0], base[0], "clips/s", detail=f"{detail}; {auto}")
        emit(f"{name}_1thread", ours_one[0], base[0], "clips/s", detail=f"{detail}; ours decode_threads=1")
        emit(f"{name}_cpu", ours_auto[1], base[1], "clips/cpu-s", detail=f"{detail}; {auto}; CPU time")
        emit(
            f"{name}_1thread_cpu",
            ours_one[1],
            base[1],
            "clips/cpu-s",
            detail=f"{detail}; ours decode_threads=1; CPU time",
        )
        if reference is not None:
            ref_detail = (
                f"{detail.split('; baseline')[0]}; reference = Open-Sora 1.2 read_video(backend='av') from "
                f"{args.reference} (torchvision pyav reader from {args.reference_torchvision}) + indexing, "
                f"{args.baseline_clips} windows per round; ours returns the same pixels (checked)"
            )
            for suffix, rates, what in (
                ("", ours_auto, auto),
                ("_1thread", ours_one, "ours decode_threads=1"),
            ):
                emit(
                    f"{name}{suffix}_vs_reference",
                    rates[0],
                    ref_rates[0],
                    "clips/s",
                    detail=f"{ref_detail}; {what}",
                )
                emit(
                    f"{name}{suffix}_vs_reference_cpu",
                    rates[1],
                    ref_rates[1],
                    "clips/cpu-s",
                    detail=f"{ref_detail}; {what}; CPU time",
                )
            emit(
                f"{name}_imitation_vs_reference",
                base[0],
                ref_rates[0],
                "clips/s",
                detail=f"{ref_detail}; ours = the baseline imitation read_video_full (how faithful it is)",
            )


def max_rates(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """Element-wise maximum of two (wall, cpu) rate pairs."""
    return max(a[0], b[0]), max(a[1], b[1])


def synthetic_metadata(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = np.array(
        [
            (144, 256),
            (240, 426),
            (360, 640),
            (480, 854),
            (720, 1280),
            (1080, 1920),
            (256, 256),
            (512, 512),
            (1024, 1024),
            (1280, 720),
            (1920, 1080),
            (600, 800),
        ]
    )
    pick = rng.integers(0, len(sizes), n)
    jitter = rng.uniform(0.9, 1.1, (n, 1))
    hw = np.maximum(16, (sizes[pick] * jitter).astype(np.int64))
    is_image = rng.random(n) < 0.2
    frames = np.where(is_image, 1, rng.integers(16, 900, n))
    return pd.DataFrame({"num_frames": frames, "height": hw[:, 0], "width": hw[:, 1]})


def bench_bucket_assignment(args: argparse.Namespace) -> None:
    data = synthetic_metadata(args.rows)
    bucket = Bucket(STAGE3_BUCKET_CONFIG)
    seed = 42
    data["id"] = np.arange(len(data))

    subset = data.iloc[: args.baseline_rows]

    def reference_apply() -> pd.Series:
        return subset.apply(
            lambda row: bucket.get_bucket_id(
                row["num_frames"], row["height"], row["width"], 3, seed + row["id"] * bucket.num_bucket
            ),
            axis=1,
        )

    cpu0 = time.process_time()
    ref, seconds = best_of(args.repeats, reference_apply)
    baseline = len(subset) / seconds
    baseline_cpu = len(subset) * max(1, args.repeats) / (time.process_time() - cpu0)

    seeds = seed + np.arange(len(data), dtype=np.uint64) * np.uint64(bucket.num_bucket)
    cols = (data["num_frames"].to_numpy(), data["height"].to_numpy(), data["width"].to_numpy())
    cpu0 = time.process_time()
    for _ in range(max(1, args.repeats)):
        bucket.assign(*cols, 3, seeds)
    ours_cpu = len(data) * max(1, args.repeats) / (time.process_time() - cpu0)
    rates = {}
    for workers in (1, 2):
        assignment, seconds = best_of(
            args.repeats, lambda w=workers: bucket.assign(*cols, 3, seeds, num_workers=w)
        )
        rates[workers] = len(data) / seconds
    codes = bucket.codes(assignment)
    got = [None if c < 0 else bucket.key_of_code(int(c)) for c in codes[: len(subset)]]
    assert got == ref.tolist(), "vectorised assignment differs from the per-row reference"
    detail = (
        f"{len(data)} rows, stage3 bucket_config, frame_interval 3; baseline on the first {len(subset)} rows; "
        f"wall time, best of {args.repeats}"
    )
    emit("bucket_assign_vectorised_2workers_vs_reference_apply", rates[2], baseline, "rows/s", detail=detail)
    emit("bucket_assign_vectorised_1proc_vs_reference_apply", rates[1], baseline, "rows/s", detail=detail)
    emit("bucket_assign_2workers_vs_1proc", rates[2], rates[1], "rows/s", detail=detail)
    emit(
        "bucket_assign_rows_per_cpu_second",
        ours_cpu,
        baseline_cpu,
        "rows/cpu-s",
        detail="one process, CPU time (insensitive to other load on the machine); ours vectorised, baseline apply",
    )

    dataset = SimpleNamespace(data=data, frame_interval=3)
    sampler = VariableVideoBatchSampler(
        dataset, STAGE3_BUCKET_CONFIG, num_replicas=8, rank=0, seed=seed, num_bucket_build_workers=2
    )

    def plan() -> int:
        sampler._plan = None  # rebuild the epoch plan each repeat
        return sampler.get_num_batch()

    n_batches, plan_s = best_of(args.repeats, plan)
    emit(
        "sampler_epoch_plan_rows_per_s",
        len(data) / plan_s,
        baseline,
        "rows/s",
        detail=f"whole epoch plan ({n_batches} micro-batches, 8 ranks) in {plan_s:.2f}s; baseline = reference "
        "bucket assignment alone",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="timings: best of this many runs/rounds")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--clips", type=int, default=16, help="clips per round for ours")
    parser.add_argument("--baseline-clips", type=int, default=4, help="clips per round for the baseline")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--reference",
        help="Open-Sora 1.2 checkout: also measure its read_video (see benchmarks/_reference_video.py)",
    )
    parser.add_argument(
        "--reference-torchvision",
        help="folder with torchvision<=0.21 (pip --no-deps --target) for --reference",
    )
    parser.add_argument("--skip-clips", action="store_true")
    parser.add_argument("--skip-buckets", action="store_true")
    args = parser.parse_args()
    if bool(args.reference) != bool(args.reference_torchvision):
        parser.error("--reference and --reference-torchvision go together")
    if args.quick:
        args.rows, args.baseline_rows, args.videos, args.clips, args.baseline_clips = 30_000, 500, 1, 4, 2
        args.repeats = 1
        args.height, args.width, args.seconds = 128, 160, 3.0
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        if not args.skip_clips:
            bench_clip_loading(args, Path(tmp))
    if not args.skip_buckets:
        bench_bucket_assignment(args)


if __name__ == "__main__":
    main()
