"""Curation stage benchmarks; one JSON line per measurement (name, ours, baseline, ratio, unit, machine).

A generated 720p set: ``--videos`` H.264 files (1280x720, 24 fps, x264 veryfast) of ``--shots`` hard-cut shots of
``--shot-frames`` frames each (moving gradients + texture, a different palette per shot; x264's scene-cut
detection puts a keyframe at every cut, as in edited footage). Stages run through their library functions on
fresh outputs each time:

1. probe (``prepare``), scene split (``split_scenes``, PySceneDetect + cutting) and motion score (``score``):
   files (probe, split) or clips (score) per second with 2 worker processes (``ours``) vs 1 (``baseline``), wall
   time; the ``per_core`` fields are items per CPU-second of all processes (parent + workers), which is what
   scales with cores and is insensitive to other load on the machine.
2. scene split with stream copy where keyframes allow (``ours``) vs always re-encoding (``baseline``), 1 worker,
   sources per second; ``cuts`` says how many clips each mode copied or re-encoded.
3. the ``text_area`` score (burned-in text, rapidocr, 4 frames per clip at 640 px, one onnxruntime thread;
   ``ours``) vs the motion score (``baseline``), 1 worker, clips per second; the middle shot of every source
   carries a burned-in caption, so the recognizer reads real text boxes too. Includes the one-time OCR model
   load.

Usage: ``python benchmarks/curate.py [--quick] [--videos N] [--shots N] [--shot-frames N]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import emit  # noqa: E402
from opensora_core.data.curate.scenes import SceneSplitConfig, split_scenes  # noqa: E402
from opensora_core.data.curate.scores import score  # noqa: E402
from opensora_core.data.prepare import prepare  # noqa: E402
from opensora_core.data.video_io import write_video  # noqa: E402


def shot_frames(
    num_frames: int, height: int, width: int, seed: int, caption: str | None = None
) -> np.ndarray:
    """One shot: a moving gradient in a palette of its own plus drifting texture, and ``caption`` burned in as
    white text near the bottom -> uint8 ``[T, H, W, 3]``."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gains = rng.uniform(0.3, 1.0, 3)
    phase = rng.uniform(0, 256, 3)
    texture = rng.integers(0, 48, (height, width, 1), dtype=np.uint8)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        base = np.stack(
            [(xx * gains[0] + phase[0] + 3 * t) % 256, (yy * gains[1] + phase[1] + 2 * t) % 256,
             ((xx + yy) * gains[2] / 2 + phase[2]) % 256],
            axis=-1,
        )  # fmt: skip
        frames[t] = (base * 0.8).astype(np.uint8) + np.roll(texture, 2 * t, axis=1)
        if caption:
            org, white = (height // 12, height - height // 10), (255, 255, 255)
            cv2.putText(
                frames[t], caption, org, cv2.FONT_HERSHEY_SIMPLEX, height / 720, white, max(1, height // 360)
            )
    return frames


def make_set(folder: Path, videos: int, shots: int, shot_frames_n: int, height: int, width: int) -> None:
    folder.mkdir(parents=True)
    for v in range(videos):
        frames = (
            f
            for s in range(shots)
            for f in shot_frames(
                shot_frames_n,
                height,
                width,
                100 * v + s,
                f"Source {v}: a caption" if s == shots // 2 else None,
            )
        )
        write_video(folder / f"source{v:02d}.mp4", frames, fps=24, preset="veryfast")
        (folder / f"source{v:02d}.txt").write_text(f"generated source {v}")


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):  # noqa: ANN001, ANN201 - tiny timing helper
    """(result, wall seconds, CPU seconds of this process and its reaped workers) of ``fn()``."""
    t0, c0 = time.perf_counter(), _cpu()
    result = fn()
    return result, time.perf_counter() - t0, _cpu() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--shot-frames", type=int, default=36)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    if args.quick:
        args.videos, args.shots, args.shot_frames, args.height, args.width = 2, 2, 24, 144, 256
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        work = Path(tmp)
        _, gen_s, _ = timed(
            lambda: make_set(work / "raw", args.videos, args.shots, args.shot_frames, args.height, args.width)
        )
        geometry = {
            "videos": args.videos,
            "shots": args.shots,
            "frames_per_video": args.shots * args.shot_frames,
            "size": f"{args.width}x{args.height}",
            "generate_s": round(gen_s, 1),
        }
        n = args.videos
        rates = {}
        for workers in (1, 2):
            out = work / f"w{workers}"
            _, wall, cpu = timed(
                lambda: prepare(work / "raw", out / "meta.csv", workers=workers, progress=False)  # noqa: B023
            )
            rates["probe", workers] = (n / wall, n / cpu)
            rep, wall, cpu = timed(
                lambda: split_scenes(out / "meta.csv", out / "clips.csv", out / "clips", workers=workers)  # noqa: B023
            )
            rates["split", workers] = (n / wall, n / cpu)
            clips = rep.num_out
            _, wall, cpu = timed(lambda: score(out / "clips.csv", out / "scored.csv", workers=workers))  # noqa: B023
            rates["motion", workers] = (clips / wall, clips / cpu)
        for stage, unit in (("probe", "files/s"), ("split", "sources/s"), ("motion", "clips/s")):
            (w2, c2), (w1, c1) = rates[stage, 2], rates[stage, 1]
            emit(
                f"curate_{stage}_{args.height}p_2_workers_vs_1",
                w2,
                w1,
                unit,
                per_core_1_worker=round(c1, 3),
                per_core_2_workers=round(c2, 3),
                clips=clips,
                **geometry,
            )
        copy, wall_copy, cpu_copy = timed(
            lambda: split_scenes(work / "w1" / "meta.csv", work / "copy.csv", work / "copy")
        )
        reenc, wall_re, cpu_re = timed(
            lambda: split_scenes(
                work / "w1" / "meta.csv",
                work / "reenc.csv",
                work / "reenc",
                SceneSplitConfig(stream_copy=False),
            )
        )
        emit(
            f"curate_split_{args.height}p_stream_copy_vs_reencode",
            n / wall_copy,
            n / wall_re,
            "sources/s",
            per_core_copy=round(n / cpu_copy, 3),
            per_core_reencode=round(n / cpu_re, 3),
            cuts_copy=copy.details["cuts"],
            cuts_reencode=reenc.details["cuts"],
            **geometry,
        )
        text, wall_text, cpu_text = timed(
            lambda: score(work / "w1" / "clips.csv", work / "text.csv", motion=False, num_frames=4, text=True)
        )
        emit(
            f"curate_text_area_{args.height}p_vs_motion",
            clips / wall_text,
            rates["motion", 1][0],
            "clips/s",
            seconds_per_clip=round(wall_text / clips, 3),
            cpu_seconds_per_clip=round(cpu_text / clips, 3),
            clips_with_text=int((pd.read_csv(text.output)["text_area"] > 0.001).sum()),
            frames_per_clip=4,
            text_size=640,
            **geometry,
        )


if __name__ == "__main__":
    main()
