"""Small media files for the data tests (videos via PyAV, images via Pillow, broken files of every kind)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from opensora_core.data.video_io import write_video


def ramp_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames that differ from each other (moving ramp + frame-coded corner) so indices are checkable."""
    base = np.tile(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    frames = np.stack([np.roll(base, 3 * i, axis=1) for i in range(num_frames)])
    frames[:, :8, :8] = ((np.arange(num_frames) * 7) % 256)[:, None, None, None]
    return frames


def make_video(
    path: Path, num_frames: int = 24, height: int = 48, width: int = 64, fps: int = 8, **kw
) -> Path:
    """A small H.264 mp4."""
    return write_video(path, ramp_frames(num_frames, height, width), fps=fps, **kw)


def make_faststart_video(path: Path, num_frames: int = 24, size: int = 32) -> Path:
    """mp4 with the index (moov) before the data, so a cut file still opens."""
    import av

    frames = np.random.default_rng(0).integers(0, 255, (num_frames, size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = size, size, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An AAC-only mp4 (no video stream)."""
    import av

    rate = 16000
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = "mono"
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                samples[:, start : start + 1024].copy(), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def make_image(path: Path, height: int = 40, width: int = 60) -> Path:
    """A PNG/JPEG image (format from the extension)."""
    from PIL import Image

    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None]
    rgb[..., 2] = 200
    Image.fromarray(rgb).save(path)
    return path


def truncate(src: Path, dest: Path, fraction: float = 0.6) -> Path:
    """Copy the first ``fraction`` of ``src`` to ``dest``."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest
