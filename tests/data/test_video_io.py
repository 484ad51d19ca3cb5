"""PyAV I/O: seek-decode returns exactly the frames a full decode has at the same indices."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from opensora_core.data import video_io
from opensora_core.data.video_io import (
    DECODE_THREADS_ENV,
    VideoDecodeError,
    probe_video,
    read_clip,
    read_frames,
    read_image,
    read_video_full,
    resolve_decode_threads,
    temporal_random_crop_indices,
    write_video,
)
from tests.data.media_factory import make_audio_only, make_image, make_video, ramp_frames


def textured_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Moving ramp + shifting noise texture + moving block: x264 codes it with I, P, reference and non-reference
    B-frames (b-pyramid) and scene-cut keyframes, unlike the smooth ramp (P-frames only)."""
    texture = np.random.default_rng(0).integers(0, 60, (height, width, 1), dtype=np.uint8)
    ramp = np.arange(width, dtype=np.int64)[None, :, None] * 3
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frame = ((ramp + 4 * t) % 200).astype(np.uint8) + np.roll(texture, t, axis=1)
        frames[t] = np.broadcast_to(frame, (height, width, 3))
        y0, x0 = (t * 3) % (height - 12), (t * 5) % (width - 12)
        frames[t, y0 : y0 + 12, x0 : x0 + 12] = 255
    return frames


def make_test_video(path: Path, kind: str) -> Path:
    """60 frames at 8 fps, 64x48: ``ramp`` (P-frames), ``ramp_keyint6`` (short GOPs), ``bframes``."""
    if kind == "bframes":
        return write_video(path, textured_frames(60), fps=8, crf=23)
    return make_video(path, num_frames=60, keyint=6 if kind == "ramp_keyint6" else None)


@pytest.mark.parametrize(
    ("kind", "threads"),
    [
        ("ramp", None),
        ("ramp_keyint6", None),
        ("ramp_keyint6", 1),
        ("bframes", None),
        ("bframes", 1),
        ("bframes", 4),
    ],
)
def test_seek_decode_equals_full_decode(tmp_path: Path, kind: str, threads: int | None) -> None:
    path = make_test_video(tmp_path / "v.mp4", kind)
    full, fps = read_video_full(path)
    assert full.shape == (60, 48, 64, 3) and fps == 8.0
    rng = np.random.default_rng(0)
    for _ in range(15):
        idx = np.sort(rng.integers(0, 60, 8))
        np.testing.assert_array_equal(read_frames(path, idx, decode_threads=threads), full[idx])
    unordered = [50, 3, 3, 59, 0]
    np.testing.assert_array_equal(read_frames(path, unordered, decode_threads=threads), full[unordered])
    for seed in range(5):
        clip, clip_fps = read_clip(path, 8, 3, random.Random(seed), decode_threads=threads)
        idx = temporal_random_crop_indices(60, 8, 3, random.Random(seed))
        np.testing.assert_array_equal(clip, full[idx])
        assert clip_fps == 8.0


