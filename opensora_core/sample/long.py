"""Long and conditional sampling (Open-Sora 1.1 ``inference-long``): prompt syntax, references, masks, loops.

Prompt syntax (per prompt, all optional):

* a JSON suffix ``text{"reference_path": "a.png;b.mp4", "mask_strategy": "0;0,1,0,-4,4"}`` overrides the
  prompt's ``reference_path`` / ``mask_strategy`` entries (:func:`split_json_suffix`);
* per-loop texts ``|0|text a|2|text b``: loops 0-1 use "text a", loops 2.. use "text b"
  (:func:`parse_loop_prompt`).

Mask strategy (:func:`parse_mask_strategy`): ``;``-separated tuples
``loop_id,ref_id,ref_start,target_start,length,edit_ratio``; shorter tuples are padded with the defaults
``ref_id=0, ref_start=0, target_start=0, length=1, edit_ratio=0`` (so ``"0"`` = "in loop 0, put frame 0 of
reference 0 at frame 0", i.e. image-to-video). Negative ``ref_start`` / ``target_start`` count from the end of
the reference / the generated clip. Indices are latent frames, which equal pixel frames for the frame-wise
VAEs of Open-Sora 1.x (temporal stride 1). In loop ``i`` of the tuple, ``length`` latent frames of reference
``ref_id`` starting at ``ref_start`` replace the initial noise at ``target_start``, and those frames get the
scheduler mask value ``edit_ratio`` (0 = keep the reference, 1 = regenerate; everything else has mask 1).

Loops: each loop ``i > 0`` also conditions on its own previous clip, as the reference does: the decoded clip
is re-encoded and its last ``condition_frame_length`` (cfl) frames are copied to the first cfl frames of the
new clip with edit ratio ``condition_frame_edit`` (default 0; an implicit tuple ``i,<prev>,-cfl,0,cfl,edit``
applied after the user's tuples). Open-Sora 1.2's ``align`` snaps every tuple's starts (the implicit one too)
to multiples of ``align`` latent frames (:func:`snap_to_multiple`).

Open-Sora 1.2 conditioning text: ``aes`` / ``flow`` / ``camera_motion`` append "aesthetic score: X." etc. to
every loop's caption (:func:`append_scores`), before encoding.
``condition_frame_length`` counts latent frames: with Open-Sora 1.2's VAE (17 frames -> 5 latent frames) it
must be whole chunks (5 = the last 17 frames), as the reference asserts; the VAEs of 1.0/1.1 do not compress
time, so there it is also the number of frames. The final video is clip 0 followed by every later clip
without the pixel frames of its first cfl latent frames (``carried``, 17 for cfl=5 in 1.2):
``loop * (num_frames - carried) + carried`` frames (:func:`stitch_loops`).

Parsing and validation here need no torch, so bad input fails before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opensora_core.io import storage
from opensora_core.models.vae_registry import carried_frames

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "JSON_KEYS",
    "MaskTuple",
    "PromptSpec",
    "SampleInputError",
    "append_scores",
    "apply_mask_tuples",
    "build_prompt_specs",
    "carried_loop_frames",
    "check_reference_files",
    "load_reference_video",
    "parse_loop_prompt",
    "parse_mask_strategy",
    "reference_frame_count",
    "snap_to_multiple",
    "split_json_suffix",
    "stitch_loops",
    "total_frames",
]

# Defaults that pad short tuples: ref_id, ref_start, target_start, length, edit_ratio.
SHORT_FORM_DEFAULTS: tuple[int, int, int, int, float] = (0, 0, 0, 1, 0.0)
TUPLE_FIELDS = ("loop_id", "ref_id", "ref_start", "target_start", "length", "edit_ratio")
JSON_KEYS = ("reference_path", "mask_strategy")
_URL_SCHEMES = ("http://", "https://")


class SampleInputError(ValueError):
    """Bad sampling input (prompt, reference, mask strategy, checkpoint); the message names the value."""


# ------------------------------------------------------------------------------------------ mask strategy
@dataclass(frozen=True)
class MaskTuple:
    """One conditioning instruction: in loop ``loop_id`` copy ``length`` frames of reference ``ref_id``."""

    loop_id: int
    ref_id: int
    ref_start: int
    target_start: int
    length: int
    edit_ratio: float
    text: str = ""  # the tuple as written, for error messages

    def resolve(self, ref_frames: int, target_frames: int, align: int | None = None) -> tuple[int, int, int]:
        """Absolute ``(ref_start, target_start, length)`` for a reference of ``ref_frames`` frames copied into
        a clip of ``target_frames`` frames; with ``align`` (Open-Sora 1.2) both starts snap to a multiple of
        it (:func:`snap_to_multiple`). Raises ValueError when the frames do not exist."""
        rs = self.ref_start + ref_frames if self.ref_start < 0 else self.ref_start
        ts = self.target_start + target_frames if self.target_start < 0 else self.target_start
        if align is not None:
            rs, ts = snap_to_multiple(rs, align, ref_frames), snap_to_multiple(ts, align, target_frames)
        if not 0 <= rs < ref_frames:
            raise ValueError(
                f"ref_start {self.ref_start} is outside the reference's {ref_frames} frame(s) "
                f"(valid: {-ref_frames}..{ref_frames - 1})"
            )
        if not 0 <= ts < target_frames:
            raise ValueError(
                f"target_start {self.target_start} is outside the clip's {target_frames} frame(s) "
                f"(valid: {-target_frames}..{target_frames - 1})"
            )
        if rs + self.length > ref_frames:
            raise ValueError(
                f"length {self.length} from reference frame {rs} needs {rs + self.length} frames but the "
                f"reference has {ref_frames}"
            )
        if ts + self.length > target_frames:
            raise ValueError(
                f"length {self.length} at clip frame {ts} runs past the clip's {target_frames} frames"
            )
        return rs, ts, self.length


def snap_to_multiple(value: int, align: int, limit: int) -> int:
    """Open-Sora 1.2's ``align``: ``value`` rounded down to a multiple of ``align``, or up when the remainder
    is more than half of it and the next multiple stays below the last full multiple under ``limit``."""
    steps = value // align
    if value % align > align / 2 and steps < limit // align - 1:
        steps += 1
    return steps * align


def append_scores(
    text: str, aes: float | None = None, flow: float | None = None, camera_motion: str | None = None
) -> str:
    """Open-Sora 1.2's conditioning suffixes: ``"... aesthetic score: 6.5. motion score: 4.0. camera motion:
    pan right."`` (scores with one decimal); a kind the text already names is not added again."""
    if aes is not None and "aesthetic score:" not in text:
        text = f"{text} aesthetic score: {aes:.1f}."
    if flow is not None and "motion score:" not in text:
        text = f"{text} motion score: {flow:.1f}."
    if camera_motion is not None and "camera motion:" not in text:
        text = f"{text} camera motion: {camera_motion}."
    return text


def parse_mask_strategy(text: str | None) -> list[MaskTuple]:
    """Parse ``"a,b,c,d,e,f;..."`` into :class:`MaskTuple` s (short forms padded; empty parts skipped).

    Raises SampleInputError naming the offending tuple: not 1-6 numbers, non-integer ids/starts/length,
    negative ``loop_id``/``ref_id``, ``length < 1`` or ``edit_ratio`` outside [0, 1].
    """
    if text is None:
        return []
    tuples = []
    for part in (p.strip() for p in str(text).split(";")):
        if not part:
            continue
        nums = [n.strip() for n in part.split(",")]
        if not 1 <= len(nums) <= 6 or any(not n for n in nums):
            raise SampleInputError(
                f"mask strategy tuple {part!r} must have 1 to 6 comma-separated numbers "
                f"({', '.join(TUPLE_FIELDS)})"
            )
        values: list[Any] = [0, *SHORT_FORM_DEFAULTS]
        for i, n in enumerate(nums):
            name = TUPLE_FIELDS[i]
            try:
                values[i] = float(n) if name == "edit_ratio" else int(n)
            except ValueError:
                kind = "a number in [0, 1]" if name == "edit_ratio" else "an integer"
                raise SampleInputError(
                    f"mask strategy tuple {part!r}: {name} must be {kind}, got {n!r}"
                ) from None
        loop_id, ref_id, ref_start, target_start, length, ratio = values
        if loop_id < 0 or ref_id < 0:
            raise SampleInputError(
                f"mask strategy tuple {part!r}: loop_id and ref_id must be >= 0, got {loop_id} and {ref_id}"
            )
        if length < 1:
            raise SampleInputError(f"mask strategy tuple {part!r}: length must be >= 1, got {length}")
        if not 0.0 <= ratio <= 1.0:
            raise SampleInputError(f"mask strategy tuple {part!r}: edit_ratio must be in [0, 1], got {ratio}")
        tuples.append(MaskTuple(loop_id, ref_id, ref_start, target_start, length, float(ratio), part))
    return tuples


