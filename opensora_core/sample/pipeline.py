"""Text-to-video sampling: build the models of a RunConfig and turn prompts into video files.

    from opensora_core.config import load_config
    from opensora_core.sample import sample, load_sampling_models
    cfg = load_config("configs/debug/tiny_sample.py")
    paths = sample(cfg, ["a red ball"])                     # -> [Path("outputs/debug/samples/sample_0.mp4")]
    model, vae, text_encoder, scheduler = load_sampling_models(cfg)   # reuse: sample(cfg, models=...)

Conventions (the same as training, so trained weights see the inputs they were trained with):

* **Aspect ratio**: the STDiT2 / PixArtMS size conditioning gets ``ar = width / height`` -- the convention of
  ``VariableVideoTextDataset`` (``opensora_core.data.datasets``) and of Open-Sora 1.1 *training*. Open-Sora's
  ``inference.py`` passed ``height / width`` instead (a reference quirk); for square videos both are 1.
  ``height`` / ``width`` are pixel sizes, ``num_frames`` the clip length, ``fps`` = ``cfg.fps`` (120 for
  single images, as in training), all 1-D tensors of length B.
* **Seeds**: every sample has its own ``torch.Generator`` (CPU) seeded with
  ``derive_seed(seed, "noise", prompt index, sample index)`` (:mod:`opensora_core.utils.seeding`); it draws
  the initial noise, every ancestral-sampling step's noise and the VAE posterior noise of loop re-encoding,
  so a sample does not depend on the batch size, on the other prompts or on the device's RNG. (Open-Sora
  drew all of it from the global RNG, so its videos changed with the batch size.)
* **Guidance**: the null caption of classifier-free guidance is the model's learned ``y_embedding``;
  identical captions are encoded once (an LRU cache over the run).
* **Checkpoints** (``model.from_pretrained`` / ``--ckpt-path``): a file (.safetensors, weights-only .pt/.pth),
  a Hugging Face folder, one of our training checkpoints ``epoch*-global_step*/`` (``ema.safetensors``
  preferred over ``model.safetensors``; Open-Sora's ``ema.pt`` too), an experiment folder holding such
  checkpoints (the highest global step is used), a hub id (``hpcai-tech/OpenSora-STDiT-v2-stage3``) or a
  released Open-Sora / PixArt file name (``OpenSora-v1-HQ-16x512x512.pth``). The weights must fit the model
  the config describes: missing, unexpected or mis-shaped keys are an error naming the checkpoint and the
  config values to check.
* **dtype**: ``cfg.dtype`` for the diffusion model and VAE (fp16 becomes fp32 on CPU); the text encoder runs
  in fp32, as in Open-Sora's inference, unless ``text_encoder.dtype="bf16"``.
* **Memory** (docs/gpu-memory.md; ``python -m opensora_core.sample CONFIG --plan`` estimates it):
  ``text_encoder.device="cpu"`` keeps the text encoder off the GPU (prompts are encoded on the CPU, the
  embeddings move to the model's device); ``text_encoder.offload=True`` encodes every caption of the run
  first, in batches of ``batch_size``, then frees the encoder's weights; the VAE decodes ``micro_batch_size``
  frames at a time. Captions are encoded once per batch (identical ones once per run) and kept on the CPU.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from opensora_core.checkpoint import SAMPLING_WEIGHT_FILES, list_checkpoints
from opensora_core.config import RunConfig
from opensora_core.data import conditioning
from opensora_core.io import storage
from opensora_core.models import build_model
from opensora_core.models.checkpoint import load_checkpoint
from opensora_core.models.layers import to_torch_dtype
from opensora_core.models.text_encoders import build_text_encoder
from opensora_core.models.vae import build_vae
from opensora_core.sample.long import (
    MaskTuple,
    SampleInputError,
    apply_mask_tuples,
    carried_loop_frames,
    load_reference_video,
    stitch_loops,
)
from opensora_core.sample.prompts import RunPlan, SampleItem, plan_run
from opensora_core.sample.writer import read_sample, save_sample, to_uint8_frames, write_preview_grid
from opensora_core.schedulers import IDDPM, build_scheduler
from opensora_core.utils.modules import module_dtype
from opensora_core.utils.seeding import derive_seed

__all__ = [
    "PerSampleNoiseIDDPM",
    "SamplingModels",
    "build_sampling_scheduler",
    "load_model_weights",
    "load_sampling_models",
    "load_text_encoder",
    "model_kwargs",
    "resolve_checkpoint",
    "sample",
    "video_info",
]

logger = logging.getLogger(__name__)

PREVIEW_FRAMES = 8
# Released weights Open-Sora's configs name by file (downloaded from these hub repos when not local).
_RELEASED_FILES = {
    "OpenSora-v1-16x256x256.pth": "hpcai-tech/Open-Sora",
    "OpenSora-v1-HQ-16x256x256.pth": "hpcai-tech/Open-Sora",
    "OpenSora-v1-HQ-16x512x512.pth": "hpcai-tech/Open-Sora",
    "PixArt-XL-2-256x256.pth": "PixArt-alpha/PixArt-alpha",
    "PixArt-XL-2-SAM-256x256.pth": "PixArt-alpha/PixArt-alpha",
    "PixArt-XL-2-512x512.pth": "PixArt-alpha/PixArt-alpha",
    "PixArt-XL-2-1024-MS.pth": "PixArt-alpha/PixArt-alpha",
}


class SamplingModels(NamedTuple):
    """What :func:`load_sampling_models` returns; unpacks as ``model, vae, text_encoder, scheduler``."""

    model: nn.Module
    vae: Any
    text_encoder: Any
    scheduler: Any


class PerSampleNoiseIDDPM(IDDPM):
    """IDDPM whose ``sample(generator=[g_0, ..., g_{B-1}])`` draws each sample's noise from its own generator.

    With a single generator (or None) it behaves exactly as :class:`IDDPM`. Per-sample generators make a
    sample independent of the batch it runs in.
    """

    def _noise(self, x: torch.Tensor, generator: Any) -> torch.Tensor:
        if isinstance(generator, list | tuple):
            if len(generator) != x.shape[0]:
                raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
            noise = [
                torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generator
            ]
            return torch.stack(noise).to(device=x.device, dtype=x.dtype)
        return super()._noise(x, generator)


# ------------------------------------------------------------------------------------------- checkpoints
def _hub_download(name: str) -> Path:
    """Fetch released weights by file name or a hub repo (weights + config only)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    from opensora_core.models.pretrained import env_offline, missing_model_error

    offline = env_offline()
    try:
        if name in _RELEASED_FILES:
            return Path(hf_hub_download(_RELEASED_FILES[name], name, local_files_only=offline))
        folder = snapshot_download(
            name, allow_patterns=["*.safetensors", "*.json", "*.bin"], local_files_only=offline
        )
        return Path(folder)
    except Exception as exc:  # hub errors come in many types; all mean "not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise missing_model_error(name, "diffusion model weights", reason) from None


