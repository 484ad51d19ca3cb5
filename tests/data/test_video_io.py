"""PyAV I/O: seek-decode returns exactly the frames a full decode has at the same indices."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from opensora_core.data.video_io import (
    VideoDecodeError,
    probe_video,
    read_clip,
    read_frames,
    read_image,
    read_video_full,
    temporal_random_crop_indices,
)
from tests.data.media_factory import make_audio_only, make_image, make_video, ramp_frames


@pytest.mark.parametrize("keyint", [None, 6])
def test_seek_decode_equals_full_decode(tmp_path: Path, keyint: int | None) -> None:
    path = make_video(tmp_path / "v.mp4", num_frames=60, keyint=keyint)
    full, fps = read_video_full(path)
    assert full.shape == (60, 48, 64, 3) and fps == 8.0
    rng = np.random.default_rng(0)
    for _ in range(15):
        idx = np.sort(rng.integers(0, 60, 8))
        np.testing.assert_array_equal(read_frames(path, idx), full[idx])
    unordered = [50, 3, 3, 59, 0]
    np.testing.assert_array_equal(read_frames(path, unordered), full[unordered])
    for seed in range(5):
        clip, clip_fps = read_clip(path, 8, 3, random.Random(seed))
        idx = temporal_random_crop_indices(60, 8, 3, random.Random(seed))
        np.testing.assert_array_equal(clip, full[idx])
        assert clip_fps == 8.0


def test_other_containers_and_rates(tmp_path: Path) -> None:
    import av

    frames = ramp_frames(30)
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