# ------------------------------------------------------------------------------------------------ prompts
def split_json_suffix(prompt: str) -> tuple[str, dict[str, Any]]:
    """Split ``'text{"reference_path": ..., "mask_strategy": ...}'`` into (text, options).

    A prompt that does not end in ``}`` has no suffix. Raises SampleInputError for a suffix that is not a
    JSON object or has keys other than reference_path / mask_strategy.
    """
    stripped = prompt.rstrip()
    if not stripped.endswith("}"):
        return prompt.strip(), {}
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", stripped):
        start = match.start()
        try:
            obj, end = decoder.raw_decode(stripped, start)
        except json.JSONDecodeError:
            continue
        if end == len(stripped) and isinstance(obj, dict):
            unknown = sorted(set(obj) - set(JSON_KEYS))
            if unknown:
                raise SampleInputError(
                    f"prompt {prompt[:60]!r}: unknown key(s) {unknown} in its JSON suffix; "
                    f"allowed: {', '.join(JSON_KEYS)}"
                )
            for key, value in obj.items():
                if value is not None and not isinstance(value, str):
                    raise SampleInputError(
                        f"prompt {prompt[:60]!r}: JSON {key} must be a string, got {value!r}"
                    )
            return stripped[:start].strip(), obj
    raise SampleInputError(
        f"prompt {prompt[:60]!r}... ends with '}}' but its suffix is not a valid JSON object like "
        '{"reference_path": "a.png", "mask_strategy": "0"}'
    )


def parse_loop_prompt(text: str, loop: int) -> list[str]:
    """Texts for each of ``loop`` loops: ``"|0|a|2|b"`` (loop ids ascending from 0) or a plain prompt.

    Raises SampleInputError for a malformed or out-of-range per-loop prompt.
    """
    if not text.startswith("|"):
        return [text] * loop
    parts = text.split("|")[1:]
    if len(parts) % 2:
        raise SampleInputError(
            f"per-loop prompt {text!r} must alternate loop ids and texts: |0|text a|2|text b"
        )
    starts, texts = [], []
    for i in range(0, len(parts), 2):
        raw_id, chunk = parts[i].strip(), parts[i + 1].strip()
        try:
            loop_id = int(raw_id)
        except ValueError:
            raise SampleInputError(
                f"per-loop prompt {text!r}: {raw_id!r} is not a loop id (|0|text a|2|text b)"
            ) from None
        if not chunk:
            raise SampleInputError(f"per-loop prompt {text!r}: loop {loop_id} has an empty text")
        starts.append(loop_id)
        texts.append(chunk)
    if starts[0] != 0:
        raise SampleInputError(f"per-loop prompt {text!r} must start with loop 0 (|0|...), got {starts[0]}")
    for a, b in zip(starts, starts[1:], strict=False):
        if b <= a:
            raise SampleInputError(f"per-loop prompt {text!r}: loop ids must increase, got {a} then {b}")
    if starts[-1] >= loop:
        raise SampleInputError(
            f"per-loop prompt {text!r}: loop id {starts[-1]} is never reached with loop={loop}"
        )
    out: list[str] = []
    for i, (start, chunk) in enumerate(zip(starts, texts, strict=True)):
        end = starts[i + 1] if i + 1 < len(starts) else loop
        out.extend([chunk] * (end - start))
    return out


