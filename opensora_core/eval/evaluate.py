"""Evaluate a training checkpoint: sample an evaluation prompt set, score the videos, log everything.

    from opensora_core.eval import evaluate
    result = evaluate("outputs/000-STDiT-XL-2/epoch0-global_step400", "outputs/eval",
                      prompts=None,                     # None: every synthetic caption (16 per shape)
                      weights=("ema", "untrained"),     # also sample the untrained model, same seed
                      tracking={"uri": "http://127.0.0.1:5000", "experiment": "opensora"})
    result.metrics["colour_accuracy"], result.metrics["untrained/colour_accuracy"]

The checkpoint (a folder written by ``opensora_core.train``, local or ``s3://``) brings its resolved
``config.json``; evaluation samples with the same architecture, VAE and text encoder, the IDDPM sampler with
``num_sampling_steps`` / ``cfg_scale``, and one seed for every weight variant, so variants differ only by their
weights. Variants:

- ``ema``: ``ema.safetensors`` (the headline numbers, unprefixed metric names)
- ``model``: ``model.safetensors`` (the raw weights; metrics ``model/...``)
- ``untrained``: the same architecture freshly initialised from the seed (step 0; metrics ``untrained/...``)

With ``val_table`` (a held-out metadata table, e.g. ``meta.eval.csv`` of :mod:`opensora_core.data.split`) every
variant is also scored by its validation loss (:mod:`opensora_core.eval.val_loss`): ``val_loss`` (the headline
metric for real data), ``val_loss/t0091`` per timestep and ``val_loss/bucket/16x16x4`` per bucket, and with an
``untrained`` variant ``val_loss_improvement`` = 1 - val_loss / untrained val_loss (0 for random weights).

With ``clip_model`` (a CLIP hub id, local folder or ``debug/tiny-clip``) every variant is scored by its
CLIPScore (:mod:`opensora_core.eval.clip_score`): ``clip_score`` (mean over prompts) and ``clip_score`` in each
per-prompt row, which the gate compares pair by pair. With ``fvd_extractor`` (a TorchScript file such as I3D's,
or a transformers video model; :mod:`opensora_core.eval.fvd`) and ``val_table``, ``fvd``: the Fréchet video
distance of the generated videos to the held-out clips (``num_frames`` frames at the dataset's
``frame_interval``, features computed once for all variants). Both are off when unset.

Metrics (:mod:`opensora_core.eval.metrics`): ``valid_fraction``, ``mean_intensity`` and ``temporal_change`` for
every prompt set; when every prompt is a synthetic caption also ``colour_accuracy``, ``direction_accuracy``,
``joint_accuracy`` and ``no_shape_fraction``, and with an ``untrained`` variant the gains
``colour_accuracy_gain`` / ``direction_accuracy_gain`` (headline minus untrained). Videos are scored as written
(decoded back from the mp4 files), i.e. what a user sees.

Outputs under ``output_dir`` (local or ``s3://``): ``{variant}/sample_{i}.mp4``, ``preview/{variant}.png`` (one
row per prompt, the prompt written above it), ``report.json`` (metrics, per-prompt verdicts, per-clip validation losses, settings and their
hash ``eval_config_sha256``: two reports with the same hash were measured on the same prompts, seeds and
held-out clips, so their per-prompt / per-clip values pair up). With ``tracking`` the same files and
metrics go to one MLflow run (through :mod:`opensora_core.io.tracking`).

Data-parallel (``torchrun -m opensora_core.eval``, :mod:`opensora_core.eval.cli`): each rank samples a
contiguous slice of the prompts (video seeds are keyed by the prompt's index, so the split changes nothing)
and every ``world_size``-th held-out batch; rank 0 gathers the video files and losses and alone writes the
outputs and the MLflow run, so the report equals one process's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensora_core.eval.metrics import (
    is_synthetic_prompt,
    score_caption_agreement,
    synthetic_prompts,
    video_statistics,
)

logger = logging.getLogger(__name__)

WEIGHT_VARIANTS = ("ema", "model", "untrained")
_PREFIX = {"ema": "", "model": "model/", "untrained": "untrained/"}
REPORT_FILE = "report.json"
PREVIEW_DIR = "preview"


@dataclass
class EvalResult:
    """What :func:`evaluate` produced."""

    metrics: dict[str, float]
    output_dir: str
    videos: dict[str, list[str]] = field(default_factory=dict)
    previews: dict[str, str] = field(default_factory=dict)
    report: str = ""
    global_step: int = 0
    mlflow_run_id: str | None = None
    eval_config_sha256: str = ""

    def summary(self) -> str:
        """One line per metric, sorted."""
        return "\n".join(f"{k} = {v:.4g}" for k, v in sorted(self.metrics.items()))


def _fetch_checkpoint(checkpoint: str, variants: Sequence[str], into: Path) -> Path:
    """A local folder with the checkpoint's config and the weight files the variants need."""
    from opensora_core import checkpoint as ckpt

    weights = [ckpt.WEIGHT_FILES[v] for v in variants if v in ckpt.WEIGHT_FILES]
    return ckpt.fetch_files(checkpoint, weights, into, optional=[ckpt.RUNNING_STATES_FILE])


