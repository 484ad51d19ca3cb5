"""Scene split: PySceneDetect (PyAV backend) finds shot boundaries and each long video becomes clip files.

A clip is cut by stream copy (no quality loss, no decode) when it starts on a keyframe and ends on a keyframe
or at the end of the file, and by re-encoding (libx264) otherwise. ``skip_edge_frames`` trims every scene at
both ends (fades and cut artefacts), scenes shorter than ``min_clip_seconds`` are dropped (reported), and
scenes longer than ``max_clip_seconds`` are cut into equal pieces of at most that length. Clips are written to
``clip_dir`` (local or ``s3://``) as ``{source stem}_scene{k:03d}.mp4`` (sources of the table sharing a stem, e.g.
``a/x.mp4`` and ``b/x.mp4``, get ``{stem}-{sha1(path)[:8]}`` so no clip replaces another) and listed in a table with Open-Sora's
columns plus ``source_path``, ``start_frame``, ``end_frame`` (end exclusive, in source frames) and ``cut``.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from opensora_core.data.curate.common import StageReport, map_items, read_stage_input, write_stage
from opensora_core.data.prepare import _storage, fetch_to_local, is_uri

CLIP_COLUMNS = ["source_path", "start_frame", "end_frame", "cut"]


class SceneSplitConfig(BaseModel):
    """Scene detection and cutting settings (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (HSV change between frames)")
    min_clip_seconds: float = Field(1.0, ge=0, description="shorter scenes (after edge skipping) are dropped")
    max_clip_seconds: float | None = Field(
        None, gt=0, description="longer scenes are split into equal pieces"
    )
    skip_edge_frames: int = Field(0, ge=0, description="frames dropped at each end of every scene")
    stream_copy: bool = Field(True, description="copy packets when keyframes allow; False: always re-encode")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of re-encoded clips")


@dataclass(frozen=True)
class PacketIndex:
    """Per-frame facts of a video from one demux pass (no decode): presentation order and keyframes."""

    pts: list[int]  # sorted presentation timestamps; frame i has pts[i]
    keyframes: frozenset[int]  # frame indices of keyframes
    fps: float

    @property
    def num_frames(self) -> int:
        return len(self.pts)


def index_packets(local: str) -> PacketIndex:
    """Demux ``local`` once: sorted pts of every video packet, which frames are keyframes, the frame rate."""
    import av

    with av.open(local) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 24
        pairs = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    pairs.sort()
    return PacketIndex(
        [p for p, _ in pairs], frozenset(i for i, (_, k) in enumerate(pairs) if k), float(rate)
    )


def detect_scenes(local: str, threshold: float = 27.0, min_scene_frames: int = 1) -> list[tuple[int, int]]:
    """Shot boundaries of a local video as ``[(start, end)]`` frame ranges (end exclusive), covering the file."""
    from scenedetect import ContentDetector, SceneManager, open_video

    video = open_video(local, backend="pyav")
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=max(1, min_scene_frames)))
    manager.detect_scenes(video, show_progress=False)
    return [(s.frame_num, e.frame_num) for s, e in manager.get_scene_list(start_in_scene=True)]


def plan_clips(
    scenes: list[tuple[int, int]], fps: float, cfg: SceneSplitConfig
) -> tuple[list[tuple[int, int]], list[tuple[tuple[int, int], str]]]:
    """Scenes -> clip frame ranges after edge skipping, the minimum and the maximum length; also the scenes
    dropped, each with its rule."""
    clips: list[tuple[int, int]] = []
    dropped: list[tuple[tuple[int, int], str]] = []
    min_frames = max(1, math.ceil(cfg.min_clip_seconds * fps))
    for start, end in scenes:
        s, e = start + cfg.skip_edge_frames, end - cfg.skip_edge_frames
        if e - s < min_frames:
            dropped.append(((start, end), f"scene too short: {max(0, e - s)} frames < {min_frames}"))
            continue
        pieces = 1
        if cfg.max_clip_seconds is not None:
            pieces = math.ceil((e - s) / max(1, math.floor(cfg.max_clip_seconds * fps)))
        bounds = [s + round(i * (e - s) / pieces) for i in range(pieces + 1)]
        clips.extend(zip(bounds[:-1], bounds[1:], strict=True))
    return clips, dropped


def cut_clip(
    local: str, dest: str, start: int, end: int, index: PacketIndex, stream_copy: bool, crf: int
) -> str:
    """Write frames ``[start, end)`` of ``local`` to the local file ``dest``; returns ``"copy"`` or ``"reencode"``."""
    closed = start in index.keyframes and (end == index.num_frames or end in index.keyframes)
    if stream_copy and closed:
        _copy_packets(local, dest, index.pts[start], index.pts[end] if end < index.num_frames else None)
        return "copy"
    _reencode(local, dest, start, end, index, crf)
    return "reencode"


def _copy_packets(local: str, dest: str, first_pts: int, stop_pts: int | None) -> None:
    import av

    with av.open(local) as src, av.open(dest, "w") as out:
        stream = src.streams.video[0]
        target = out.add_stream_from_template(stream)
        src.seek(first_pts, stream=stream, backward=True, any_frame=False)
        for packet in src.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            if stop_pts is not None and packet.pts >= stop_pts and packet.is_keyframe:
                break  # decode order: the next closed GOP starts here
            if packet.pts < first_pts:
                continue
            packet.pts -= first_pts
            packet.dts = packet.dts - first_pts if packet.dts is not None else None
            packet.stream = target
            out.mux(packet)


