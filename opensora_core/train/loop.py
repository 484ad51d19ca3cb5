"""The training loop: ``train(cfg) -> TrainResult`` (``python -m opensora_core.train`` calls it under torchrun).

One step (every rank): take a batch, encode video (VAE) and captions (text encoder) without gradients, draw
frame masks (``mask_ratios``), timesteps and noise from the step's keyed generator, compute the IDDPM
(``iddpm`` / ``iddpm-speed``) losses under autocast with the mask passed both to ``training_losses(mask=)``
and to the model as ``x_mask``; all-reduce the loss and a non-finite flag so every rank agrees on skipping a
bad step; backward, clip, AdamW step (through the backend), EMA update. Caption dropout is the model's own
``class_dropout_prob`` in train mode. Every ``log_every`` steps rank 0 writes a ``key=value`` log line and
tracker metrics; every ``ckpt_every`` steps (and at the end) an atomic checkpoint is written; every
``preview_every`` steps rank 0 samples the preview grid (:mod:`opensora_core.train.preview`); at the end rank 0
writes the final metrics file (step, metrics, checkpoint, MLflow run id) into the experiment folder.

Bad steps: a step whose loss or gradient norm is not finite is skipped (no update, no EMA) and counted; after
``max_bad_steps`` consecutive bad steps (0 = never) a checkpoint is saved and :class:`TrainingAborted` raised.

Fault injection for tests (a NaN loss at given steps, a pause after a step so a test can SIGKILL the run) is
requested through environment variables and lives in :mod:`opensora_core.testing.faults`; the loop only calls
its two hooks.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from opensora_core import checkpoint as ckpt
from opensora_core.config import RunConfig
from opensora_core.io import storage
from opensora_core.parallel import (
    DistEnv,
    apply_sequence_parallel,
    build_backend,
    build_mesh,
    init_distributed,
)
from opensora_core.parallel.backends import save_synced
from opensora_core.schedulers.registry import scheduler_caps
from opensora_core.testing.faults import Faults
from opensora_core.train.components import build_components, build_data, ensure_synthetic_data
from opensora_core.train.ema import EMA
from opensora_core.train.preemption import Preempted, PreemptionWatch, grace_from_env
from opensora_core.train.reporting import (
    METRIC_NAMES,
    format_eta,
    format_log_line,
    run_tags,
    start_tracker,
)
from opensora_core.train.rng import (
    capture_rng_state,
    restore_rng_state,
    step_generator,
)
from opensora_core.train.save_policy import SaveGuard
from opensora_core.train.throughput import (
    ThroughputMeter,
    count_forward_flops,
    peak_flops_per_device,
    tokens_per_sample,
)
from opensora_core.utils.seeding import derive_seed

if TYPE_CHECKING:
    from opensora_core.data.mask import MaskGenerator

logger = logging.getLogger(__name__)

ABORT_EXIT_CODE = 3
# At the end of a run the tracker gets this long to deliver buffered metrics (e.g. after an MLflow outage);
# after that the run ends anyway and a warning names the metrics that were not sent.
TRACKING_CLOSE_TIMEOUT_S = 120.0


@dataclass
class TrainResult:
    """Outcome of :func:`train`: the final checkpoint URI and the last metrics."""

    checkpoint_dir: str | None
    final_metrics: dict[str, float] = field(default_factory=dict)
    experiment_dir: str | None = None
    global_step: int = 0
    mlflow_run_id: str | None = None


class TrainingAborted(RuntimeError):
    """Too many consecutive bad steps; a checkpoint was saved first (``checkpoint_dir``)."""

    def __init__(self, message: str, checkpoint_dir: str | None) -> None:
        super().__init__(message)
        self.checkpoint_dir = checkpoint_dir


@dataclass
class _StepOutcome:
    loss: float
    grad_norm: float | None
    bad: bool
    overflow: bool
    samples: float
    tokens: float
    preempt: bool = False  # some rank got SIGTERM (agreed in the step's all-reduce): stop after this step


def warmup_lr(base_lr: float, step: int, warmup_steps: int) -> float:
    """Learning rate of global step ``step`` (1-based): linear from ``base_lr / warmup_steps`` to ``base_lr``."""
    if warmup_steps <= 0:
        return base_lr
    return base_lr * min(1.0, step / warmup_steps)


class Trainer:
    """One training run on one rank (built and driven by :func:`train`)."""

    def __init__(self, cfg: RunConfig, env: DistEnv, use_ema: bool = True) -> None:
        self.cfg = cfg
        self.env = env
        self.use_ema = use_ema
        self.mesh = build_mesh(env, cfg.sp_size)
        self.device = env.device
        self.is_main = env.rank == 0
        self.epoch = 0
        self.step = 0  # batches consumed in the current epoch
        self.global_step = 0
        self.bad_steps_total = 0
        self.consecutive_bad = 0
        self.overflow_steps = 0
        self.last_checkpoint: str | None = None
        self.last_checkpoint_step = -1
        self.preemption: PreemptionWatch | None = None
        self.final_metrics: dict[str, float] = {}
        self.tracker: Any = None
        self.run_id: str | None = None
        self.faults = Faults.from_env()
        self._window_loss = 0.0
        self._window_good = 0
        self._window_grad: list[float] = []
        self._tmp_dirs: list[str] = []
        self._log_handler: logging.Handler | None = None

    # ================================================================================ setup
    def setup(self) -> None:
        """Resolve the checkpoint and experiment folder, build everything, restore state."""
        cfg, env = self.cfg, self.env
        load_uri = self._on_rank0("resolving --load", self._resolve_load) if cfg.load else None
        if load_uri:
            logger.info(
                "resuming from %s%s", load_uri, " (start from scratch)" if cfg.start_from_scratch else ""
            )
        self.load_dir = ckpt.fetch_checkpoint(env, load_uri) if load_uri else None
        self.load_uri = load_uri
        self.exp_dir = self._on_rank0(
            "choosing the experiment folder", lambda: self._choose_experiment_dir(load_uri)
        )
        self._prepare_experiment_dir()
        self._on_rank0("generating the synthetic data set", lambda: ensure_synthetic_data(cfg))
        self.comps = build_components(cfg, self.device, load_pretrained=self.load_dir is None)
        if self.load_dir is not None:
            state = ckpt.load_safetensors(self.load_dir / ckpt.MODEL_FILE)
            self.comps.model.load_state_dict(state, strict=True)
        model = apply_sequence_parallel(self.comps.model, self.mesh.sp_group)
        self.backend = build_backend(
            cfg.plugin,
            model,
            self.mesh,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            adam_eps=cfg.adam_eps,
            dtype=cfg.dtype,
            grad_clip=cfg.grad_clip,
        )
        self.ema = EMA(self.backend.module, decay=cfg.ema_decay) if self.use_ema else None
        self.previewer = self._build_previewer() if cfg.preview_every and self.is_main else None
        self.data = build_data(cfg, self.mesh.dp_size, self.mesh.dp_rank, self.device)
        running: dict[str, Any] = {}
        if self.load_dir is not None:
            running = self._restore(self.load_dir)
        self.mask_generator = self._mask_generator()
        self.run_id = None if cfg.start_from_scratch else running.get("mlflow_run_id")
        if self.is_main:
            self._start_tracking(resumed=bool(running) and not cfg.start_from_scratch)
        self.save_guard = SaveGuard(
            retries=cfg.save_retries,
            backoff_s=cfg.save_retry_backoff_s,
            max_failed_saves=cfg.max_failed_saves,
            final_retries=cfg.final_save_retries,
            tracker=self.tracker,
        )
        self.meter = ThroughputMeter(num_devices=self.env.world_size)
        self._flops_counted = False
        logger.info(
            "training %s (%.2fM trainable params) with backend %s on %d rank(s) (dp %d x sp %d), device %s, "
            "dtype %s; experiment %s",
            cfg.model.type,
            sum(p.numel() for p in self.backend.module.parameters() if p.requires_grad) / 1e6,
            self.backend.name,
            env.world_size,
            self.mesh.dp_size,
            self.mesh.sp_size,
            self.device,
            cfg.dtype,
            self.exp_dir,
        )

    def _build_previewer(self) -> Any:
        """Rank 0's preview sampler: a plain copy of the architecture (its initial weights are replaced at
        every preview; built under a forked RNG so the run's random state does not depend on previews)."""
        from opensora_core.models import build_model
        from opensora_core.train.components import model_build_kwargs
        from opensora_core.train.preview import PreviewSampler

        comps = self.comps
        with torch.random.fork_rng(devices=[]):
            model = build_model(
                self.cfg.model.type, **model_build_kwargs(self.cfg, comps.vae, comps.text_encoder)
            )
        return PreviewSampler(self.cfg, model.to(self.device), comps.vae, comps.text_encoder)

    def _on_rank0(self, what: str, fn: Any) -> Any:
        """Run ``fn`` on rank 0 and give its result to every rank; a failure is raised on every rank."""
        value, error, exc = None, None, None
        if self.is_main:
            try:
                value = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error, exc = f"{type(e).__name__}: {e}", e
        value, error = self.env.broadcast_object((value, error))
        if exc is not None:
            raise exc
        if error is not None:
            raise ckpt.CheckpointError(f"{what} failed on rank 0: {error}")
        return value

    def _resolve_load(self) -> str | None:
        """The checkpoint URI of ``load``; ``latest`` without any checkpoint starts a fresh run (so a job
        can always pass ``--load latest`` and resume after a restart)."""
        cfg = self.cfg
        if cfg.load == "latest" and ckpt.find_latest_checkpoint(cfg.outputs, cfg.model.type) is None:
            logger.warning(
                "--load latest: no complete checkpoint under %s yet; starting a new run", cfg.outputs
            )
            return None
        return ckpt.resolve_load(cfg.load, cfg.outputs, cfg.model.type)

    def _choose_experiment_dir(self, load_uri: str | None) -> str:
        """Continue the experiment a resumed checkpoint belongs to (when under ``outputs``), else a new one."""
        cfg = self.cfg
        if load_uri and not cfg.start_from_scratch:
            parent = load_uri.rstrip("/").rsplit("/", 1)[0]
            candidate = storage.join(cfg.outputs, parent.rsplit("/", 1)[-1])
            if storage.parse_uri(parent).is_local and storage.parse_uri(candidate).is_local:
                same = (
                    storage.parse_uri(parent).local_path.resolve()
                    == storage.parse_uri(candidate).local_path.resolve()
                )
            else:
                same = candidate == parent
            if same:
                return parent
        if cfg.experiment_folder == "latest" and not cfg.start_from_scratch:
            latest = ckpt.latest_experiment_dir(cfg.outputs, cfg.model.type)
            if latest is not None:
                return latest
        return ckpt.next_experiment_dir(cfg.outputs, cfg.model.type)

    def _prepare_experiment_dir(self) -> None:
        """Rank 0: create the experiment folder, save the resolved config, add the log.txt handler."""
        u = storage.parse_uri(self.exp_dir)

        def prepare() -> None:
            if u.is_local:
                u.local_path.mkdir(parents=True, exist_ok=True)
                self.config_file, _ = self.cfg.save(u.local_path, ckpt.CONFIG_STEM)
                self._log_handler = logging.FileHandler(u.local_path / ckpt.LOG_FILE)
                self._log_handler.setFormatter(
                    logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
                )
                logging.getLogger().addHandler(self._log_handler)
            else:
                tmp = tempfile.mkdtemp(prefix="opensora-run-")
                self._tmp_dirs.append(tmp)
                self.config_file, _ = self.cfg.save(tmp, ckpt.CONFIG_STEM)

        self._on_rank0(f"preparing {self.exp_dir}", prepare)

    def _restore(self, folder: Path) -> dict[str, Any]:
        """Load EMA, optimizer, sampler, counters and RNG from a local checkpoint folder."""
        cfg, env = self.cfg, self.env
        running = ckpt.read_running_states(folder)
        if self.ema is not None:
            ema_path = folder / ckpt.EMA_FILE
            if ema_path.is_file():
                self.ema.load_state_dict(ckpt.load_safetensors(ema_path))
            else:
                logger.warning("%s has no %s: the EMA starts from the loaded weights", folder, ckpt.EMA_FILE)
        self.backend.load_optimizer(ckpt.OptimizerFiles(folder))
        if cfg.start_from_scratch:
            logger.info("start from scratch: weights and optimizer loaded; epoch, step and sampler reset")
            return running
        self.epoch = int(running["epoch"])
        self.step = int(running["step"])
        self.global_step = int(running["global_step"])
        self.bad_steps_total = int(running.get("bad_steps_total", 0))
        self.last_checkpoint = self.load_uri
        self.last_checkpoint_step = self.global_step
        sampler_path = folder / ckpt.SAMPLER_FILE
        if sampler_path.is_file():
            self.data.sampler.load_state_dict(ckpt.read_json(sampler_path))
        else:
            logger.warning("%s has no sampler state: the epoch restarts from its beginning", folder)
            self.step = 0
        saved_world = int(running.get("world_size", env.world_size))
        rng_path = ckpt.rng_file(folder, env.rank)
        if saved_world == env.world_size and rng_path.is_file():
            restore_rng_state(torch.load(rng_path, map_location="cpu", weights_only=True))
        else:
            logger.warning(
                "RNG states not restored (saved by %d rank(s), now %d): training draws are keyed by step and "
                "unaffected; other users of the global generators start fresh",
                saved_world,
                env.world_size,
            )
        logger.info("resumed at epoch %d, step %d, global step %d", self.epoch, self.step, self.global_step)
        return running

    def _start_tracking(self, resumed: bool) -> None:
        extra = {
            "experiment_dir": self.exp_dir,
            "world_size": self.env.world_size,
            "backend": self.backend.name,
        }
        if self.load_uri:
            extra["loaded_from"] = self.load_uri
        tags = run_tags(self.cfg, extra)
        self.tracker = start_tracker(
            self.cfg, self.run_id, getattr(self, "config_file", None), tags, resumed=resumed
        )

    # ================================================================================ one step
    def _model_kwargs(self, batch: dict[str, Any], x: torch.Tensor) -> dict[str, Any]:
        with torch.no_grad():
            encoded = self.comps.text_encoder.encode(list(batch["text"]))
        kwargs = {k: v.to(self.device) for k, v in encoded.items()}  # text_encoder.device may be "cpu"
        for key in self.comps.video_info:
            if key in batch:
                kwargs[key] = torch.as_tensor(batch[key]).to(self.device)
        return kwargs

    def _mask_generator(self) -> MaskGenerator | None:
        """The ``mask_ratios`` generator (built once; each step reseeds it), ``None`` without mask_ratios."""
        if not self.cfg.mask_ratios:
            return None
        from opensora_core.data.mask import MaskGenerator

        return MaskGenerator(self.cfg.mask_ratios)

    def _frame_mask(self, x: torch.Tensor, seed: int) -> torch.Tensor | None:
        if self.mask_generator is None:
            return None
        self.mask_generator.rng = random.Random(seed)  # keyed by the step, as every draw of the step
        return self.mask_generator.get_masks(x)

    def _count_flops(self, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> None:
        self._flops_counted = True
        try:
            one = {k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in kwargs.items()}
            flops = count_forward_flops(self.backend.module, (x[:1], t[:1]), one)
            tokens = tokens_per_sample(x.shape[1:], self.comps.patch_size)
            self.meter.flops_per_token = flops / max(1, tokens)
            self.meter.peak_flops = peak_flops_per_device(self.device, self.cfg.dtype)
            logger.info(
                "model forward: %.3f GFLOP per sample (%d tokens), peak %s FLOP/s per device",
                flops / 1e9,
                tokens,
                f"{self.meter.peak_flops:.3g}" if self.meter.peak_flops else "unknown",
            )
        except Exception as e:  # noqa: BLE001 - MFU is a metric, never a reason to stop
            logger.warning("FLOP count failed (%s: %s); MFU not reported", type(e).__name__, e)

    def _train_step(self, batch: dict[str, Any]) -> _StepOutcome:
        cfg = self.cfg
        step_number = self.global_step + 1
        seed = derive_seed(cfg.seed, "step", self.mesh.dp_rank, step_number)
        torch.manual_seed(seed)  # caption dropout and drop-path of this step
        gen = step_generator(seed, self.device)

        video = batch["video"].to(self.device, non_blocking=True)
        with torch.no_grad():
            x = self.comps.vae.encode(video, generator=gen).float()  # [B, C, T, H, W]
        model_kwargs = self._model_kwargs(batch, x)
        frame_mask = self._frame_mask(x, seed)
        if frame_mask is not None:
            model_kwargs["x_mask"] = frame_mask
        scheduler = self.comps.scheduler
        caps = scheduler_caps(cfg.scheduler.type)
        t: torch.Tensor | None = None
        noise: torch.Tensor | None = None
        if not caps.draws_timesteps:  # rflow draws t (its distribution + transform) and noise itself
            t = torch.randint(0, scheduler.num_timesteps, (x.shape[0],), generator=gen, device=self.device)
            noise = torch.randn(x.shape, generator=gen, device=self.device, dtype=x.dtype)
        if not self._flops_counted:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # the step's draws must not depend on this
                flop_t = t if t is not None else torch.zeros(x.shape[0], device=self.device)
                self._count_flops(x, flop_t, model_kwargs)

        extra = {"generator": gen} if caps.loss_generator else {}
        with self.backend.autocast():
            terms = scheduler.training_losses(
                self.backend.model, x, t=t, model_kwargs=model_kwargs, noise=noise, mask=frame_mask, **extra
            )
            loss = terms["loss"].mean()
        loss = self.faults.poison_loss(loss, step_number, self.env.rank)

        samples = float(x.shape[0])
        tokens = samples * tokens_per_sample(x.shape[1:], self.comps.patch_size)
        local_loss = loss.detach().float().item()  # the step's one host sync before the all-reduce
        local_bad = 0.0 if math.isfinite(local_loss) else 1.0
        signalled = 1.0 if self.preemption is not None and self.preemption.signalled else 0.0
        stats = torch.tensor(  # one all-reduce per step carries the loss, bad flag, counts and SIGTERM flag
            [local_loss if local_bad == 0 else 0.0, local_bad, samples, tokens, signalled],
            dtype=torch.float64,
            device=self.device if self.env.backend == "nccl" else "cpu",
        )
        self.env.all_reduce(stats)
        world = self.env.world_size
        sp = self.mesh.sp_size
        mean_loss = float(stats[0]) / world
        bad = float(stats[1]) > 0
        preempt = float(stats[4]) > 0
        if bad:
            self.backend.zero_grad()
            return _StepOutcome(
                float("nan"), None, True, False, float(stats[2]) / sp, float(stats[3]) / sp, preempt
            )

        self.backend.set_lr(warmup_lr(cfg.lr, step_number, cfg.warmup_steps))
        self.backend.backward(loss)
        grad_norm = self.backend.step()
        overflow = self.backend.last_step_overflow
        bad = self.backend.last_step_skipped and not overflow
        if not self.backend.last_step_skipped and self.ema is not None:
            self.ema.update(self.backend.module)
        return _StepOutcome(
            mean_loss, grad_norm, bad, overflow, float(stats[2]) / sp, float(stats[3]) / sp, preempt
        )

    # ================================================================================ loop
    def run(self) -> TrainResult:
        """Train until ``max_steps`` or ``epochs``; returns the result (raises TrainingAborted)."""
        cfg = self.cfg
        max_steps = cfg.max_steps if cfg.max_steps is not None else math.inf
        done = self.global_step >= max_steps
        self.data.set_epoch(self.epoch)
        steps_per_epoch = self.step + len(self.data.loader)
        if steps_per_epoch == 0:
            raise ValueError(
                f"the dataset yields no batch per rank (batch_size {cfg.batch_size}, {self.mesh.dp_size} "
                "data-parallel ranks, drop_last): add data or lower batch_size"
            )
        total = min(max_steps, cfg.epochs * steps_per_epoch)
        pbar = self._progress(total)
        self.meter.start()
        start_epoch = self.epoch
        iter_start = self.step
        for epoch in range(start_epoch, cfg.epochs):
            if done:
                break
            if epoch != start_epoch:
                self.epoch, self.step = epoch, 0
                self.data.set_epoch(epoch)
            iter_start = self.step
            for batch in self.data.loader:
                outcome = self._train_step(batch)
                self.step += 1
                self.global_step += 1
                self.meter.step(outcome.samples, outcome.tokens)
                self._account(outcome)
                if pbar is not None:
                    pbar.update(1)
                    if math.isfinite(outcome.loss):
                        pbar.set_postfix(loss=f"{outcome.loss:.4f}", refresh=False)
                if self.global_step % cfg.log_every == 0:
                    self._log(total)
                if cfg.max_bad_steps and self.consecutive_bad >= cfg.max_bad_steps:
                    self._abort(iter_start)
                if cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0:
                    self.save_guard.periodic(functools.partial(self.save, iter_start), self.global_step)
                if cfg.preview_every and self.global_step % cfg.preview_every == 0:
                    self.preview()
                if outcome.preempt:
                    self._preempt(iter_start)
                self.faults.pause_if_due(self.global_step)
                if self.global_step >= max_steps:
                    done = True
                    break
        if pbar is not None:
            pbar.close()
        if self._window_good or self._window_grad or self.meter.metrics():
            self._log(total)
        if self.last_checkpoint_step != self.global_step:
            self.save_guard.final(lambda: self.save(iter_start), self.global_step)
        return TrainResult(
            checkpoint_dir=self.last_checkpoint,
            final_metrics=dict(self.final_metrics),
            experiment_dir=self.exp_dir,
            global_step=self.global_step,
            mlflow_run_id=self.run_id,
        )

    def _progress(self, total: float) -> Any:
        if not self.is_main or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(
            total=None if math.isinf(total) else int(total),
            initial=self.global_step,
            desc="train",
            dynamic_ncols=True,
        )

    def _account(self, outcome: _StepOutcome) -> None:
        if outcome.overflow:
            self.overflow_steps += 1
        if outcome.bad:
            self.bad_steps_total += 1
            self.consecutive_bad += 1
            if not self.is_main:
                return
            logger.warning(
                "step %d: non-finite %s; step skipped (%d consecutive, %d total)",
                self.global_step,
                "loss" if outcome.grad_norm is None else "gradient norm",
                self.consecutive_bad,
                self.bad_steps_total,
            )
            return
        if outcome.overflow:
            return
        self.consecutive_bad = 0
        self._window_loss += outcome.loss
        self._window_good += 1
        if outcome.grad_norm is not None:
            self._window_grad.append(outcome.grad_norm)

    def _log(self, total: float) -> None:
        perf = self.meter.metrics()
        loss = self._window_loss / self._window_good if self._window_good else float("nan")
        grad = sum(self._window_grad) / len(self._window_grad) if self._window_grad else None
        remaining = (total - self.global_step) if math.isfinite(total) else None
        eta = perf.get("step_time_s", 0.0) * remaining if remaining is not None else None
        values: dict[str, Any] = {
            "step": self.global_step,
            "epoch": self.epoch,
            "loss": loss,
            "grad_norm": grad,
            "lr": self.backend.lr,
            "samples/s": perf.get("samples_per_s"),
            "tokens/s": perf.get("tokens_per_s"),
            "step_time": perf.get("step_time_s"),
            "mfu": perf.get("mfu"),
            "bad_steps": self.bad_steps_total,
        }
        if self.cfg.dtype == "fp16":
            values["overflow_steps"] = self.overflow_steps
        values["eta"] = format_eta(eta)
        metrics = {
            METRIC_NAMES[k]: float(v)
            for k, v in values.items()
            if k in METRIC_NAMES and v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        self.final_metrics = {**metrics, "global_step": float(self.global_step)}
        if self.is_main:
            logger.info(format_log_line(values))
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, step=self.global_step)
        self._window_loss, self._window_good, self._window_grad = 0.0, 0, []
        self.meter.reset_window()

    # ================================================================================ preview
    def preview(self) -> None:
        """Sample the preview grid of this step and log it (collective: every rank gathers the weights).

        A failing preview is reported and training goes on: the grid is for people, not for the run.
        """
        from opensora_core.train.preview import PREVIEW_KEY

        t0 = time.perf_counter()
        state = self.ema.state_dict() if self.ema is not None else self.backend.model_state_dict()
        if self.previewer is not None:
            try:
                from opensora_core.utils.grid import encode_png

                grid = self.previewer.grid(state, self.backend.autocast)
                name = f"global_step{self.global_step}.png"
                storage.write_bytes(storage.join(self.exp_dir, PREVIEW_KEY, name), encode_png(grid))
                if self.tracker is not None:
                    self.tracker.log_image(grid, PREVIEW_KEY, step=self.global_step)
                    self.tracker.log_metrics({"preview_s": time.perf_counter() - t0}, step=self.global_step)
            except Exception as e:  # noqa: BLE001 - see the docstring
                logger.warning("preview at step %d failed (%s: %s)", self.global_step, type(e).__name__, e)
        self.meter.start()  # preview time is not step time

    # ================================================================================ checkpoints
    def save(self, iter_start: int) -> str:
        """Write the checkpoint of the current step (collective); returns its URI."""
        cfg, env = self.cfg, self.env
        t0 = time.perf_counter()
        # both gather full tensors from sharded backends (fsdp2): collectives, so every rank calls them
        model_state = self.backend.model_state_dict()
        ema_state = self.ema.state_dict() if self.ema is not None else None
        if not self.is_main:
            model_state, ema_state = {}, None  # only rank 0 writes the weights
        sampler_state = self.data.sampler_state(self.step - iter_start, cfg.batch_size)
        running = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "sample_start_index": self.step * (cfg.batch_size or 0),
            "batch_size": cfg.batch_size,
            "mlflow_run_id": self.tracker.run_id if self.tracker is not None else self.run_id,
            "world_size": env.world_size,
            "dp_size": self.mesh.dp_size,
            "sp_size": self.mesh.sp_size,
            "backend": self.backend.name,
            "bad_steps_total": self.bad_steps_total,
            "model_type": cfg.model.type,
            "ema": self.ema is not None,
        }
        running = env.broadcast_object(running)  # rank 0 holds the tracker's run id
        metadata = {"format": "pt", "model_type": cfg.model.type, "global_step": str(self.global_step)}

        def write(folder: Path) -> None:
            save_synced(capture_rng_state(), ckpt.rng_file(folder, env.rank))
            self.backend.save_optimizer(ckpt.OptimizerFiles(folder))
            if not self.is_main:
                return
            ckpt.save_safetensors(model_state, folder / ckpt.MODEL_FILE, metadata)
            if ema_state is not None:
                ckpt.save_safetensors(
                    ema_state, folder / ckpt.EMA_FILE, {**metadata, "ema_decay": str(cfg.ema_decay)}
                )
            ckpt.write_json(sampler_state, folder / ckpt.SAMPLER_FILE)
            ckpt.write_json(running, folder / ckpt.RUNNING_STATES_FILE)
            cfg.save(folder, ckpt.CONFIG_STEM)

        name = ckpt.checkpoint_name(self.epoch, self.global_step)
        uri = ckpt.save_checkpoint(
            env,
            self.exp_dir,
            name,
            write,
            keep_last_n=cfg.keep_last_n,
            marker={"global_step": self.global_step, "world_size": env.world_size},
        )
        self.last_checkpoint = uri
        self.last_checkpoint_step = self.global_step
        seconds = time.perf_counter() - t0
        if self.is_main:
            logger.info("checkpoint %s written in %.2fs", uri, seconds)
            if self.tracker is not None:
                self.tracker.log_metrics({"checkpoint_save_s": seconds}, step=self.global_step)
        self.meter.start()  # checkpoint time is not step time
        return uri

    def _preempt(self, iter_start: int) -> None:
        """Stop on SIGTERM (every rank, same step): save if the grace period allows, then raise Preempted."""
        saved = False
        if self.last_checkpoint_step != self.global_step and self.preemption.should_save(
            self.env, self.save_guard.last_save_s
        ):
            try:
                self.save(iter_start)
                saved = True
            except ckpt.CheckpointError as e:  # the previous checkpoint is intact: exit resumable anyway
                logger.error("preemption checkpoint failed (%s); resuming from %s", e, self.last_checkpoint)
        raise Preempted(
            self.global_step, self.last_checkpoint, saved or self.last_checkpoint_step == self.global_step
        )

    def _abort(self, iter_start: int) -> None:
        uri = self.save(iter_start)
        raise TrainingAborted(
            f"{self.consecutive_bad} consecutive steps with a non-finite loss or gradient norm "
            f"(max_bad_steps={self.cfg.max_bad_steps}) at global step {self.global_step}; the weights are "
            f"those of the last good step, saved in {uri}. Lower lr, check the data, or use dtype bf16/fp32.",
            uri,
        )

    def write_final_metrics(self, result: TrainResult) -> None:
        """Rank 0: write the run's final summary (``final_metrics.json`` of the checkpoint layout) into the
        experiment folder, so the pipeline reads the outcome from a file rather than from the log."""
        summary = {
            "global_step": result.global_step,
            "epoch": self.epoch,
            "checkpoint": result.checkpoint_dir,
            "experiment_dir": result.experiment_dir,
            "metrics": result.final_metrics,
            "mlflow_run_id": result.mlflow_run_id,
            "world_size": self.env.world_size,
        }
        self._on_rank0("writing the final metrics", lambda: ckpt.write_final_metrics(self.exp_dir, summary))

    def close(self, status: str) -> None:
        """Finish tracking (a failed run waits less for an unreachable server) and release temp files."""
        if self.tracker is not None:
            timeout = TRACKING_CLOSE_TIMEOUT_S if status == "FINISHED" else 15.0
            self.tracker.close(status=status, timeout=timeout)
            self.run_id = self.tracker.run_id or self.run_id
            self.tracker = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        for tmp in self._tmp_dirs:
            shutil.rmtree(tmp, ignore_errors=True)


def train(cfg: RunConfig, *, ema: bool = True, env: DistEnv | None = None) -> TrainResult:
    """Train ``cfg`` on this process (joining the torchrun job when its environment is set).

    In-process callers (the pipeline's local launcher) get a single-process run. Returns the final
    checkpoint URI and metrics; raises :class:`TrainingAborted` after ``max_bad_steps`` bad steps.
    """
    cfg.check_ready(training=True)
    own_env = env is None
    env = env or init_distributed()
    trainer = Trainer(cfg, env, use_ema=ema and cfg.ema_decay is not None)
    trainer.preemption = PreemptionWatch(grace_from_env())
    trainer.preemption.install()
    status = "FAILED"
    try:
        trainer.setup()
        result = trainer.run()
        status = "FINISHED"
        trainer.close(status)
        result.mlflow_run_id = trainer.run_id
        trainer.write_final_metrics(result)
        return result
    except Preempted:
        status = "KILLED"  # MLflow's status for a stopped run; resuming sets it RUNNING again
        raise
    finally:
        trainer.preemption.uninstall()
        trainer.close(status)
        if own_env:
            env.close()