def _sampling_overrides(
    cfg: Any,
    save_dir: Path,
    weights: str | None,
    num_sampling_steps: int | None,
    cfg_scale: float | None,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Overrides that turn a training config into the evaluation's sampling config."""
    out: dict[str, Any] = {
        "model.from_pretrained": weights,
        "save_dir": str(save_dir),
        "sample_name": "sample",
        "prompt_as_path": False,
        "num_sample": 1,
        "start_index": None,
        "end_index": None,
        "loop": 1,
        "reference_path": None,
        "mask_strategy": None,
        "seed": seed,
        "batch_size": batch_size,
    }
    if cfg.scheduler.type == "iddpm-speed":
        out["scheduler.type"] = "iddpm"
    if num_sampling_steps is not None:
        out["scheduler.num_sampling_steps"] = num_sampling_steps
        if "timestep_respacing" in type(cfg.scheduler).model_fields:  # IDDPM; not rflow, not dpm-solver
            out["scheduler.timestep_respacing"] = None  # a training respacing would conflict with the steps
    if cfg_scale is not None:
        out["scheduler.cfg_scale"] = cfg_scale
    ds = cfg.dataset
    if cfg.num_frames is None and ds is not None and getattr(ds, "num_frames", None):
        out["num_frames"] = ds.num_frames
    if cfg.image_size is None and ds is not None and None not in tuple(getattr(ds, "image_size", (None,))):
        out["image_size"] = tuple(ds.image_size)
    return out


def sampling_config(
    config: str | Path,
    weights: str | Path | None,
    save_dir: str | Path,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    *,
    num_sampling_steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> Any:
    """The sampling RunConfig for a checkpoint's resolved training config (``config.json``).

    ``weights`` is the weights file to load (None: fresh initialisation). ``num_frames`` / ``image_size`` come
    from the dataset section when the config has none at top level; ``overrides`` (dotted-key dict or
    ``"key=value"`` strings) are applied last and win.
    """
    from opensora_core.config import load_config, parse_override_value

    base = load_config(config)
    merged = _sampling_overrides(
        base,
        Path(save_dir),
        None if weights is None else str(weights),
        num_sampling_steps,
        cfg_scale,
        seed,
        batch_size,
    )
    if isinstance(overrides, Mapping):
        merged.update(overrides)
    else:
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"override {item!r} must look like key=value (e.g. num_frames=16)")
            merged[key.strip()] = parse_override_value(value.strip())
    return load_config(config, overrides=merged)


def prompt_shard(num_prompts: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice ``[start, end)`` of the prompts that rank ``rank`` of ``world_size`` samples
    (sizes differ by at most one; empty for ranks beyond the number of prompts)."""
    base, extra = divmod(num_prompts, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _sample_variant(
    cfg: Any,
    prompts: list[str],
    seed: int,
    variant: str,
    progress: bool,
    device: Any,
    shard_dir: Path,
    env: Any,
) -> list[Path]:
    """Sample ``prompts`` into ``cfg.save_dir`` (written by rank 0 only); the paths, prompt by prompt.

    Each rank samples its :func:`prompt_shard` into ``shard_dir`` (the prompt slice keeps the global prompt
    indices, so each video's seed ``derive_seed(seed, "noise", prompt index, 0)`` and file name do not depend on
    the split), then the files are gathered to rank 0. Every rank must call this (it is a collective)."""
    import torch

    from opensora_core.sample import load_sampling_models, sample

    rank, world = (env.rank, env.world_size) if env is not None else (0, 1)
    start, end = prompt_shard(len(prompts), rank, world)
    files: dict[str, bytes] = {}
    if end > start:
        if variant == "untrained":
            torch.manual_seed(seed)  # the fresh initialisation is part of the seeded experiment
        models = load_sampling_models(cfg, device)
        shard = cfg.model_copy(update={"save_dir": str(shard_dir), "start_index": start, "end_index": end})
        # previews=False: evaluate tiles one grid per variant itself
        paths = sample(shard, prompts, progress=progress, models=models, previews=False)
        files = {p.name: p.read_bytes() for p in paths}
    parts = env.all_gather_object(files) if env is not None and world > 1 else [files]
    save_dir = Path(cfg.save_dir)
    names = [name for part in parts for name in part]  # rank order = prompt order (contiguous shards)
    if rank == 0:
        save_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(save_dir, stem="sample_config")
        for part in parts:
            for name, data in part.items():
                (save_dir / name).write_bytes(data)
    return [save_dir / name for name in names]


def _score(
    prompts: list[str],
    paths: list[Path],
    videos: list[Any],
    prefix: str,
    clip: Any = None,
    fvd_ref: Any = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics (names prefixed) and per-prompt report rows of ``videos``, decoded from ``paths``; CLIPScore with
    ``clip`` (a ClipEmbedder), FVD with ``fvd_ref`` (an FvdReference)."""
    metrics = {f"{prefix}{k}": v for k, v in video_statistics(videos).items()}
    per_prompt: list[dict[str, Any]] = [
        {"prompt": p, "video": str(v)} for p, v in zip(prompts, paths, strict=True)
    ]
    if all(is_synthetic_prompt(p) for p in prompts):
        agreement = score_caption_agreement(videos, prompts)
        metrics.update(agreement.metrics(prefix))
        for row, verdict in zip(per_prompt, agreement.verdicts, strict=True):
            row.update(verdict.as_dict())
    if clip is not None:
        from opensora_core.eval.clip_score import CLIP_SCORE, clip_scores

        scores = clip_scores(clip, videos, prompts)
        metrics[f"{prefix}{CLIP_SCORE}"] = math.fsum(scores) / len(scores)
        for row, value in zip(per_prompt, scores, strict=True):
            row[CLIP_SCORE] = value
    if fvd_ref is not None:
        metrics[f"{prefix}fvd"] = fvd_ref.distance(videos)
    return metrics, per_prompt


def evaluate(
    checkpoint: str,
    output_dir: str,
    prompts: Sequence[str] | None = None,
    *,
    weights: Sequence[str] = ("ema", "untrained"),
    overrides: Sequence[str] | Mapping[str, Any] = (),
    num_sampling_steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    tracking: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    device: str | None = None,
    progress: bool = False,
    val_table: str | None = None,
    num_eval_timesteps: int = 10,
    val_batch_size: int = 8,
    dist_env: Any = None,
    clip_model: str | None = None,
    fvd_extractor: str | None = None,
) -> EvalResult:
    """Sample ``prompts`` with each of ``weights`` from ``checkpoint``, score and log them (module docstring).

    ``prompts`` None means :func:`~opensora_core.eval.metrics.synthetic_prompts` (all 32 synthetic captions).
    ``overrides`` are config overrides applied after the evaluation's own (e.g. ``["image_size=(240, 426)",
    "num_frames=16", "multi_resolution='STDiT2'"]`` for bucketed training configs). ``tracking`` is
    ``dict(uri=..., experiment=..., run_name=...)`` for MLflow (None: no tracking); ``tags`` are added to the
    MLflow run. ``val_table``: held-out metadata table for the validation loss at ``num_eval_timesteps``
    timesteps, in batches of ``val_batch_size`` clips (the VAE posterior draws are keyed by batch, so it is
    part of the settings; None table: no validation loss). ``dist_env``
    (:func:`opensora_core.parallel.dist.init_distributed` under torchrun): every rank calls this; the prompts
    and the held-out batches are split over the ranks and gathered on rank 0, which alone writes the videos,
    previews, report and MLflow run; the metrics are those of one process and every rank returns rank 0's
    result. Raises ValueError for an unknown weight variant, an empty
    prompt list, or FVD without ``val_table`` or with fewer than 2 prompts.
    """
    from opensora_core import checkpoint as ckpt
    from opensora_core.io import storage
    from opensora_core.sample.writer import read_sample, write_preview_grid
    from opensora_core.utils.grid import MIN_TILE

    weights = list(dict.fromkeys(weights))
    bad = [w for w in weights if w not in WEIGHT_VARIANTS]
    if bad or not weights:
        raise ValueError(f"weights {bad or weights} unknown; choose from {list(WEIGHT_VARIANTS)}")
    prompts = list(prompts) if prompts else synthetic_prompts()
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("prompts must be non-empty strings")
    if fvd_extractor and not val_table:
        raise ValueError("fvd_extractor needs val_table: FVD compares the videos with the held-out clips")
    if fvd_extractor and len(prompts) < 2:
        raise ValueError(
            f"FVD fits a Gaussian to the generated videos: give at least 2 prompts, got {len(prompts)}"
        )
    headline = next((w for w in weights if w != "untrained"), "untrained")
    clip = None
    if clip_model:
        from opensora_core.models.clip import load_clip

        clip = load_clip(clip_model, device)
    fvd_ref, fvd_interval = None, 1

    tmp = Path(tempfile.mkdtemp(prefix="opensora-eval-"))
    try:
        folder = _fetch_checkpoint(checkpoint, weights, tmp / "checkpoint")
        remote_output = storage.is_remote(output_dir)
        is_main = dist_env is None or dist_env.is_main  # rank 0 alone writes output_dir and logs
        out = tmp / "out" if remote_output or not is_main else storage.local_path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        running = folder / ckpt.RUNNING_STATES_FILE
        global_step = int(ckpt.read_running_states(folder)["global_step"]) if running.is_file() else 0

        metrics: dict[str, float] = {}
        report_rows: dict[str, list[dict[str, Any]]] = {}
        local_videos: dict[str, list[Path]] = {}
        previews: dict[str, Path] = {}
        settings: dict[str, Any] = {}
        val_losses: dict[str, Any] = {}
        for variant in weights:
            cfg = sampling_config(
                folder / ckpt.CONFIG_JSON,
                folder / ckpt.WEIGHT_FILES[variant] if variant in ckpt.WEIGHT_FILES else None,
                out / variant,
                overrides,
                num_sampling_steps=num_sampling_steps,
                cfg_scale=cfg_scale,
                seed=seed,
                batch_size=batch_size,
            )
            settings = {
                "num_sampling_steps": cfg.scheduler.num_sampling_steps,
                "cfg_scale": cfg.scheduler.cfg_scale,
                "seed": seed,
                "num_frames": cfg.num_frames,
                "image_size": list(cfg.image_size),
                "model": cfg.model.type,
            }
            paths = _sample_variant(
                cfg, prompts, seed, variant, progress, device, tmp / "shards" / variant, dist_env
            )
            prefix = "" if variant == headline else _PREFIX[variant]
            if is_main:
                if fvd_extractor and fvd_ref is None:
                    from opensora_core.eval.fvd import fvd_reference

                    fvd_interval = int(getattr(cfg.dataset, "frame_interval", 1) or 1)
                    fvd_ref = fvd_reference(
                        fvd_extractor, str(val_table), cfg.num_frames, fvd_interval, seed, device
                    )
                videos = [read_sample(p) for p in paths]  # decoded once: scored and tiled into the preview
                variant_metrics, rows = _score(prompts, paths, videos, prefix, clip, fvd_ref)
                metrics.update(variant_metrics)
                report_rows[variant] = rows
                local_videos[variant] = paths
                previews[variant] = write_preview_grid(
                    videos, out / PREVIEW_DIR / f"{variant}.png", labels=prompts, min_tile=MIN_TILE
                )
            if val_table:
                val_losses[variant] = _val_loss(
                    folder, variant, val_table, num_eval_timesteps, seed, val_batch_size, device, dist_env
                )
                metrics.update(val_losses[variant].metrics(prefix))
        if not is_main:  # rank 0 writes and logs; the others return its result
            return dist_env.broadcast_object(None)
        if val_table:
            settings.update(
                prompts=prompts,
                num_eval_timesteps=num_eval_timesteps,
                val_batch_size=val_batch_size,
                val_table_sha256=_table_sha256(val_table),
            )
        if clip_model:
            settings["clip_model"] = clip_model
        if fvd_extractor:
            settings.update(fvd_extractor=fvd_extractor, fvd_frame_interval=fvd_interval)
        if "untrained" in val_losses and headline != "untrained":
            metrics["val_loss_improvement"] = 1.0 - metrics["val_loss"] / metrics["untrained/val_loss"]
        if "untrained" in weights and headline != "untrained":
            for name in ("colour_accuracy", "direction_accuracy", "joint_accuracy"):
                if name in metrics and f"untrained/{name}" in metrics:
                    metrics[f"{name}_gain"] = metrics[name] - metrics[f"untrained/{name}"]
        metrics["num_prompts"] = float(len(prompts))
        settings.setdefault("prompts", prompts)
        config_hash = eval_config_sha256(settings)

        report = out / REPORT_FILE
        report.write_text(
            json.dumps(
                {
                    "checkpoint": checkpoint,
                    "global_step": global_step,
                    "headline_weights": headline,
                    "settings": settings,
                    "eval_config_sha256": config_hash,
                    "val_table": val_table,
                    "metrics": metrics,
                    "per_prompt": report_rows,
                    "val_loss": {v: r.as_dict() for v, r in val_losses.items()},
                    **(
                        {"fvd": {"real_clips": len(fvd_ref.real), "skipped_clips": fvd_ref.skipped}}
                        if fvd_ref is not None
                        else {}
                    ),
                },
                indent=2,
            )
        )
        run_id = _log_to_mlflow(
            tracking, tags, checkpoint, global_step, metrics, settings, weights, out, previews, report
        )

        def uri_of(p: Path) -> str:
            return storage.join(output_dir, p.relative_to(out).as_posix()) if remote_output else str(p)

        if remote_output:
            storage.upload_dir(out, output_dir)
        result = EvalResult(
            metrics=metrics,
            output_dir=output_dir if remote_output else str(out),
            videos={v: [uri_of(p) for p in ps] for v, ps in local_videos.items()},
            previews={v: uri_of(p) for v, p in previews.items()},
            report=uri_of(report),
            global_step=global_step,
            mlflow_run_id=run_id,
            eval_config_sha256=config_hash,
        )
        if dist_env is not None and dist_env.is_distributed:
            dist_env.broadcast_object(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("evaluation of %s (step %d):\n%s", checkpoint, global_step, result.summary())
    return result


def eval_config_sha256(settings: Mapping[str, Any]) -> str:
    """Hash of what makes two evaluations comparable pair by pair: sampling settings, prompts, seed, held-out
    table (its SHA-256) and timesteps; the model type is left out so different weights compare."""
    comparable = {k: v for k, v in settings.items() if k != "model"}
    text = json.dumps(comparable, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _table_sha256(uri: str) -> str:
    from opensora_core.io import storage

    digest = hashlib.sha256()
    with storage.open_read(uri) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _val_loss(
    folder: Path,
    variant: str,
    table: str,
    num_eval_timesteps: int,
    seed: int,
    batch_size: int,
    device: Any,
    dist_env: Any,
) -> Any:
    """Validation loss of one weight variant of the checkpoint in ``folder`` (held-out clips batched by
    ``batch_size`` unless the config's buckets set the sizes)."""
    from opensora_core import checkpoint as ckpt
    from opensora_core.eval.val_loss import checkpoint_val_loss

    weights = folder / ckpt.WEIGHT_FILES[variant] if variant in ckpt.WEIGHT_FILES else None
    if variant == "untrained":
        import torch

        torch.manual_seed(seed)
    return checkpoint_val_loss(
        folder / ckpt.CONFIG_JSON,
        weights,
        table,
        num_eval_timesteps=num_eval_timesteps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        dist_env=dist_env,
    )


def _log_to_mlflow(
    tracking: Mapping[str, Any] | None,
    tags: Mapping[str, str] | None,
    checkpoint: str,
    global_step: int,
    metrics: dict[str, float],
    settings: dict[str, Any],
    weights: list[str],
    out: Path,
    previews: dict[str, Path],
    report: Path,
) -> str | None:
    """One MLflow run with the evaluation's params, metrics, videos, previews and report; its id."""
    if not tracking:
        return None
    from opensora_core.io.tracking import build_tracker

    cfg = {"backend": "mlflow", **{k: v for k, v in tracking.items() if v not in (None, "")}}
    cfg.setdefault("run_name", f"eval-step{global_step}")
    tracker = build_tracker(cfg)
    tracker.set_tags({"opensora.kind": "evaluation", "opensora.checkpoint": checkpoint, **(tags or {})})
    tracker.log_params({"eval": {**settings, "weights": ",".join(weights), "checkpoint": checkpoint}})
    tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=global_step)
    for variant in weights:
        tracker.log_artifact(out / variant, f"videos/{variant}")
    for path in previews.values():
        tracker.log_artifact(path, PREVIEW_DIR)
    tracker.log_artifact(report)
    tracker.close(timeout=120.0)
    if tracker.run_id is None:
        logger.warning("MLflow unreachable: evaluation metrics were not logged (files are in %s)", out)
    return tracker.run_id
