"""Validation loss on a held-out metadata table, as Open-Sora 1.2 measures it (``eval/loss``).

    python -m opensora_core.eval.val_loss configs/opensora-v1-2/misc/eval_loss.py \
        --ckpt-path outputs/000-STDiT3-XL-2/epoch0-global_step400 --data-path meta.eval.csv --output loss.json
    torchrun --nproc-per-node 4 -m opensora_core.eval.val_loss ...     # the batches split over 4 ranks

    from opensora_core.eval.val_loss import checkpoint_val_loss
    result = checkpoint_val_loss("ckpt/config.json", "ckpt/ema.safetensors", "data/meta.eval.csv",
                                 num_eval_timesteps=10, seed=0)
    result.overall, result.per_timestep, result.per_bucket, result.metrics()

The diffusion training loss (the scheduler's ``training_losses(..., t=)["loss"]``) of every held-out clip at
``num_eval_timesteps`` evenly spaced timesteps ``linspace(0, N, n + 2)[1:-1]`` (the two ends left out, as the
reference does):

- rectified flow (``rflow``): the velocity loss at those times as they are (float32, no timestep transform:
  the reference passes ``t`` explicitly, which skips it);
- IDDPM (``iddpm`` / ``iddpm-speed``, scored with the plain IDDPM loss: MSE plus the variational-bound term
  when the variance is learned): the times rounded to schedule indices.

Reported

- per timestep: the mean over clips at that timestep (``val_loss/t0091``, the time rounded);
- per bucket: the mean over its clips and the timesteps (``val_loss/bucket/144p/51`` for the
  ``(resolution, num_frames)`` buckets of a ``bucket_config``, ``val_loss/bucket/16x16x4`` = ``{H}x{W}x{T}``
  for fixed-size datasets);
- overall (``val_loss``): the mean over every (clip, bucket, timestep);
- per clip and timestep (``per_sample``, keyed by the clip's path and bucket) for paired comparisons.

Buckets, as the reference: with a ``VariableVideoTextDataset`` every ``(resolution, num_frames)`` entry of
``bucket_config`` that has a batch size is evaluated on *every* clip that fits it (keep probability 1, so
Open-Sora 1.2's ``misc/eval_loss.py`` writes them as ``None``); a clip may be scored in several buckets.
``resolution`` restricts the run to one resolution (the reference's ``--resolution``).

Deterministic for a fixed ``seed``: each clip's noise is drawn from its own generator keyed by ``(seed, key)``
and reused at every timestep (the reference draws fresh global-RNG noise per batch and timestep, so its numbers
vary with batching); temporal crops and VAE posterior draws are keyed by the seed and the batch. Under
``torchrun`` the batches are dealt to ranks round-robin and gathered: the result is identical to one process.
The model runs in eval mode (no caption dropout, no frame masks).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VAL_LOSS = "val_loss"


class ValLossInputError(ValueError):
    """The held-out data or the bucket selection cannot be evaluated (the message names the fix)."""


IDDPM_TYPES = ("iddpm", "iddpm-speed")
SUPPORTED_TYPES = (*IDDPM_TYPES, "rflow")


def eval_timesteps(num_timesteps: int, num_eval_timesteps: int, discrete: bool = True) -> list[Any]:
    """``num_eval_timesteps`` evenly spaced times strictly inside ``(0, num_timesteps)``:
    ``linspace(0, N, n + 2)[1:-1]`` in float32 (rflow), or rounded to distinct schedule indices (IDDPM)."""
    if num_eval_timesteps < 1:
        raise ValueError(f"num_eval_timesteps must be >= 1, got {num_eval_timesteps}")
    if num_timesteps < 2:
        raise ValueError(f"the schedule needs at least 2 timesteps, has {num_timesteps}")
    import torch

    times = torch.linspace(0, num_timesteps, num_eval_timesteps + 2)[1:-1].tolist()
    if not discrete:
        return times
    return sorted({min(num_timesteps - 1, max(0, round(t))) for t in times})


def timestep_name(t: float) -> str:
    """The metric suffix of timestep ``t`` (rounded): ``t0091``."""
    return f"t{round(t):04d}"


@dataclass
class ValBatch:
    """Latents of clips from one bucket, with the model's conditioning and one key per clip; ``noise`` (like
    ``x``) replaces the clips' keyed noise (:func:`clip_noise`) when given."""

    keys: list[str]
    bucket: str
    x: Any  # [B, C, T, H, W] latents
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    noise: Any = None  # [B, C, T, H, W]; None: clip_noise(seed, key) per clip