def resolve_checkpoint(path: str) -> Path:
    """The weights file/folder to load for ``--ckpt-path path`` (see the module docstring for the forms)."""
    from opensora_core.models.pretrained import looks_like_local_path

    if storage.is_remote(path):
        raise SampleInputError(
            f"checkpoint {path!r}: download remote checkpoints first "
            "(opensora_core.io.storage.download_dir) and pass the local folder"
        )
    p = storage.local_path(path)
    if p.is_file():
        return p
    if p.is_dir():
        if not any((p / name).exists() for name in SAMPLING_WEIGHT_FILES):
            steps = list_checkpoints(str(p), complete_only=False)  # highest global step last
            if steps:
                p = Path(steps[-1].uri)
                logger.info("using the latest checkpoint %s", p)
        for name in SAMPLING_WEIGHT_FILES:
            if (p / name).exists():
                return p / name
        return p  # a Hugging Face folder (read_state_dict names what it lacks)
    if path in _RELEASED_FILES or not looks_like_local_path(path):
        return _hub_download(path)
    raise SampleInputError(f"checkpoint {path!r} does not exist (model.from_pretrained / --ckpt-path)")


def _block_hint(keys: Sequence[str], depth: int, extra: bool) -> str:
    ids = {int(m.group(1)) for k in keys if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not ids:
        return ""
    if extra:
        return f"; the checkpoint has blocks up to index {max(ids)} but model.depth={depth}"
    return f"; the checkpoint lacks blocks {min(ids)}..{max(ids)} of model.depth={depth}"


def _model_summary(cfg: RunConfig, kwargs: dict[str, Any]) -> str:
    names = ("depth", "hidden_size", "num_heads", "patch_size", "in_channels", "caption_channels")
    shown = [f"model.{n}={kwargs.get(n, cfg.model.effective(n))}" for n in names]
    return f"model.type={cfg.model.type!r}, " + ", ".join(shown)


def load_model_weights(model: nn.Module, source: str, cfg: RunConfig, kwargs: dict[str, Any]) -> Path:
    """Load ``source`` (see :func:`resolve_checkpoint`) into ``model``; every key must match.

    Raises SampleInputError naming the checkpoint and the config values when it does not fit the model.
    """
    path = resolve_checkpoint(source)
    summary = _model_summary(cfg, kwargs)
    quiet = logging.getLogger(load_checkpoint.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "missing/unexpected keys (ignored)" warnings: here they are errors
    try:
        missing, unexpected = load_checkpoint(model, path)
    except ValueError as exc:
        raise SampleInputError(
            f"checkpoint {path} does not fit the model of the config ({summary}): {exc}"
        ) from None
    finally:
        quiet.setLevel(level)
    if missing or unexpected:
        depth = kwargs.get("depth", cfg.model.effective("depth"))
        parts = []
        if missing:
            parts.append(f"{len(missing)} model key(s) missing from it, e.g. {missing[:4]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:4]}")
        hint = _block_hint(unexpected, depth, extra=True) or _block_hint(missing, depth, extra=False)
        raise SampleInputError(
            f"checkpoint {path} does not fit the model of the config ({summary}): {'; '.join(parts)}{hint}"
        )
    logger.info("loaded weights from %s", path)
    return path


# ------------------------------------------------------------------------------------------------ models
def _run_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype:
    dtype = to_torch_dtype(cfg.model.dtype or cfg.dtype)
    if device.type == "cpu" and dtype == torch.float16:
        logger.warning("fp16 is not supported for CPU sampling; using fp32")
        return torch.float32
    return dtype


def build_sampling_scheduler(cfg: RunConfig) -> Any:
    """The sampler of ``cfg.scheduler`` (IDDPM with per-sample noise generators, or DPM-Solver++)."""
    kwargs = cfg.scheduler.build_kwargs()
    if cfg.scheduler.type == "iddpm":
        return PerSampleNoiseIDDPM(**kwargs)
    return build_scheduler(cfg.scheduler.type, **kwargs)


def compile_sampling_model(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``torch.compile`` the model for the sampler's calls (``RunConfig.compile_sampler``); returns the compiled
    module, which shares the weights and attributes (``null_caption``) of ``model``.

    Every step calls the model with the same shapes and the same prepared text mask (the samplers build the
    model inputs once per video), so the graph compiled at the first step serves every later one.
    """
    return torch.compile(model, backend=backend)


def _sampling_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def load_text_encoder(cfg: RunConfig, device: str | torch.device | None = None) -> Any:
    """The text encoder of ``cfg`` for sampling: on ``device`` in fp32 unless ``text_encoder.device`` /
    ``text_encoder.dtype`` say otherwise."""
    return build_text_encoder(
        cfg.text_encoder.as_dict(), device=_sampling_device(device), dtype=torch.float32
    )


def model_kwargs(
    cfg: RunConfig,
    latent_size: Sequence[int | None],
    latent_channels: int,
    text_encoder: Any,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """``build_model`` keyword arguments for sampling: sized from the VAE latent and the text encoder
    (``input_size``, ``in_channels``, ``caption_channels``, ``model_max_length``); config fields win."""
    kwargs: dict[str, Any] = {"input_size": tuple(latent_size), "in_channels": latent_channels}
    if getattr(text_encoder, "output_dim", None):
        kwargs["caption_channels"] = text_encoder.output_dim
        kwargs["model_max_length"] = text_encoder.model_max_length
    kwargs.update(cfg.model.build_kwargs())
    kwargs["dtype"] = dtype
    return kwargs


def load_sampling_models(
    cfg: RunConfig, device: str | torch.device | None = None, text_encoder: Any = None
) -> SamplingModels:
    """Build ``(model, vae, text_encoder, scheduler)`` for sampling ``cfg`` on ``device`` (default: CUDA when
    available). The model is sized by :func:`model_kwargs`, loaded from ``model.from_pretrained`` and put in
    eval mode; the text encoder's null caption is the model's ``y_embedding``. ``text_encoder``: one already
    built by :func:`load_text_encoder` (it may have been released after encoding).
    """
    if cfg.num_frames is None or cfg.image_size is None:
        raise SampleInputError("num_frames and image_size must be set to build the sampling models")
    device = _sampling_device(device)
    dtype = _run_dtype(cfg, device)
    if text_encoder is None:
        text_encoder = load_text_encoder(cfg, device)
    vae = build_vae(cfg.vae.as_dict()).to(device=device, dtype=dtype).eval()
    latent_size = vae.get_latent_size((cfg.num_frames, *cfg.image_size))
    kwargs = model_kwargs(cfg, latent_size, vae.out_channels, text_encoder, dtype)
    model = build_model(cfg.model.type, **kwargs)
    if cfg.model.from_pretrained:
        load_model_weights(model, cfg.model.from_pretrained, cfg, kwargs)
    model = model.to(device=device, dtype=dtype).eval()
    if hasattr(text_encoder, "set_null_from_model"):
        text_encoder.set_null_from_model(model)
    if cfg.compile_sampler:
        model = compile_sampling_model(model)
    return SamplingModels(model, vae, text_encoder, build_sampling_scheduler(cfg))


# -------------------------------------------------------------------------------------------- helpers
def video_info(cfg: RunConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Size conditioning for ``cfg.multi_resolution``: the model's ``ModelCaps.video_info`` inputs (STDiT2:
    height, width, num_frames, ar, fps; PixArtMS: height, width, ar), 1-D float tensors of length ``batch``;
    ``ar = width / height``."""
    if not cfg.multi_resolution:
        return {}
    return conditioning.video_info(
        cfg.model.type,
        tuple(cfg.image_size),
        cfg.num_frames,
        cfg.fps,
        batch,
        device,  # type: ignore[arg-type]
    )


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class _TextCache:
    """Encodes captions once: an LRU of per-caption encoder outputs, kept on the CPU (float tensors in fp32).

    ``capacity=None`` keeps every caption (offloading encodes the whole run before freeing the encoder).
    """

    def __init__(self, encoder: Any, capacity: int | None = 64):
        self.encoder = encoder
        self.capacity = capacity
        self.store: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def encode(self, texts: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """Stacked outputs for ``texts`` (on ``device``); only captions not seen yet go through the encoder."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.store]
        if missing:
            out = self.encoder.encode(missing)
            out = {k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()}
            for i, text in enumerate(missing):
                self.store[text] = {k: v[i] for k, v in out.items()}
        for text in texts:
            self.store.move_to_end(text)
        result = {k: torch.stack([self.store[t][k] for t in texts]).to(device) for k in self.store[texts[0]]}
        while self.capacity is not None and len(self.store) > max(self.capacity, len(texts)):
            self.store.popitem(last=False)
        return result


def _cache_capacity(cfg: RunConfig) -> int:
    return max(64, 2 * (cfg.batch_size or 1))


def _encode_all(texts: _TextCache, items: Sequence[SampleItem], cfg: RunConfig) -> None:
    """Encode every caption of ``items`` (all loops), ``batch_size`` items at a time, into ``texts``."""
    step = cfg.batch_size or 1
    for start in range(0, len(items), step):
        chunk = items[start : start + step]
        texts.encode([text for it in chunk for text in it.spec.loop_texts[: cfg.loop]])


class _ProgressModel:
    """Calls the model and advances the progress bar by the number of real samples per model evaluation."""

    def __init__(self, model: nn.Module, advance: Callable[[int], Any], batch: int):
        self.model, self.advance, self.batch = model, advance, batch

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.model(*args, **kwargs)
        self.advance(self.batch)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _steps_per_clip(scheduler: Any) -> int:
    """Model evaluations per clip: the sampling steps (rflow, DPM-Solver), else IDDPM's respaced timesteps
    (rflow's ``num_timesteps`` is the length of its time axis, not a step count)."""
    return int(getattr(scheduler, "num_sampling_steps", None) or scheduler.num_timesteps)


# ----------------------------------------------------------------------------------------------- runner
class _Runner:
    """Generates batches of :class:`SampleItem` for one run (references cached per prompt)."""

    def __init__(
        self,
        cfg: RunConfig,
        models: SamplingModels,
        plan: RunPlan,
        advance: Callable[[int], Any],
        texts: _TextCache | None = None,
    ):
        self.cfg, self.plan, self.advance = cfg, plan, advance
        self.model, self.vae, self.text_encoder, self.scheduler = models
        self.device = _device_of(self.model)
        self.dtype = module_dtype(self.model, torch.float32)
        self.vae_dtype = module_dtype(self.vae, self.dtype)
        self.latent_size = tuple(self.vae.get_latent_size((cfg.num_frames, *cfg.image_size)))
        self.texts = texts or _TextCache(self.text_encoder, _cache_capacity(cfg))
        self.references: dict[int, list[torch.Tensor]] = {}
        self.per_sample_noise = isinstance(self.scheduler, PerSampleNoiseIDDPM)

    def reference_latents(self, item: SampleItem) -> list[torch.Tensor]:
        """Latents ``[C, T, h, w]`` of the prompt's references (encoded once per prompt)."""
        spec = item.spec
        if spec.index not in self.references:
            latents = []
            cache_dir = self.plan.save_dir / ".cache" / "references"
            for j, path in enumerate(spec.reference_paths):
                video = load_reference_video(path, tuple(self.cfg.image_size), cache_dir)  # [3, T, H, W]
                gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "reference", spec.index, j))
                x = video[None].to(device=self.device, dtype=self.vae_dtype)
                latents.append(self.vae.encode(x, generator=gen)[0])  # [C, T, h, w]
            self.references[spec.index] = latents
        return self.references[spec.index]

    def release(self, prompt_index: int) -> None:
        """Forget the prompt's reference latents (all its samples are done)."""
        self.references.pop(prompt_index, None)

    @torch.inference_mode()
    def generate(self, batch: Sequence[SampleItem]) -> torch.Tensor:
        """Pixel videos ``[B, 3, T_total, H, W]`` in [-1, 1] (on CPU) for ``batch``."""
        cfg, n = self.cfg, len(batch)
        gens = [
            torch.Generator().manual_seed(derive_seed(cfg.seed, "noise", it.spec.index, it.sample_index))
            for it in batch
        ]
        info = video_info(cfg, n, self.device)
        model = _ProgressModel(self.model, self.advance, n)
        channels = self.vae.out_channels
        clips: list[torch.Tensor] = []
        previous: list[torch.Tensor] = []
        y_null = self.text_encoder.null(n).to(self.device)  # the same for every loop
        for loop_i in range(cfg.loop):
            enc = self.texts.encode([it.spec.loop_texts[loop_i] for it in batch], self.device)
            z = torch.stack([torch.randn((channels, *self.latent_size), generator=g) for g in gens])
            z = z.to(self.device)  # [B, C, T, h, w]
            frame_mask = torch.ones(n, z.shape[2], device=self.device)
            for b, item in enumerate(batch):
                where = f"{item.spec.label}, loop {loop_i}: "
                tuples = [t for t in item.spec.mask_tuples if t.loop_id == loop_i]
                if tuples:
                    refs = self.reference_latents(item)
                    apply_mask_tuples(z[b], frame_mask[b], tuples, refs, where, cfg.align)
                if loop_i > 0:
                    cfl, edit = int(cfg.condition_frame_length or 0), cfg.condition_frame_edit
                    carry = MaskTuple(
                        loop_i, 0, -cfl, 0, cfl, edit, f"{loop_i},<previous clip>,-{cfl},0,{cfl},{edit}"
                    )
                    apply_mask_tuples(z[b], frame_mask[b], [carry], [previous[b]], where, cfg.align)
            extra: dict[str, Any] = {"generator": gens} if self.per_sample_noise else {}
            latents = self.scheduler.sample(
                model,
                z,
                enc["y"],
                mask=enc.get("mask"),
                y_null=y_null,
                frame_mask=frame_mask if bool((frame_mask != 1).any()) else None,
                progress=False,
                **extra,
                **info,
            )
            # num_frames: VAEs that compress time (Open-Sora 1.2: 17 -> 5) need the pixel frame count back
            pixels = self.vae.decode(latents.to(self.vae_dtype), num_frames=cfg.num_frames)  # [B, 3, T, H, W]
            if loop_i + 1 < cfg.loop:
                previous = [
                    self.vae.encode(pixels[b : b + 1], generator=gens[b])[0] for b in range(n)
                ]  # re-encoded clip per sample, as the reference conditions the next loop
            clips.append(pixels.float().cpu())
        return stitch_loops(clips, carried_loop_frames(cfg))


def _prepare(
    cfg: RunConfig, prompts: Sequence[str] | None, plan: RunPlan | None = None
) -> tuple[RunConfig, RunPlan]:
    if prompts is not None:
        if plan is not None:
            raise ValueError("give sample() prompts or a plan, not both (the plan already holds the prompts)")
        cfg = cfg.model_copy(update={"prompt": list(prompts), "prompt_path": None})
    cfg.check_ready(training=False)
    return cfg, plan_run(cfg) if plan is None else plan


def sample(
    cfg: RunConfig,
    prompts: list[str] | None = None,
    progress: bool = True,
    *,
    models: SamplingModels | None = None,
    device: str | torch.device | None = None,
    previews: bool = True,
    plan: RunPlan | None = None,
) -> list[Path]:
    """Sample videos for ``prompts`` (default: the config's prompts) and return their paths.

    One path per (prompt, sample) in order -- prompt by prompt, ``num_sample`` each -- including files that
    ``prompt_as_path`` skipped because they existed. Also writes a preview grid per prompt
    (``save_dir/preview/``; not with ``previews=False``) and the resolved config
    (``save_dir/sample_config.{py,json}``). ``models`` reuses :func:`load_sampling_models` output; ``plan``
    reuses ``plan_run(cfg)`` when the caller has already planned (the CLI does, to fail before torch loads),
    so prompt files and references are not read again. Raises SampleInputError (a ValueError) naming the bad
    prompt, reference, mask strategy or checkpoint; videos written before an error are kept.
    """
    cfg, plan = _prepare(cfg, prompts, plan)
    todo = plan.todo
    say = print
    if not todo:
        say(f"all {len(plan.items)} sample(s) already exist in {plan.save_dir}; nothing to do", flush=True)
        return [it.path for it in plan.items]
    offload = bool(getattr(cfg.text_encoder, "offload", False))
    encoder = models.text_encoder if models is not None else load_text_encoder(cfg, device)
    texts = _TextCache(encoder, capacity=None if offload else _cache_capacity(cfg))
    if offload:  # every caption first, then free the encoder before the diffusion model and VAE load
        _encode_all(texts, todo, cfg)
        encoder.release()
    models = models or load_sampling_models(cfg, device, text_encoder=encoder)
    plan.save_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(plan.save_dir, stem="sample_config")

    steps = _steps_per_clip(models.scheduler) * cfg.loop
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * steps, unit="step", desc="sampling", file=sys.stderr, dynamic_ncols=True)
        say = bar.write
    runner = _Runner(cfg, models, plan, bar.update if bar is not None else (lambda _n: None), texts)
    left = Counter(it.spec.index for it in todo)
    rows: dict[int, dict[int, np.ndarray]] = {}
    batch_size = cfg.batch_size or 1
    written = 0
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            videos = runner.generate(batch)
            for b, item in enumerate(batch):
                frames = to_uint8_frames(videos[b])  # [T, H, W, 3]
                save_sample(frames, item.path, plan.fps)
                written += 1
                say(f"saved {item.path}")
                if previews:
                    picks = (
                        np.linspace(0, len(frames) - 1, min(PREVIEW_FRAMES, len(frames))).round().astype(int)
                    )
                    rows.setdefault(item.spec.index, {})[item.sample_index] = frames[picks]
                left[item.spec.index] -= 1
                if left[item.spec.index] == 0:
                    runner.release(item.spec.index)
                    if previews:
                        _write_preview(plan, item.spec.index, rows.pop(item.spec.index))
    finally:
        if bar is not None:
            bar.close()
    skipped = len(plan.items) - len(todo)
    note = f" ({skipped} existing skipped)" if skipped else ""
    print(f"wrote {written} sample(s) to {plan.save_dir}{note}", flush=True)
    return [it.path for it in plan.items]


def _write_preview(plan: RunPlan, prompt_index: int, rows: dict[int, np.ndarray]) -> None:
    """Grid of all samples of a prompt; samples skipped in this run are read back from their files."""
    for item in plan.items:
        if item.spec.index == prompt_index and item.sample_index not in rows and item.path.exists():
            rows[item.sample_index] = read_sample(item.path)
    write_preview_grid([rows[k] for k in sorted(rows)], plan.preview_paths[prompt_index], PREVIEW_FRAMES)
