"""Video and image I/O with PyAV: probing, seek-and-decode of a frame window, writing H.264 mp4.

``read_frames`` / ``read_clip`` seek to the keyframe before the first requested frame and decode only up to the
last one, converting just the requested frames to RGB (with one swscale context per call). MP4/MOV files are
opened from their header alone (no probing decode, see :func:`_open`). Non-reference frames (frames no other frame predicts
from, e.g. most B-frames) that are not requested are dropped by the decoder without being decoded
(``skip_frame="NONREF"`` set per packet); every frame that is requested or referenced is decoded normally, so
the returned pixels are identical to a full decode. Decoding uses FFmpeg frame+slice threading; see
:func:`resolve_decode_threads` for the thread count (``decode_threads`` argument or ``OPENSORA_DECODE_THREADS``).

``read_video_full`` decodes everything with PyAV's default codec settings and converts every frame to RGB (what
``torchvision.io.read_video`` does in the reference) and is kept as the baseline for tests and benchmarks.

Frame index ``i`` is the i-th frame in presentation order; with a timestamped stream it is recovered from the
frame's pts as ``round((pts - start_time) * time_base * average_rate)``. Streams without usable timestamps or
frame rate fall back to sequential decoding from the start (no frame skipping there).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

DECODE_THREADS_ENV = "OPENSORA_DECODE_THREADS"
MAX_AUTO_DECODE_THREADS = 16  # FFmpeg's own cap for automatic thread counts
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpeg", ".mpg", ".flv", ".wmv", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_VIDEO_FPS = 24.0  # reference default when a file reports no rate
IMAGE_FPS = 120.0  # reference "fps" of an image sample


class VideoDecodeError(RuntimeError):
    """A file could not be opened or decoded (names the file and the cause)."""


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the extension is an image extension (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True when the extension is a video extension (case-insensitive)."""
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


Source = str | os.PathLike[str] | BinaryIO


HEADER_INDEXED_EXTENSIONS = (".mp4", ".mov", ".m4v")  # ISO-BMFF: sizes, rate, frame count, timestamps in moov


def _open(source: Source, header_only: bool = False) -> Any:
    """Open a container. ``header_only`` (used by the frame readers) lets the probing decoders skip every frame
    (``skip_frame=all``) for ISO-BMFF files: ``avformat_find_stream_info`` otherwise decodes the first keyframe to
    learn the pixel format and the H.264 reordering delay, ~20 ms of CPU for a 720p file (as much as decoding
    six more frames), and the frame readers need neither: the header holds every field they use (size, rate,
    frame count, start time, each packet's timestamps), and the decoder that reads is opened afresh. Other
    containers are probed as usual, since their timestamps may depend on the guessed delay."""
    import av

    options = {}
    if header_only and _name(source).lower().endswith(HEADER_INDEXED_EXTENSIONS):
        options["skip_frame"] = "all"  # probing decoders only; the decoder used for reading is opened anew
    try:
        return av.open(
            source if not isinstance(source, os.PathLike) else os.fspath(source), mode="r", options=options
        )
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"cannot open {_name(source)}: {exc}") from exc