@dataclass
class PromptSpec:
    """Everything sampling needs to know about one prompt (after JSON suffix and per-loop parsing)."""

    index: int  # position in the full prompt list (names files and seeds)
    raw: str  # as given
    text: str  # without the JSON suffix (file names with prompt_as_path)
    loop_texts: list[str]  # one caption per loop
    reference_paths: list[str] = field(default_factory=list)
    mask_tuples: list[MaskTuple] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``prompt N`` with a short excerpt, for messages."""
        excerpt = self.text if len(self.text) <= 50 else self.text[:47] + "..."
        return f"prompt {self.index} ({excerpt!r})"


def _per_prompt(values: Sequence[str | None] | None, name: str, n_prompts: int) -> list[str | None]:
    if values is None:
        return [None] * n_prompts
    if len(values) != n_prompts:
        raise SampleInputError(
            f"{name} has {len(values)} entries but there are {n_prompts} prompts; give one per prompt "
            f"('None' for prompts without one)"
        )
    return list(values)


def build_prompt_specs(
    prompts: Sequence[str],
    reference_path: Sequence[str | None] | None,
    mask_strategy: Sequence[str | None] | None,
    loop: int,
    indices: Sequence[int] | None = None,
) -> list[PromptSpec]:
    """Parse every prompt (JSON suffix, per-loop texts) and its reference / mask-strategy entries.

    ``reference_path`` / ``mask_strategy`` have one entry per prompt (or are None). ``indices`` are the
    prompts' positions in the full list (default 0..n-1). Checks ``loop_id < loop`` and ``ref_id`` against
    the prompt's references; raises SampleInputError naming the prompt and the value.
    """
    n = len(prompts)
    refs = _per_prompt(reference_path, "reference_path", n)
    strategies = _per_prompt(mask_strategy, "mask_strategy", n)
    indices = list(range(n)) if indices is None else list(indices)
    specs = []
    for i, raw in enumerate(prompts):
        index = indices[i]
        text, options = split_json_suffix(raw)
        ref_text = options.get("reference_path", refs[i])
        strategy_text = options.get("mask_strategy", strategies[i])
        if not text:
            raise SampleInputError(f"prompt {index} is empty (raw: {raw!r})")
        spec = PromptSpec(index=index, raw=raw, text=text, loop_texts=parse_loop_prompt(text, loop))
        spec.reference_paths = [p.strip() for p in (ref_text or "").split(";") if p.strip()]
        try:
            spec.mask_tuples = parse_mask_strategy(strategy_text)
        except SampleInputError as exc:
            raise SampleInputError(f"{spec.label}: {exc}") from None
        for tup in spec.mask_tuples:
            if tup.loop_id >= loop:
                raise SampleInputError(
                    f"{spec.label}: mask strategy tuple {tup.text!r} has loop_id {tup.loop_id}, "
                    f"never reached with loop={loop}"
                )
            if tup.ref_id >= len(spec.reference_paths):
                raise SampleInputError(
                    f"{spec.label}: mask strategy tuple {tup.text!r} uses reference index {tup.ref_id} but the "
                    f"prompt has {len(spec.reference_paths)} reference(s) {spec.reference_paths}"
                )
        if spec.reference_paths and not spec.mask_tuples:
            logger.warning("%s has references but no mask strategy; they are not used", spec.label)
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------- references
def reference_frame_count(path: str) -> int:
    """Frames of a local reference: 1 for an image, the (demuxed) frame count for a video."""
    from opensora_core.data.video_io import is_image_path, probe_video

    local = str(storage.local_path(path))
    if is_image_path(local):
        return 1
    return probe_video(local, count_packets=True).num_frames


def check_reference_files(specs: Sequence[PromptSpec], num_frames: int, align: int | None = None) -> None:
    """Fail early: every local reference exists and is readable, and every mask tuple fits its reference
    (frame ranges, negative starts resolved) and a clip of ``num_frames`` frames. Remote references
    (``s3://``, ``http(s)://``) are checked when they are loaded."""
    from opensora_core.data.video_io import VideoDecodeError

    counts: dict[str, int] = {}
    for spec in specs:
        for path in spec.reference_paths:
            if storage.is_remote(path) or path in counts:
                continue
            try:
                local = storage.local_path(path)
            except storage.InvalidURIError as exc:
                raise SampleInputError(f"{spec.label}: reference {path!r}: {exc}") from None
            if not local.is_file():
                raise SampleInputError(
                    f"{spec.label}: reference file {path!r} does not exist"
                    + (" (it is a folder)" if local.is_dir() else "")
                )
            try:
                counts[path] = reference_frame_count(path)
            except VideoDecodeError as exc:
                raise SampleInputError(f"{spec.label}: reference {path!r} cannot be read: {exc}") from None
        for tup in spec.mask_tuples:
            path = spec.reference_paths[tup.ref_id]
            if path not in counts:
                continue
            try:
                tup.resolve(counts[path], num_frames, align)
            except ValueError as exc:
                raise SampleInputError(
                    f"{spec.label}: mask strategy tuple {tup.text!r} on reference {tup.ref_id} ({path}): {exc}"
                ) from None


def _download_url(url: str, cache_dir: Path) -> Path:
    """Download ``url`` once into ``cache_dir`` (name = hash + basename) and return the local file."""
    name = hashlib.sha1(url.encode()).hexdigest()[:12] + "-" + (url.rstrip("/").split("/")[-1] or "ref")
    target = cache_dir / name.split("?")[0]
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SampleInputError(f"reference {url!r} could not be downloaded: {exc}") from None
    tmp.replace(target)
    return target


def load_reference_video(path: str, image_size: tuple[int, int], cache_dir: Path) -> torch.Tensor:
    """Read a reference image or video -> float ``[3, T, H, W]`` in [-1, 1], ``resize_crop`` to image_size.

    Local paths, ``file://``, ``s3://`` (storage layer) and ``http(s)://`` (downloaded into ``cache_dir``)
    are accepted. Raises SampleInputError when the file is missing or cannot be decoded.
    """
    from opensora_core.data.prepare import fetch_to_local
    from opensora_core.data.transforms import get_transform
    from opensora_core.data.video_io import VideoDecodeError, is_image_path, read_image, read_video_full

    transform = get_transform("resize_crop", image_size)
    source = str(_download_url(path, cache_dir)) if path.startswith(_URL_SCHEMES) else path
    try:
        with fetch_to_local(source) as fetched:
            local = str(storage.local_path(fetched))
            if not os.path.isfile(local):
                raise SampleInputError(f"reference file {path!r} does not exist")
            if is_image_path(local):
                frames = read_image(local)[None]  # [1, H, W, 3]
            else:
                frames, _ = read_video_full(local)  # [T, H, W, 3]
    except VideoDecodeError as exc:
        raise SampleInputError(f"reference {path!r} cannot be decoded: {exc}") from None
    except FileNotFoundError as exc:
        raise SampleInputError(f"reference {path!r} does not exist: {exc}") from None
    return transform(frames)  # [3, T, H, W]


# ------------------------------------------------------------------------------------ masks and stitching
def apply_mask_tuples(
    z: torch.Tensor,
    frame_mask: torch.Tensor,
    tuples: Sequence[MaskTuple],
    references: Sequence[torch.Tensor],
    where: str = "",
    align: int | None = None,
) -> None:
    """Apply ``tuples`` in order, in place, to one sample: ``z [C, T, h, w]`` and ``frame_mask [T]``
    (``align``: snap starts as Open-Sora 1.2, see :meth:`MaskTuple.resolve`).

    ``references[ref_id]`` are latents ``[C, T_ref, h, w]``. Raises SampleInputError when a tuple's frames do
    not exist or a reference has another latent shape.
    """
    for tup in tuples:
        ref = references[tup.ref_id]
        if ref.shape[0] != z.shape[0] or ref.shape[2:] != z.shape[2:]:
            raise SampleInputError(
                f"{where}reference {tup.ref_id} has latent shape {tuple(ref.shape)} but the clip has "
                f"{tuple(z.shape)} (C, T, H, W)"
            )
        try:
            rs, ts, length = tup.resolve(ref.shape[1], z.shape[1], align)
        except ValueError as exc:
            raise SampleInputError(f"{where}mask strategy tuple {tup.text!r}: {exc}") from None
        z[:, ts : ts + length] = ref[:, rs : rs + length].to(z.dtype)
        frame_mask[ts : ts + length] = tup.edit_ratio


def carried_loop_frames(cfg: Any) -> int:
    """Pixel frames every later loop repeats from the previous clip: ``condition_frame_length`` latent frames
    through ``cfg.vae`` (:func:`~opensora_core.models.vae_registry.carried_frames`); 0 with one loop."""
    if cfg.loop == 1 or not cfg.condition_frame_length:
        return 0
    return carried_frames(cfg.vae, int(cfg.condition_frame_length))


def total_frames(num_frames: int, loop: int, carried: int) -> int:
    """Frames of a ``loop``-loop video: ``loop * (num_frames - carried) + carried`` (``num_frames`` when
    loop=1); ``carried``: the pixel frames of ``condition_frame_length`` (``vae_registry.carried_frames``)."""
    if loop == 1:
        return num_frames
    return loop * (num_frames - carried) + carried


def stitch_loops(clips: Sequence[torch.Tensor], carried: int) -> torch.Tensor:
    """Join per-loop clips ``[B, C, T, H, W]``: clip 0, then each later clip without its first ``carried``
    (pixel) frames -- the frames conditioned on the previous clip."""
    import torch

    if len(clips) == 1:
        return clips[0]
    return torch.cat([clips[0]] + [c[:, :, carried:] for c in clips[1:]], dim=2)