@dataclass
class ValLossResult:
    """What :func:`validation_loss` measured (module docstring)."""

    timesteps: list[float]
    per_timestep: dict[float, float]
    per_bucket: dict[str, float]
    overall: float
    per_sample: dict[str, list[float]]  # key -> loss at each of ``timesteps``

    @property
    def num_samples(self) -> int:
        """Number of (clip, bucket) pairs scored."""
        return len(self.per_sample)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Scalar metrics: ``val_loss``, ``val_loss/t0091``..., ``val_loss/bucket/144p/51``..."""
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


# One scored batch: (bucket, keys, losses [B][len(timesteps)]).
Scored = tuple[str, list[str], list[list[float]]]


def score_batches(
    model: Any, scheduler: Any, batches: Iterable[ValBatch], timesteps: Sequence[float], seed: int = 0
) -> list[Scored]:
    """The loss of every clip of ``batches`` at each of ``timesteps``, batch by batch.

    ``model`` is called as ``model(x_t, t, **model_kwargs)`` through ``scheduler.training_losses(..., t=)``;
    integer timesteps are schedule indices (IDDPM), floats are times (rflow).
    """
    import torch

    out: list[Scored] = []
    with torch.no_grad():
        for batch in batches:
            x = batch.x
            if len(batch.keys) != x.shape[0]:
                raise ValueError(f"{len(batch.keys)} keys for a batch of {x.shape[0]} clips")
            noise = batch.noise
            if noise is None:
                noise = torch.stack(
                    [clip_noise(tuple(x.shape[1:]), seed, k, x.device, x.dtype) for k in batch.keys]
                )
            losses = []
            for t in timesteps:
                dtype = torch.long if isinstance(t, int) else torch.float32
                tt = torch.full((x.shape[0],), t, dtype=dtype, device=x.device)
                terms = scheduler.training_losses(
                    model, x, t=tt, model_kwargs=batch.model_kwargs, noise=noise
                )
                losses.append(terms["loss"].detach().double().cpu())
            table = torch.stack(losses, dim=1)  # [B, len(timesteps)]
            out.append((batch.bucket, list(batch.keys), table.tolist()))
    return out


def summarise(timesteps: Sequence[float], scored: Iterable[Scored]) -> ValLossResult:
    """Per-timestep, per-bucket and overall means of scored batches (in the order given); a key seen twice is
    an error (it would be counted twice and break pairing)."""
    per_sample: dict[str, list[float]] = {}
    bucket_of: dict[str, str] = {}
    for bucket, keys, rows in scored:
        for key, row in zip(keys, rows, strict=True):
            if key in per_sample:
                raise ValueError(f"clip {key!r} appears twice in the evaluation data")
            per_sample[key] = row
            bucket_of[key] = bucket
    if not per_sample:
        raise ValLossInputError(
            "no clips to evaluate: the held-out table is empty or no clip fits a bucket (check the table's "
            "num_frames / height / width against bucket_config, or --resolution)"
        )
    rows_all = list(per_sample.values())
    per_timestep = {t: _mean(r[i] for r in rows_all) for i, t in enumerate(timesteps)}
    per_bucket = {
        b: _mean(v for k, r in per_sample.items() if bucket_of[k] == b for v in r)
        for b in dict.fromkeys(bucket_of.values())
    }
    overall = _mean(v for r in rows_all for v in r)
    return ValLossResult(list(timesteps), per_timestep, per_bucket, overall, per_sample)


def validation_loss(
    model: Any, scheduler: Any, batches: Iterable[ValBatch], timesteps: Sequence[float], seed: int = 0
) -> ValLossResult:
    """The loss of ``model`` on ``batches`` at ``timesteps`` (:func:`score_batches`, then :func:`summarise`)."""
    return summarise(timesteps, score_batches(model, scheduler, batches, timesteps, seed))


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


# ------------------------------------------------------------------------------------------- data
def check_scheduler(cfg: Any, source: Any = "the config") -> None:
    """ValueError unless ``cfg.scheduler`` has a loss the validation loss can score."""
    if cfg.scheduler.type not in SUPPORTED_TYPES:
        raise ValueError(
            f"scheduler.type {cfg.scheduler.type!r} of {source}: validation loss needs a training loss; "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )


def _eval_buckets(cfg: Any, resolution: str | None) -> list[tuple[str, int, int]]:
    """``(resolution, num_frames, batch_size)`` of every bucket of ``cfg.bucket_config`` with a batch size."""
    config = cfg.bucket_config or {}
    if not config:
        raise ValLossInputError(
            "dataset.type VariableVideoTextDataset needs bucket_config to evaluate (buckets)"
        )
    if resolution is not None:
        if resolution not in config:
            raise ValLossInputError(
                f"resolution {resolution!r} is not in bucket_config (has: {', '.join(config)})"
            )
        config = {resolution: config[resolution]}
    return [(res, t, bs) for res, frames in config.items() for t, (_, bs) in frames.items() if bs is not None]


def _index_batches(
    cfg: Any, dataset: Any, batch_size: int, seed: int, resolution: str | None
) -> list[tuple[str, list[Any]]]:
    """``(bucket name, dataset indices)`` of every batch, in a fixed order (the same in every process)."""
    if cfg.dataset.type != "VariableVideoTextDataset":
        n = len(dataset)
        return [("", list(range(i, min(n, i + batch_size)))) for i in range(0, n, batch_size)]
    from opensora_core.data.sampler import VariableVideoBatchSampler

    out: list[tuple[str, list[Any]]] = []
    empty: list[str] = []
    for res, t, bs in _eval_buckets(cfg, resolution):
        sampler = VariableVideoBatchSampler(
            dataset, {res: {t: (1.0, bs)}}, num_replicas=1, rank=0, shuffle=False, seed=seed
        )
        groups = sampler.group_by_bucket()  # (res, t, ratio) -> rows; keep probability 1: no draws
        if not groups:
            empty.append(f"{res}/{t}")
        for key, rows in groups.items():
            frames, h, w = sampler.bucket.get_thw(key)
            indices = [f"{int(r)}-{frames}-{h}-{w}" for r in rows]
            out.extend((f"{res}/{t}", indices[i : i + bs]) for i in range(0, len(indices), bs))
    if empty:
        logger.info("no held-out clip fits bucket(s) %s (not reported)", ", ".join(empty))
    return out


def _encode_batch(
    comps: Any, dataset: Any, bucket: str, indices: list[Any], number: int, seed: int, device: Any
) -> ValBatch:
    """Load, encode and condition batch ``number`` (its VAE draws keyed by the seed and the number)."""
    import torch

    from opensora_core.train.components import KeyedDataset
    from opensora_core.utils.seeding import derive_seed

    keyed = KeyedDataset(dataset, seed)
    items = [keyed[i] for i in indices]
    video = torch.stack([item["video"] for item in items]).to(device)  # [B, 3, T, H, W]
    _, _, t, h, w = video.shape
    bucket = bucket or f"{h}x{w}x{t}"
    rows = [int(str(i).split("-")[0]) for i in indices]
    keys = [f"{dataset.data.iloc[r]['path']}@{bucket}" for r in rows]
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "val-vae", number))
    x = comps.vae.encode(video, generator=gen).float()  # [B, C, T', H', W']
    kwargs = dict(comps.text_encoder.encode([str(item["text"]) for item in items]))
    for key in comps.video_info:
        if key in items[0]:
            kwargs[key] = torch.as_tensor([float(item[key]) for item in items], device=device)
    return ValBatch(keys, bucket, x, kwargs)


def _batches(
    cfg: Any,
    comps: Any,
    batch_size: int,
    seed: int,
    device: Any,
    rank: int = 0,
    world_size: int = 1,
    resolution: str | None = None,
) -> Iterator[ValBatch]:
    """This rank's share (every ``world_size``-th batch) of the held-out clips, encoded and conditioned."""
    from opensora_core.train.components import build_dataset

    dataset = build_dataset(cfg)
    plan = _index_batches(cfg, dataset, batch_size, seed, resolution)
    for number in range(rank, len(plan), world_size):
        bucket, indices = plan[number]
        yield _encode_batch(comps, dataset, bucket, indices, number, seed, device)


