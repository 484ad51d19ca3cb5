"""Validation loss on a held-out metadata table, as Open-Sora 1.2 measures it (``eval/loss``).

    from opensora_core.eval.val_loss import checkpoint_val_loss
    result = checkpoint_val_loss("ckpt/config.json", "ckpt/ema.safetensors", "data/meta.eval.csv",
                                 num_eval_timesteps=10, seed=0)
    result.overall, result.per_timestep, result.per_bucket, result.metrics()

The diffusion training loss (the scheduler's ``training_losses(...)["loss"]``: MSE of the prediction plus the
variational-bound term when the variance is learned) of every held-out clip at ``num_eval_timesteps`` evenly
spaced timesteps: ``linspace(0, num_timesteps, n + 2)[1:-1]`` rounded to schedule indices (the two ends left
out, as the reference does). Reported

- per timestep: the mean over clips at that timestep (``val_loss/t0091``);
- per bucket (``{H}x{W}x{T}`` of the clip in pixels): the mean over its clips and the timesteps
  (``val_loss/bucket/16x16x4``);
- overall (``val_loss``): the mean over every (clip, timestep) pair;
- per clip and timestep (``per_sample``, keyed by the clip's path and bucket) for paired comparisons.

Deterministic for a fixed ``seed``: each clip's noise is drawn from its own generator keyed by ``(seed, key)``
and reused at every timestep (so results do not depend on the batch size or the order of clips); temporal
crops and VAE posterior draws are keyed by the seed too. The model runs in eval mode (no caption dropout).
Unlike the reference the timesteps are integer schedule indices and the clips of a table are scored in one
pass (buckets come from the data, not from looping over ``bucket_config``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VAL_LOSS = "val_loss"


def eval_timesteps(num_timesteps: int, num_eval_timesteps: int) -> list[int]:
    """``num_eval_timesteps`` evenly spaced schedule indices strictly inside ``(0, num_timesteps)``."""
    if num_eval_timesteps < 1:
        raise ValueError(f"num_eval_timesteps must be >= 1, got {num_eval_timesteps}")
    if num_timesteps < 2:
        raise ValueError(f"the schedule needs at least 2 timesteps, has {num_timesteps}")
    step = num_timesteps / (num_eval_timesteps + 1)
    values = [min(num_timesteps - 1, max(0, round(step * (i + 1)))) for i in range(num_eval_timesteps)]
    return sorted(set(values))


def timestep_name(t: int) -> str:
    """The metric suffix of timestep ``t``: ``t0091``."""
    return f"t{t:04d}"


@dataclass
class ValBatch:
    """Latents of clips from one bucket, with the model's conditioning and one key per clip."""

    keys: list[str]
    bucket: str
    x: Any  # [B, C, T, H, W] latents
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValLossResult:
    """What :func:`validation_loss` measured (module docstring)."""

    timesteps: list[int]
    per_timestep: dict[int, float]
    per_bucket: dict[str, float]
    overall: float
    per_sample: dict[str, list[float]]  # key -> loss at each of ``timesteps``

    @property
    def num_samples(self) -> int:
        """Number of clips scored."""
        return len(self.per_sample)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics: ``val_loss``, ``val_loss/t0091``..., ``val_loss/bucket/16x16x4``..."""
        out = {f"{prefix}{VAL_LOSS}": self.overall}
        out.update({f"{prefix}{VAL_LOSS}/{timestep_name(t)}": v for t, v in self.per_timestep.items()})
        out.update({f"{prefix}{VAL_LOSS}/bucket/{b}": v for b, v in self.per_bucket.items()})
        return out

    def pairs(self) -> dict[str, float]:
        """``{"key|t0091": loss}`` for every clip and timestep (what paired comparisons match on)."""
        return {
            f"{key}|{timestep_name(t)}": value
            for key, values in self.per_sample.items()
            for t, value in zip(self.timesteps, values, strict=True)
        }

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (report files)."""
        return {
            "timesteps": self.timesteps,
            "overall": self.overall,
            "per_timestep": {timestep_name(t): v for t, v in self.per_timestep.items()},
            "per_bucket": self.per_bucket,
            "per_sample": self.per_sample,
        }


def clip_noise(shape: tuple[int, ...], seed: int, key: str, device: Any = "cpu", dtype: Any = None) -> Any:
    """The fixed noise of one clip: ``randn(shape)`` from a generator keyed by ``(seed, key)``."""
    import torch

    from opensora_core.utils.seeding import derive_seed

    gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "val-noise", key))
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)


def validation_loss(
    model: Any, scheduler: Any, batches: Iterable[ValBatch], timesteps: list[int], seed: int = 0
) -> ValLossResult:
    """The loss of ``model`` on ``batches`` at ``timesteps`` (indices into ``scheduler``'s schedule).

    ``model`` is called as ``model(x_t, t, **model_kwargs)`` through ``scheduler.training_losses``; a key seen
    twice is an error (it would be counted twice and break pairing).
    """
    import torch

    per_sample: dict[str, list[float]] = {}
    bucket_of: dict[str, str] = {}
    with torch.no_grad():
        for batch in batches:
            x = batch.x
            if len(batch.keys) != x.shape[0]:
                raise ValueError(f"{len(batch.keys)} keys for a batch of {x.shape[0]} clips")
            noise = torch.stack(
                [clip_noise(tuple(x.shape[1:]), seed, k, x.device, x.dtype) for k in batch.keys]
            )
            losses = []
            for t in timesteps:
                tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
                terms = scheduler.training_losses(model, x, tt, model_kwargs=batch.model_kwargs, noise=noise)
                losses.append(terms["loss"].detach().double().cpu())
            table = torch.stack(losses, dim=1)  # [B, len(timesteps)]
            for key, row in zip(batch.keys, table.tolist(), strict=True):
                if key in per_sample:
                    raise ValueError(f"clip {key!r} appears twice in the evaluation data")
                per_sample[key] = row
                bucket_of[key] = batch.bucket
    if not per_sample:
        raise ValueError("no clips to evaluate: the held-out table is empty")
    rows = list(per_sample.values())
    per_timestep = {t: _mean(r[i] for r in rows) for i, t in enumerate(timesteps)}
    per_bucket = {
        b: _mean(v for k, r in per_sample.items() if bucket_of[k] == b for v in r)
        for b in sorted(set(bucket_of.values()))
    }
    overall = _mean(v for r in rows for v in r)
    return ValLossResult(list(timesteps), per_timestep, per_bucket, overall, per_sample)


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


# ------------------------------------------------------------------------------------------- checkpoints
def _eval_config(config: str | Path, weights: str | Path | None, table: str) -> Any:
    """The checkpoint's training config reading ``table``, with the plain IDDPM loss (no SpeeDiffusion
    reweighting) and caption dropout irrelevant (the model runs in eval mode)."""
    from opensora_core.config import load_config

    base = load_config(config)
    if base.scheduler.type not in ("iddpm", "iddpm-speed"):
        raise ValueError(
            f"scheduler.type {base.scheduler.type!r} of {config}: validation loss is measured at IDDPM "
            "timestep indices, so it supports checkpoints trained with iddpm or iddpm-speed (not yet rflow)"
        )
    overrides: dict[str, Any] = {
        "dataset.data_path": table,
        "model.from_pretrained": None if weights is None else str(weights),
        "num_workers": 0,
    }
    if base.scheduler.type == "iddpm-speed":
        overrides["scheduler.type"] = "iddpm"
    return load_config(config, overrides=overrides)


def _batches(cfg: Any, comps: Any, batch_size: int, seed: int, device: Any) -> Iterator[ValBatch]:
    """The held-out clips in table order, batched within buckets, encoded and conditioned."""
    import torch

    from opensora_core.train.components import KeyedDataset, build_dataset
    from opensora_core.utils.seeding import derive_seed

    dataset = build_dataset(cfg)
    keyed = KeyedDataset(dataset, seed)
    if cfg.dataset.type == "VariableVideoTextDataset":
        from opensora_core.data.sampler import VariableVideoBatchSampler

        sampler = VariableVideoBatchSampler(
            dataset, cfg.bucket_config, num_replicas=1, rank=0, shuffle=False, seed=seed, drop_last=False
        )
        index_batches = [list(b) for b in sampler]
    else:
        n = len(dataset)
        index_batches = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    for number, indices in enumerate(index_batches):
        items = [keyed[i] for i in indices]
        video = torch.stack([item["video"] for item in items]).to(device)  # [B, 3, T, H, W]
        _, _, t, h, w = video.shape
        bucket = f"{h}x{w}x{t}"
        rows = [int(str(i).split("-")[0]) for i in indices]
        keys = [f"{dataset.data.iloc[r]['path']}@{bucket}" for r in rows]
        gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "val-vae", number))
        x = comps.vae.encode(video, generator=gen).float()  # [B, C, T', H', W']
        kwargs = dict(comps.text_encoder.encode([str(item["text"]) for item in items]))
        for key in comps.video_info:
            if key in items[0]:
                kwargs[key] = torch.as_tensor([float(item[key]) for item in items], device=device)
        yield ValBatch(keys, bucket, x, kwargs)


def checkpoint_val_loss(
    config: str | Path,
    weights: str | Path | None,
    table: str,
    *,
    num_eval_timesteps: int = 10,
    seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
) -> ValLossResult:
    """Validation loss of the weights file ``weights`` (None: the seeded fresh initialisation) of a training
    checkpoint's resolved ``config`` (``config.json``) on the held-out metadata ``table`` (module docstring)."""
    import torch

    from opensora_core.models.checkpoint import load_checkpoint
    from opensora_core.train.components import build_components

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = _eval_config(config, weights, table)
    comps = build_components(cfg, dev, load_pretrained=False)  # seeded fresh init, then the weights
    if weights is not None:
        load_checkpoint(comps.model, str(weights), strict=True)
    comps.model.eval()
    timesteps = eval_timesteps(comps.scheduler.num_timesteps, num_eval_timesteps)
    return validation_loss(
        comps.model, comps.scheduler, _batches(cfg, comps, batch_size, seed, dev), timesteps, seed
    )


def paired_difference(candidate: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Paired comparison of two ``{key: value}`` maps on the same keys: ``n``, ``mean_diff`` (candidate minus
    reference), ``reference_mean``, ``candidate_lower`` (fraction of keys where the candidate is lower).

    ValueError when the keys differ (the two were not measured on the same clips, timesteps and seeds)."""
    if set(candidate) != set(reference) or not candidate:
        only_c, only_r = sorted(set(candidate) - set(reference)), sorted(set(reference) - set(candidate))
        raise ValueError(
            f"paired comparison needs the same keys: {len(only_c)} only in the candidate (e.g. {only_c[:2]}), "
            f"{len(only_r)} only in the reference (e.g. {only_r[:2]})"
        )
    keys = sorted(candidate)
    diffs = [candidate[k] - reference[k] for k in keys]
    return {
        "n": float(len(keys)),
        "mean_diff": _mean(diffs),
        "reference_mean": _mean(reference[k] for k in keys),
        "candidate_lower": sum(d < 0 for d in diffs) / len(diffs),
    }
