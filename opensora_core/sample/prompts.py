"""The plan of a sampling run: which prompts, which files, what to skip. No torch, so bad input (prompt file,
mask strategy, reference, index range) fails in a fraction of a second, before any model is loaded.

Prompts come from ``prompts=`` (API), else ``cfg.prompt``, else ``cfg.prompt_path`` (one prompt per line;
blank lines and lines starting with ``#`` are skipped; a local path or a storage URI). ``start_index`` /
``end_index`` slice the list; ``reference_path`` / ``mask_strategy`` have one entry per prompt of the whole
list. Work items are ordered prompt by prompt, ``num_sample`` samples each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opensora_core.config import RunConfig
from opensora_core.io import storage
from opensora_core.models.registry import MODELS, model_caps
from opensora_core.sample.long import (
    PromptSpec,
    SampleInputError,
    append_scores,
    build_prompt_specs,
    carried_loop_frames,
    check_reference_files,
    total_frames,
)
from opensora_core.sample.writer import PREVIEW_DIR, output_stem, sample_path, save_fps
from opensora_core.schedulers.registry import SCHEDULERS, scheduler_caps

__all__ = ["RunPlan", "SampleItem", "plan_run", "read_prompt_file", "select_prompts"]


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Prompts of a text file (local or storage URI): stripped lines, blank and ``#`` lines skipped.

    Raises SampleInputError when the file does not exist or holds no prompt.
    """
    text_path = str(path)
    if storage.is_remote(text_path):
        try:
            raw = storage.read_bytes(text_path).decode("utf-8")
        except FileNotFoundError:
            raise SampleInputError(f"prompt file {text_path!r} does not exist") from None
    else:
        local = storage.local_path(text_path)
        if not local.is_file():
            raise SampleInputError(
                f"prompt file {text_path!r} does not exist" + (" (it is a folder)" if local.is_dir() else "")
            )
        raw = local.read_text(encoding="utf-8")
    prompts = [line.strip() for line in raw.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise SampleInputError(
            f"prompt file {text_path!r} has no prompts (only blank lines or # comments); add one prompt per line"
        )
    return prompts


def select_prompts(cfg: RunConfig, prompts: Sequence[str] | None = None) -> tuple[list[str], list[int]]:
    """All prompts of the run and the indices of the slice ``[start_index, end_index)`` to sample."""
    if prompts is not None:
        full = list(prompts)
        source = "the prompts given"
    elif cfg.prompt:
        full = list(cfg.prompt)
        source = "prompt"
    elif cfg.prompt_path is not None:
        full = read_prompt_file(cfg.prompt_path)
        source = f"prompt file {cfg.prompt_path!r}"
    else:
        raise SampleInputError(
            "no prompts: pass --prompt TEXT or --prompt-path FILE (or set prompt / prompt_path)"
        )
    if not full:
        raise SampleInputError(f"{source} is empty; give at least one prompt")
    bad = [i for i, p in enumerate(full) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise SampleInputError(f"prompt {bad[0]} of {source} is empty")
    start = cfg.start_index or 0
    end = len(full) if cfg.end_index is None else min(cfg.end_index, len(full))
    if start >= len(full):
        raise SampleInputError(f"start_index {start} is past the end of the {len(full)} prompts of {source}")
    return full, list(range(start, end))


@dataclass(frozen=True)
class SampleItem:
    """One video to produce: sample ``sample_index`` of prompt ``spec``, written to ``path``."""

    spec: PromptSpec
    sample_index: int
    path: Path
    skip: bool = False  # prompt_as_path and the file exists


@dataclass
class RunPlan:
    """Prompts, output files and frame counts of a sampling run."""

    specs: list[PromptSpec]
    items: list[SampleItem]
    num_frames: int  # of the final (stitched) video
    fps: int  # playback rate of saved videos
    save_dir: Path
    preview_paths: dict[int, Path] = field(default_factory=dict)  # prompt index -> grid png

    @property
    def todo(self) -> list[SampleItem]:
        """Items to generate (not skipped)."""
        return [it for it in self.items if not it.skip]


def _check_support(cfg: RunConfig, specs: Sequence[PromptSpec]) -> None:
    """Conditioning (loops, references) needs masked IDDPM sampling and a model that takes a frame mask."""
    if cfg.loop == 1 and not any(spec.mask_tuples for spec in specs):
        return
    why = f"loop={cfg.loop}" if cfg.loop > 1 else "mask strategies (reference conditioning)"
    sched = scheduler_caps(cfg.scheduler.type)
    if not (sched.frame_mask and sched.sampling):
        masked = ", ".join(repr(n) for n, e in SCHEDULERS.items() if e.caps.frame_mask and e.caps.sampling)
        raise SampleInputError(
            f"{why} need scheduler.type {masked} (masked sampling); got {cfg.scheduler.type!r}"
        )
    if not model_caps(cfg.model.type).frame_mask:
        masked = ", ".join(n for n, e in MODELS.items() if e.caps.frame_mask)
        raise SampleInputError(
            f"{why} need a model with a frame mask ({masked}); got model.type {cfg.model.type!r}"
        )


def plan_run(cfg: RunConfig, prompts: Sequence[str] | None = None) -> RunPlan:
    """Parse prompts, check references and mask strategies, and list the output files (no torch).

    Raises SampleInputError naming the offending prompt, file or value.
    """
    if cfg.num_frames is None or cfg.image_size is None:
        raise SampleInputError(
            "num_frames and image_size must be set to sample (--num-frames, --image-size H W)"
        )
    if storage.is_remote(cfg.save_dir):
        raise SampleInputError(
            f"save_dir {cfg.save_dir!r}: samples are written to a local folder; upload it afterwards "
            "(opensora_core.io.storage.upload_dir)"
        )
    full, indices = select_prompts(cfg, prompts)
    per_prompt: dict[str, list[str | None] | None] = {}
    for name in ("reference_path", "mask_strategy"):
        values = getattr(cfg, name)
        if values is not None and len(values) != len(full):
            raise SampleInputError(
                f"{name} has {len(values)} entries but there are {len(full)} prompts; give one per prompt "
                "('None' for prompts without one)"
            )
        per_prompt[name] = None if values is None else [values[i] for i in indices]
    specs = build_prompt_specs(
        [full[i] for i in indices],
        per_prompt["reference_path"],
        per_prompt["mask_strategy"],
        cfg.loop,
        indices,
    )
    for spec in specs:  # Open-Sora 1.2: every loop's caption carries the aes / flow / camera-motion text
        spec.loop_texts = [append_scores(t, cfg.aes, cfg.flow, cfg.camera_motion) for t in spec.loop_texts]
    _check_support(cfg, specs)
    check_reference_files(specs, cfg.num_frames, cfg.align)
    save_dir = storage.local_path(cfg.save_dir)
    frames = total_frames(cfg.num_frames, cfg.loop, carried_loop_frames(cfg))
    items: list[SampleItem] = []
    seen: set[Path] = set()
    previews: dict[int, Path] = {}
    for spec in specs:
        stem = output_stem(save_dir, spec.index, spec.text, cfg.sample_name, cfg.prompt_as_path)
        previews[spec.index] = save_dir / PREVIEW_DIR / f"{stem.name}.png"
        for k in range(cfg.num_sample):
            path = sample_path(stem, k, cfg.num_sample, frames)
            skip = path in seen or (cfg.prompt_as_path and path.exists())
            seen.add(path)
            items.append(SampleItem(spec, k, path, skip))
    fps = cfg.save_fps or save_fps(cfg.fps, cfg.frame_interval)
    return RunPlan(specs, items, frames, fps, save_dir, previews)