def config_val_loss(
    cfg: Any,
    weights: str | Path | None,
    *,
    seed: int | None = None,
    batch_size: int = 8,
    device: Any = None,
    dist_env: Any = None,
    resolution: str | None = None,
) -> ValLossResult:
    """Validation loss of ``cfg`` (a RunConfig whose ``dataset.data_path`` is the held-out table) with the
    weights file ``weights`` (None: the seeded fresh initialisation), at ``cfg.num_eval_timesteps`` timesteps.

    ``batch_size`` batches fixed-size datasets (bucketed ones use the buckets' sizes); ``seed`` defaults to
    ``cfg.seed``. With a distributed ``dist_env`` (:func:`opensora_core.parallel.dist.init_distributed`) each
    rank scores every ``world_size``-th batch and every rank returns the whole, identical result.
    """
    import torch

    from opensora_core.models.checkpoint import load_checkpoint
    from opensora_core.train.components import build_components

    check_scheduler(cfg)
    if cfg.scheduler.type == "iddpm-speed":  # scored with the plain IDDPM loss (no SpeeDiffusion reweighting)
        cfg = cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"type": "iddpm"})})
    seed = cfg.seed if seed is None else seed
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    comps = build_components(cfg, dev, load_pretrained=False)  # seeded fresh init, then the weights
    if weights is not None:
        load_checkpoint(comps.model, str(weights), strict=True)
    comps.model.eval()
    discrete = cfg.scheduler.type in IDDPM_TYPES
    timesteps = eval_timesteps(comps.scheduler.num_timesteps, cfg.num_eval_timesteps, discrete)
    rank, world = (dist_env.rank, dist_env.world_size) if dist_env is not None else (0, 1)
    batches = _batches(cfg, comps, batch_size, seed, dev, rank, world, resolution)
    scored = score_batches(comps.model, comps.scheduler, batches, timesteps, seed)
    if world > 1:  # batch number rank + i * world, gathered back into the one-process order
        numbered = dist_env.all_gather_object([(rank + i * world, s) for i, s in enumerate(scored)])
        scored = [s for _, s in sorted((item for part in numbered for item in part), key=lambda it: it[0])]
    return summarise(timesteps, scored)


def _eval_config(config: str | Path, weights: str | Path | None, table: str, num_eval_timesteps: int) -> Any:
    """The checkpoint's training config reading ``table`` with ``num_eval_timesteps`` (caption dropout is
    irrelevant: the model runs in eval mode)."""
    from opensora_core.config import load_config

    base = load_config(config)
    check_scheduler(base, config)
    overrides: dict[str, Any] = {
        "dataset.data_path": table,
        "model.from_pretrained": None if weights is None else str(weights),
        "num_workers": 0,
        "num_eval_timesteps": num_eval_timesteps,
    }
    return load_config(config, overrides=overrides)


def checkpoint_val_loss(
    config: str | Path,
    weights: str | Path | None,
    table: str,
    *,
    num_eval_timesteps: int = 10,
    seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
    dist_env: Any = None,
) -> ValLossResult:
    """Validation loss of the weights file ``weights`` (None: the seeded fresh initialisation) of a training
    checkpoint's resolved ``config`` (``config.json``) on the held-out metadata ``table`` (module docstring)."""
    cfg = _eval_config(config, weights, table, num_eval_timesteps)
    return config_val_loss(cfg, weights, seed=seed, batch_size=batch_size, device=device, dist_env=dist_env)


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