def _reencode(local: str, dest: str, start: int, end: int, index: PacketIndex, crf: int) -> None:
    from fractions import Fraction

    import av

    frame_of = {pts: i for i, pts in enumerate(index.pts)}
    with av.open(local) as src, av.open(dest, "w") as out:
        stream = src.streams.video[0]
        rate = Fraction(index.fps).limit_denominator(1001)
        enc = out.add_stream("libx264", rate=rate)
        enc.width, enc.height, enc.pix_fmt = (
            stream.codec_context.width,
            stream.codec_context.height,
            "yuv420p",
        )
        enc.options = {"crf": str(crf)}
        src.seek(index.pts[start], stream=stream, backward=True, any_frame=False)
        written = 0
        for frame in src.decode(stream):
            i = frame_of.get(frame.pts, -1)
            if i >= end:
                break
            if i < start:
                continue
            out_frame = frame.reformat(format="yuv420p")
            out_frame.pts, out_frame.time_base = written, 1 / rate
            written += 1
            for packet in enc.encode(out_frame):
                out.mux(packet)
        for packet in enc.encode():
            out.mux(packet)


def _split_one(row: dict[str, Any], clip_dir: str, cfg: SceneSplitConfig, stem: str) -> dict[str, Any]:
    """Worker: detect, plan and cut one source video -> ``{"rows": [...], "dropped": [...]}``."""
    path = str(row["path"])
    try:
        with fetch_to_local(path) as local:
            index = index_packets(local)
            scenes = detect_scenes(local, cfg.threshold)
            clips, dropped = plan_clips(scenes, index.fps, cfg)
            rows = []
            with tempfile.TemporaryDirectory(prefix="opensora-clips-") as tmp:
                for k, (start, end) in enumerate(clips):
                    name = f"{stem}_scene{k:03d}.mp4"
                    local_clip = os.path.join(tmp, name)
                    cut = cut_clip(local, local_clip, start, end, index, cfg.stream_copy, cfg.crf)
                    rows.append(
                        _clip_row(row, _place(local_clip, clip_dir, name), start, end, index.fps, cut)
                    )
    except Exception as exc:  # one bad source must not stop the run
        return {"rows": [], "dropped": [(path, f"scene split failed: {type(exc).__name__}: {exc}")]}
    return {"rows": rows, "dropped": [(f"{path}[{s}:{e}]", rule) for (s, e), rule in dropped]}


def _clip_stems(paths: list[str]) -> list[str]:
    """Clip name stems: the source's stem, plus ``-{sha1(path)[:8]}`` where several sources share it."""
    stems = [PurePosixPath(p).stem for p in paths]
    repeated = {s for s, n in Counter(stems).items() if n > 1}
    return [
        f"{s}-{hashlib.sha1(p.encode()).hexdigest()[:8]}" if s in repeated else s
        for s, p in zip(stems, paths, strict=True)
    ]


def _place(local_clip: str, clip_dir: str, name: str) -> str:
    if is_uri(clip_dir):
        dest = clip_dir.rstrip("/") + "/" + name
        _storage().upload_file(local_clip, dest)
        return dest
    dest = os.path.join(clip_dir, name)
    shutil.move(local_clip, dest)
    return dest


def _clip_row(row: dict[str, Any], path: str, start: int, end: int, fps: float, cut: str) -> dict[str, Any]:
    h, w = int(row["height"]), int(row["width"])
    text = row.get("text", "")
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    return {
        "path": path,
        "text": text,
        "num_frames": end - start,
        "fps": fps,
        "height": h,
        "width": w,
        "aspect_ratio": h / w,
        "resolution": h * w,
        "text_len": len(text.split()),
        "source_path": str(row["path"]),
        "start_frame": start,
        "end_frame": end,
        "cut": cut,
    }


def split_scenes(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    clip_dir: str | os.PathLike[str],
    config: SceneSplitConfig | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> StageReport:
    """Cut every video of the table ``input`` into scene clips in ``clip_dir``; write the clip table ``output``.

    ``input`` needs ``path, height, width`` (a ``probe`` table); images are passed through unchanged.
    """
    t0 = time.perf_counter()
    cfg = config or SceneSplitConfig()
    src, out, clips = os.fspath(input), os.fspath(output), os.fspath(clip_dir)
    df = read_stage_input(src, ("path", "height", "width"))
    if not is_uri(clips):
        clips = os.path.abspath(clips)
        os.makedirs(clips, exist_ok=True)
    from opensora_core.data.video_io import is_image_path

    records = df.to_dict("records")
    videos = [r for r in records if not is_image_path(str(r["path"]))]
    images = [r for r in records if is_image_path(str(r["path"]))]
    stems = _clip_stems([str(r["path"]) for r in videos])
    items = [(r, clips, cfg, stem) for r, stem in zip(videos, stems, strict=True)]
    results = map_items(_split_one, items, workers, "splitting scenes", "video", progress)
    rows = [r for res in results for r in res["rows"]]
    dropped = [d for res in results for d in res["dropped"]]
    table = (
        pd.DataFrame(rows + images) if rows or images else pd.DataFrame(columns=[*df.columns, *CLIP_COLUMNS])
    )
    cuts = table["cut"].value_counts().to_dict() if "cut" in table else {}
    return write_stage(
        "split-scenes",
        src,
        out,
        table,
        len(df),
        dropped,
        t0,
        overwrite,
        details={"clip_dir": clips, "cuts": cuts, "config": cfg.model_dump()},
    )