@pytest.mark.parametrize("threads", [1, 3])
def test_unrequested_non_reference_frames_are_not_decoded(tmp_path: Path, threads: int) -> None:
    import av

    path = make_test_video(tmp_path / "v.mp4", "bframes")
    full, _ = read_video_full(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        video_io._set_threads(stream, threads)
        tb, rate = Fraction(stream.time_base), Fraction(stream.average_rate)
        need = {10, 40, 59}
        decoded = {
            video_io._frame_index(f.pts, 0, tb, rate): f.to_ndarray(format="rgb24")
            for f in video_io._decode_skipping(container, stream, need, 0, tb, rate)
        }
    assert need <= set(decoded) and len(decoded) < 60  # some frames were dropped undecoded
    for idx, frame in decoded.items():  # every frame that was decoded is bit-exact
        np.testing.assert_array_equal(frame, full[idx])
    with av.open(str(path)) as container:  # once frame 5 is sent the decoder is drained, not fed further
        stream = container.streams.video[0]
        video_io._set_threads(stream, threads)
        frames = list(video_io._decode_skipping(container, stream, {5}, 0, tb, rate))
    indices = [video_io._frame_index(f.pts, 0, tb, rate) for f in frames]
    assert 5 in indices and max(indices) < 12
    np.testing.assert_array_equal(frames[indices.index(5)].to_ndarray(format="rgb24"), full[5])


def test_decode_threads_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.data

    monkeypatch.delenv(DECODE_THREADS_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(video_io, "_available_cpus", lambda: 16)
    assert resolve_decode_threads(None) == 0  # main process: FFmpeg picks one thread per core
    assert resolve_decode_threads(3) == 3
    worker = SimpleNamespace(num_workers=4)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: worker)
    assert resolve_decode_threads(None) == 4  # 16 cores shared by 4 DataLoader workers
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_decode_threads(None) == 2  # ... of each of 2 ranks on this machine
    worker.num_workers = 32
    assert resolve_decode_threads(None) == 1
    worker.num_workers = 1
    assert resolve_decode_threads(None) == 8
    monkeypatch.setattr(video_io, "_available_cpus", lambda: 128)
    assert resolve_decode_threads(None) == 16  # capped like FFmpeg's automatic count
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_decode_threads(None) == 0
    monkeypatch.setenv(DECODE_THREADS_ENV, "2")
    assert resolve_decode_threads(None) == 2 and resolve_decode_threads(1) == 1  # argument beats env
    monkeypatch.setenv(DECODE_THREADS_ENV, "many")
    with pytest.raises(ValueError, match="OPENSORA_DECODE_THREADS='many' is not an integer"):
        resolve_decode_threads(None)
    monkeypatch.setenv(DECODE_THREADS_ENV, "-1")
    with pytest.raises(ValueError, match="OPENSORA_DECODE_THREADS must be an integer >= 0"):
        resolve_decode_threads(None)
    with pytest.raises(ValueError, match="decode_threads must be an integer >= 0"):
        resolve_decode_threads(-2)


def test_header_only_open_keeps_what_the_readers_use(tmp_path: Path) -> None:
    """MP4 opened for reading skips the probing decode, with the same stream fields and packet timestamps."""
    path = make_test_video(tmp_path / "v.mp4", "bframes")
    with video_io._open(path) as probed, video_io._open(path, header_only=True) as header:
        a, b = probed.streams.video[0], header.streams.video[0]
        for name in ("frames", "time_base", "start_time", "average_rate"):
            assert getattr(a, name) == getattr(b, name), name
        assert (a.codec_context.width, a.codec_context.height) == (
            b.codec_context.width,
            b.codec_context.height,
        )
        assert b.codec_context.pix_fmt is None and a.codec_context.pix_fmt == "yuv420p"  # nothing was decoded
        assert [p.pts for p in probed.demux(a)] == [p.pts for p in header.demux(b)]
        assert (
            header.streams.video[0].codec_context.skip_frame == "DEFAULT"
        )  # the reading decoder decodes all


def test_other_containers_and_rates(tmp_path: Path) -> None:
    import av

    frames = textured_frames(30)  # B-frames too
    path = tmp_path / "v.mkv"  # mkv: 1/1000 time base, no frame count in the header
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"x264-params": "keyint=5"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    full, _ = read_video_full(path)
    assert probe_video(path).num_frames == 30
    np.testing.assert_array_equal(read_frames(path, [7, 21, 29]), full[[7, 21, 29]])
    np.testing.assert_array_equal(read_frames(path, [7, 21, 29], decode_threads=1), full[[7, 21, 29]])


def test_decoded_frames_are_close_to_the_source(tmp_path: Path) -> None:
    frames = ramp_frames(10)
    path = make_video(tmp_path / "v.mp4", num_frames=10, crf=0)
    got = read_frames(path, [4])[0].astype(int)
    assert np.abs(got - frames[4]).mean() < 4  # yuv420p round trip only


def test_temporal_crop_follows_reference() -> None:
    idx = temporal_random_crop_indices(100, 16, 3, random.Random(0))
    begin = random.Random(0).randint(0, 100 - 48 - 1)
    np.testing.assert_array_equal(idx, np.linspace(begin, begin + 47, 16, dtype=int))
    assert list(temporal_random_crop_indices(16, 16, 3, random.Random(1))) == list(range(16))
    with pytest.raises(VideoDecodeError, match="fewer than the 16"):
        temporal_random_crop_indices(10, 16, 1, random.Random(0))


def test_errors_name_the_file(tmp_path: Path) -> None:
    path = make_video(tmp_path / "short.mp4", num_frames=5)
    with pytest.raises(VideoDecodeError, match="short.mp4 ended before frame 9"):
        read_frames(path, [2, 9])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        read_frames(junk, [0])
    audio = make_audio_only(tmp_path / "a.mp4")
    with pytest.raises(VideoDecodeError, match="no video stream"):
        probe_video(audio)
    with pytest.raises(VideoDecodeError, match="cannot read image"):
        read_image(junk)
    assert read_image(make_image(tmp_path / "i.png")).shape == (40, 60, 3)
