"""Caption stage: each row keeps its caption from the table, else from a same-name sidecar ``.txt`` (of the clip,
then of its ``source_path``), else from a ``path,text`` captions table, else (with ``model``) a caption generated
by an image-text-to-text model; captions are cleaned (whitespace collapsed, cut to ``max_words``), ``text_len`` is
recomputed, and rows with fewer than ``min_words`` words are dropped (reported as ``missing caption``,
``caption too short`` or ``caption generation failed: ...``).

Generation (:class:`Captioner`): ``model`` is a local folder or hub id loaded with transformers'
``AutoProcessor`` + ``AutoModelForImageTextToText`` (LLaVA-, BLIP-, Qwen-VL-style models; GPU when available).
``num_frames`` frames spread over the clip are shrunk to at most ``FRAME_SIDE`` px and tiled left to right into
one image, so any single-image model sees the clip's course. Processors with a chat template get the image and
``prompt`` (default :data:`CHAT_PROMPT`) as one user turn; others get ``prompt`` as the caption's prefix (none by
default: plain captioning). The prompt is cut from the output. Greedy decoding, ``max_new_tokens`` tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from opensora_core.data.curate.common import (
    StageReport,
    kept_rows,
    read_stage_input,
    sample_frames,
    sample_indices,
    write_stage,
)
from opensora_core.data.prepare import _exists, _load_captions, _progress, _read_text

CHAT_PROMPT = (
    "Describe this video in one or two sentences: the subjects, the action, the scene and the camera."
)
FRAME_SIDE = 336


def clean_caption(text: str, max_words: int) -> str:
    """Collapse whitespace and keep at most ``max_words`` words."""
    return " ".join(text.split()[:max_words])


def _sidecar(path: str) -> str | None:
    txt = os.path.splitext(path)[0] + ".txt"
    return _read_text(txt) if _exists(txt) else None


def _caption_of(row: dict[str, Any], table: dict[str, str]) -> str:
    text = row.get("text")
    if isinstance(text, str) and text.strip():
        return text
    for candidate in (str(row["path"]), row.get("source_path")):
        if isinstance(candidate, str) and candidate:
            found = _sidecar(candidate)
            if found is None:
                found = table.get(candidate, table.get(os.path.basename(candidate)))
            if found and found.strip():
                return found
    return ""


def frame_strip(path: str, num_frames: int, count: int) -> np.ndarray:
    """``count`` frames of a clip (an image: itself) shrunk to ``FRAME_SIDE`` px and tiled left to right ->
    uint8 ``[H, count * W, 3]``."""
    from opensora_core.data.video_io import is_image_path, read_image

    if is_image_path(path):
        return read_image(path)
    frames = sample_frames(path, sample_indices(num_frames, count), max_side=FRAME_SIDE)  # [N, H, W, 3]
    return np.concatenate(list(frames), axis=1)


class Captioner:
    """An image-text-to-text model: ``captioner([image, ...])`` -> one caption per uint8 ``[H, W, 3]`` image."""

    def __init__(
        self, model: str, prompt: str | None = None, max_new_tokens: int = 60, device: str | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, dtype=torch.bfloat16 if self.device.type == "cuda" else torch.float32
            )
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"caption model {model!r} could not be loaded as an image-text-to-text model (a local folder "
                f"or hub id with a processor, e.g. a LLaVA or BLIP checkpoint): {exc}"
            ) from exc
        self.model.eval().to(self.device)
        self.max_new_tokens = max_new_tokens
        if getattr(self.processor, "chat_template", None):
            turn = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": prompt or CHAT_PROMPT}],
                }
            ]
            self.text = self.processor.apply_chat_template(turn, add_generation_prompt=True)
            self.prefix = ""
        else:
            self.text = self.prefix = prompt or ""

    def __call__(self, images: Sequence[np.ndarray]) -> list[str]:
        import torch

        texts = [self.text] * len(images) if self.text else None
        inputs = self.processor(images=list(images), text=texts, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        prompt_ids = inputs.get("input_ids")
        n = 0 if prompt_ids is None else prompt_ids.shape[1]
        if n and out.shape[1] >= n and torch.equal(out[:, :n].cpu(), prompt_ids.cpu()):
            out = out[:, n:]  # decoder-only models echo the prompt
        captions = self.processor.batch_decode(out, skip_special_tokens=True)
        prefix = self.prefix.strip().lower()
        captions = [c.strip() for c in captions]
        return [c[len(prefix) :].strip() if prefix and c.lower().startswith(prefix) else c for c in captions]


def generate_captions(
    rows: Sequence[dict[str, Any]],
    captioner: Captioner,
    num_frames: int = 3,
    batch_size: int = 8,
    progress: bool = True,
) -> list[str | Exception]:
    """A caption (or the exception that stopped it) for each row (``path``, ``num_frames``), ``batch_size``
    clips per model call."""
    results: list[str | Exception] = [Exception("not captioned")] * len(rows)
    bar = _progress(len(rows), progress, "captioning", "clip")
    for start in range(0, len(rows), batch_size):
        batch: list[tuple[int, np.ndarray]] = []
        for i in range(start, min(start + batch_size, len(rows))):
            try:
                batch.append(
                    (i, frame_strip(str(rows[i]["path"]), int(rows[i].get("num_frames") or 1), num_frames))
                )
            except Exception as exc:  # one undecodable clip must not stop the run
                results[i] = exc
        if batch:
            try:
                for (i, _), text in zip(batch, captioner([img for _, img in batch]), strict=True):
                    results[i] = text
            except Exception:  # e.g. images of different sizes the processor cannot batch: one at a time
                for i, img in batch:
                    try:
                        results[i] = captioner([img])[0]
                    except Exception as exc:
                        results[i] = exc
        bar.update(min(batch_size, len(rows) - start))
    bar.close()
    return results


def caption(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    captions: str | os.PathLike[str] | None = None,
    min_words: int = 1,
    max_words: int = 200,
    overwrite: bool = False,
    model: str | None = None,
    prompt: str | None = None,
    num_frames: int = 3,
    max_new_tokens: int = 60,
    batch_size: int = 8,
    progress: bool = True,
) -> StageReport:
    """Fill, clean and check the ``text`` column of ``input`` (see the module docstring); with ``model``, rows
    still without a caption get a generated one."""
    t0 = time.perf_counter()
    if min_words < 1 or max_words < min_words:
        raise ValueError(
            f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}"
        )
    if num_frames < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"num_frames, batch_size and max_new_tokens must be >= 1, got {num_frames}, {batch_size}, "
            f"{max_new_tokens}"
        )
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src)
    folder = os.path.dirname(os.path.abspath(src))
    table = _load_captions(os.fspath(captions), folder) if captions else {}
    records = df.to_dict("records")
    raw: list[str] = [_caption_of(r, table) for r in records]
    failures: dict[int, str] = {}
    missing = [i for i, text in enumerate(raw) if not text.strip()]
    if model is not None and missing:
        captioner = Captioner(model, prompt, max_new_tokens)
        made = generate_captions([records[i] for i in missing], captioner, num_frames, batch_size, progress)
        for i, text in zip(missing, made, strict=True):
            if isinstance(text, Exception):
                failures[i] = f"caption generation failed: {type(text).__name__}: {text}"
            else:
                raw[i] = text
    texts = [clean_caption(t, max_words) for t in raw]
    rules: list[str | None] = []
    for i, text in enumerate(texts):
        words = len(text.split())
        if words >= min_words:
            rules.append(None)
        else:
            rules.append(failures.get(i) or ("missing caption" if words == 0 else "caption too short"))
    df["text"] = texts
    df["text_len"] = [len(t.split()) for t in texts]
    dropped = [(str(p), r) for p, r in zip(df["path"], rules, strict=True) if r]
    kept = kept_rows(df, rules)
    details: dict[str, Any] = {"max_words": max_words}
    if model is not None:
        details.update(model=model, generated=len(missing) - len(failures), generation_failed=len(failures))
    return write_stage("caption", src, out, kept, len(df), dropped, t0, overwrite, details)