def _name(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", None) or source)


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata of a video file."""

    num_frames: int
    fps: float
    height: int
    width: int
    codec: str


def _rate(stream: Any) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def probe_video(source: Source, count_packets: bool = False) -> VideoInfo:
    """Stream metadata without decoding. ``count_packets`` demuxes (no decode) to count frames exactly.

    Raises :class:`VideoDecodeError` when the file has no video stream or cannot be read.
    """
    with _open(source) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            raise VideoDecodeError(f"{_name(source)} has no video stream (streams: {kinds or 'none'})")
        stream = container.streams.video[0]
        rate = _rate(stream)
        num_frames = int(stream.frames or 0)
        if count_packets or num_frames <= 0:
            num_frames = count_video_packets(container, stream)
        return VideoInfo(
            num_frames=num_frames,
            fps=float(rate) if rate else DEFAULT_VIDEO_FPS,
            height=int(stream.codec_context.height),
            width=int(stream.codec_context.width),
            codec=stream.codec_context.name,
        )


def count_video_packets(container: Any, stream: Any) -> int:
    """Number of non-empty packets of ``stream`` (demux only; equals the frame count for video)."""
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
    return count


def _frame_index(pts: int, start: int, time_base: Fraction, rate: Fraction) -> int:
    return round((pts - start) * time_base * rate)


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _dataloader_num_workers() -> int:
    """``num_workers`` of the torch DataLoader this process is a worker of; 0 outside DataLoader workers."""
    torch = sys.modules.get("torch")  # a DataLoader worker has torch imported already; never import it here
    if torch is None:
        return 0
    info = torch.utils.data.get_worker_info()
    return int(info.num_workers) if info is not None else 0


def _local_world_size() -> int:
    """Processes of this job on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 when unset or invalid)."""
    try:
        return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    except ValueError:
        return 1


def resolve_decode_threads(decode_threads: int | None = None) -> int:
    """Decoder threads for :func:`read_frames` / :func:`read_clip`; ``0`` lets FFmpeg pick (cores + 1, <= 16).

    Order: the ``decode_threads`` argument, else the ``OPENSORA_DECODE_THREADS`` environment variable, else
    automatic. Automatic divides the CPUs among the decoding processes of this machine: ``share = num_workers
    of the DataLoader this process is a worker of (1 outside workers) * LOCAL_WORLD_SIZE (set by torchrun; 1
    when unset)``; ``share == 1`` gives ``0`` (FFmpeg's choice), otherwise ``min(16, max(1, cpus // share))``
    so that parallel workers and ranks do not oversubscribe the cores. ``1`` turns decoder threading off.
    Raises ``ValueError`` for a negative or non-integer value.
    """
    if decode_threads is None:
        env = os.environ.get(DECODE_THREADS_ENV, "").strip()
        if env:
            try:
                decode_threads = int(env)
            except ValueError:
                raise ValueError(
                    f"{DECODE_THREADS_ENV}={env!r} is not an integer; set it to 0 (automatic), "
                    "1 (no decoder threading) or a thread count"
                ) from None
            source = DECODE_THREADS_ENV
        else:
            share = max(1, _dataloader_num_workers()) * max(1, _local_world_size())
            return 0 if share == 1 else min(MAX_AUTO_DECODE_THREADS, max(1, _available_cpus() // share))
    else:
        source = "decode_threads"
    if isinstance(decode_threads, bool) or not isinstance(decode_threads, int) or decode_threads < 0:
        raise ValueError(f"{source} must be an integer >= 0 (0 = automatic), got {decode_threads!r}")
    return decode_threads


def _set_threads(stream: Any, decode_threads: int | None) -> None:
    """Configure decoder threading before the codec opens (frame+slice threading unless 1 thread)."""
    threads = resolve_decode_threads(decode_threads)
    codec_context = stream.codec_context
    codec_context.thread_count = threads
    codec_context.thread_type = "SLICE" if threads == 1 else "AUTO"


def read_frames(
    source: Source, indices: Sequence[int] | np.ndarray, decode_threads: int | None = None
) -> np.ndarray:
    """Decode only the frames at ``indices`` (any order, repeats allowed) -> uint8 ``[N, H, W, 3]`` RGB.

    Seeks to the keyframe at or before ``min(indices)`` and stops after ``max(indices)``; unrequested
    non-reference frames are skipped. ``decode_threads``: see :func:`resolve_decode_threads`. Raises
    :class:`VideoDecodeError` when the file ends before a requested index or cannot be decoded.
    """
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    if wanted.size == 0:
        raise ValueError("indices is empty")
    if wanted.min() < 0:
        raise ValueError(f"frame indices must be >= 0, got {int(wanted.min())}")
    needed = sorted(set(wanted.tolist()))
    with _open(source, header_only=True) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{_name(source)} has no video stream")
        stream = container.streams.video[0]
        _set_threads(stream, decode_threads)
        got = _decode_window(container, stream, needed, source)
    return np.stack([got[i] for i in wanted.tolist()])


def _decode_window(container: Any, stream: Any, needed: list[int], source: Source) -> dict[int, np.ndarray]:
    import av
    from av.video.reformatter import VideoReformatter

    # one reformatter for the call: ``frame.to_ndarray(format=...)`` builds a new swscale context per frame (about
    # 1 ms at 720p, twice the conversion itself); the shared one reuses it, with bit-identical output
    reformatter = VideoReformatter()

    def rgb(frame: Any) -> np.ndarray:
        return reformatter.reformat(frame, format="rgb24").to_ndarray()

    rate = _rate(stream)
    time_base = Fraction(stream.time_base) if stream.time_base else None
    start = int(stream.start_time or 0)
    first, last = needed[0], needed[-1]
    need = set(needed)
    out: dict[int, np.ndarray] = {}
    try:
        if rate and time_base:
            if first > 0:
                target = start + int(Fraction(first) / rate / time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            landed = None
            for frame in _decode_skipping(container, stream, need, start, time_base, rate):
                if frame.pts is None:
                    landed = None
                    break
                idx = _frame_index(frame.pts, start, time_base, rate)
                if landed is None:
                    landed = idx
                    if idx > first:  # seek overshot (inexact index): decode from the start instead
                        break
                if idx in need:
                    out[idx] = rgb(frame)
                if idx >= last:
                    break
            if landed is not None and landed <= first and len(out) == len(need):
                return out
            container.seek(0, stream=stream, backward=True, any_frame=False)
            stream.codec_context.skip_frame = "DEFAULT"
            out.clear()
        for idx, frame in enumerate(container.decode(stream)):
            if idx in need:
                out[idx] = rgb(frame)
            if idx >= last:
                break
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoDecodeError(f"decoding {_name(source)} failed: {exc}") from exc
    if len(out) != len(need):
        missing = sorted(need - set(out))
        raise VideoDecodeError(
            f"{_name(source)} ended before frame {missing[0]} ({len(out)}/{len(need)} requested frames decoded)"
        )
    return out


def _decode_skipping(
    container: Any, stream: Any, need: set[int], start: int, time_base: Fraction, rate: Fraction
) -> Iterator[Any]:
    """Decode ``stream`` from the current position, letting the decoder drop unrequested non-reference frames.

    ``skip_frame`` is chosen per packet from the packet's presentation index: ``"NONREF"`` when the frame is not
    in ``need`` (the decoder then discards it only if no other frame references it), ``"DEFAULT"`` otherwise.
    Reference frames are always decoded, so every frame that is output has the same pixels as in a full decode.
    With frame threading FFmpeg copies ``skip_frame`` into the worker thread when the packet is submitted.

    Once the packets of all ``need`` frames have been sent, the decoder is drained instead of being fed more
    packets: a frame's references precede it in decode order, so the requested frames still held back for
    reordering (or in flight in frame threads) come out without decoding anything after them.
    """
    codec_context = stream.codec_context
    current = None
    pending = set(need)
    for packet in container.demux(stream):
        pts = packet.pts
        idx = _frame_index(pts, start, time_base, rate) if pts is not None and packet.size else None
        mode = "NONREF" if idx is not None and idx not in need else "DEFAULT"
        if mode != current:
            codec_context.skip_frame = mode
            current = mode
        yield from codec_context.decode(packet)
        pending.discard(idx)
        if not pending:
            yield from codec_context.decode(None)  # drain
            return


def read_clip(
    source: Source,
    num_frames: int,
    frame_interval: int,
    rng: Any,
    total_frames: int | None = None,
    decode_threads: int | None = None,
) -> tuple[np.ndarray, float]:
    """Temporal random crop of ``num_frames`` frames spaced ~``frame_interval`` apart -> (``[T,H,W,3]``, fps).

    Opens the file once: reads the frame count from the stream header (or ``total_frames`` when given and the
    header has none), picks the window with :func:`temporal_random_crop_indices` and seek-decodes it like
    :func:`read_frames`. ``decode_threads``: see :func:`resolve_decode_threads`.
    """
    with _open(source, header_only=True) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{_name(source)} has no video stream")
        stream = container.streams.video[0]
        _set_threads(stream, decode_threads)
        rate = _rate(stream)
        total = int(stream.frames or 0) or int(total_frames or 0)
        if total <= 0:
            total = count_video_packets(container, stream)
            container.seek(0, stream=stream, backward=True, any_frame=False)
        indices = temporal_random_crop_indices(total, num_frames, frame_interval, rng)
        needed = sorted(set(indices.tolist()))
        got = _decode_window(container, stream, needed, source)
    frames = np.stack([got[i] for i in indices.tolist()])
    return frames, float(rate) if rate else DEFAULT_VIDEO_FPS


def temporal_random_crop_indices(
    total_frames: int, num_frames: int, frame_interval: int, rng: Any
) -> np.ndarray:
    """Reference ``TemporalRandomCrop(num_frames * frame_interval)`` + ``np.linspace`` frame indices.

    ``begin = rng.randint(0, max(0, total - size - 1))`` (inclusive), ``end = min(begin + size, total)``,
    indices ``np.linspace(begin, end - 1, num_frames, dtype=int)``. ``rng`` is a ``random.Random``-like object.
    Raises :class:`VideoDecodeError` when the video has fewer than ``num_frames`` frames.
    """
    size = num_frames * frame_interval
    begin = rng.randint(0, max(0, total_frames - size - 1))
    end = min(begin + size, total_frames)
    if end - begin < num_frames:
        raise VideoDecodeError(f"video has {total_frames} frames, fewer than the {num_frames} needed")
    return np.linspace(begin, end - 1, num_frames, dtype=int)


def read_video_full(source: Source) -> tuple[np.ndarray, float]:
    """Decode every frame to RGB -> (uint8 ``[T, H, W, 3]``, fps). Baseline of the reference loader.

    Like ``torchvision.io.read_video`` (pyav backend): PyAV's default codec settings (slice threading only,
    which is one thread for single-slice H.264), every frame converted to RGB.
    """
    import av

    with _open(source) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{_name(source)} has no video stream")
        stream = container.streams.video[0]
        rate = _rate(stream)
        try:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoDecodeError(f"decoding {_name(source)} failed: {exc}") from exc
    if not frames:
        raise VideoDecodeError(f"{_name(source)} has no decodable frames")
    return np.stack(frames), float(rate) if rate else DEFAULT_VIDEO_FPS


def read_image(source: Source) -> np.ndarray:
    """Load an image as uint8 ``[H, W, 3]`` RGB (Pillow)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            return np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise VideoDecodeError(f"cannot read image {_name(source)}: {exc}") from exc


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float = 8,
    crf: int = 18,
    keyint: int | None = None,
    preset: str = "medium",
    codec: str = "libx264",
) -> Path:
    """Write uint8 ``[T, H, W, 3]`` RGB frames as H.264 (yuv420p) mp4. Even H and W are required.

    ``keyint`` sets the x264 keyframe interval (default: x264's 250). The output bytes are deterministic:
    encoding is single-threaded, and x264's macroblock-tree rate control is off, because its lookahead reads
    uninitialised stack memory at some frame sizes (valgrind: 8, 40, 48 and 80 px squares, 32x16), which made
    the bytes of a clip vary between runs.
    """
    import av

    path = Path(path)
    frames_iter = iter(frames)
    first = next(frames_iter, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even height and width, got {height}x{width}")
    options = {"crf": str(crf), "preset": preset, "threads": "1"}
    x264_params = ["mbtree=0"] + ([f"keyint={keyint}"] if keyint is not None else [])
    if codec == "libx264":
        options["x264-params"] = ":".join(x264_params)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options
        for frame in _chain(first, frames_iter):
            video_frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest
