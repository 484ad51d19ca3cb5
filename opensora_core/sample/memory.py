"""Peak accelerator memory of sampling a config, estimated before any weight is loaded (``--plan``).

    python -m opensora_core.sample configs/opensora-v1-2/inference/sample.py --plan --resolution 480p
    python -m opensora_core.sample.memory --write docs/gpu-memory.md      # the table of settings per GPU size

**Weights are counted exactly**: the text encoder, the diffusion model and the VAE are built on the ``meta``
device from their architectures (no memory, no downloads), with the sizes the sampler would give them. When a
text encoder's or VAE's config cannot be read offline, the architecture comes from the known constants of the
released model (T5 v1.1 XXL, CLIP ViT-B/32, the SD / SD-XL VAE), and the output says so.

**Working memory is an estimate** from closed forms (the largest tensors alive at once, not a trace):

* text encoding, per batch of B prompts of L tokens: ``B * L * (2 * d_ff + 4 * d_model)`` values plus the
  attention scores ``B * heads * L^2`` twice (T5 materialises them to add its position bias);
* one diffusion step, with classifier-free guidance as one batch of 2B:
  ``2B * D * (ACTIVATION_COPIES * N + 3 * L)`` values, N = latent tokens after patching, D = hidden size
  (a block keeps its input, residual, q/k/v, attention output, the two 4D MLP tensors and their temporaries
  alive at once; attention through SDPA keeps no N x N matrix), plus the latents. ``ACTIVATION_COPIES`` is
  calibrated against the peaks Open-Sora 1.2 published for an H100 (:data:`PUBLISHED_V1_2_PEAKS_GB`;
  :func:`comparison_table` sets them side by side);
* VAE decode: the SD decoder's full-resolution tensors, ``3 * 256 * H * W`` values per frame for
  ``micro_batch_size`` frames at a time (all frames when None); Open-Sora 1.2's temporal VAE first, ``3 *
  512 * h * w`` values per latent-resolution frame for ``B * micro_frame_size`` frames; plus the decoded video.

Phases, in the order :func:`opensora_core.sample.sample` runs them: *encode* (text encoder + its working
memory; with ``text_encoder.offload`` only the encoder is loaded then), *denoise*, *decode*. The peak is the
largest phase plus :data:`RUNTIME_ALLOWANCE` (CUDA context, allocator caching and fragmentation).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opensora_core.config import RunConfig, load_config
from opensora_core.models import build_model
from opensora_core.models.layers import to_torch_dtype
from opensora_core.models.pretrained import is_debug_id
from opensora_core.models.vae import build_vae
from opensora_core.sample.long import SampleInputError
from opensora_core.sample.pipeline import model_kwargs

__all__ = ["GPU_SIZES_GB", "MemoryPlan", "Part", "comparison_table", "plan_memory", "settings_table"]

GiB = 1024**3
RUNTIME_ALLOWANCE = 1 * GiB
ACTIVATION_COPIES = 20  # D-wide values per token alive in a block (calibrated, see the module docstring)
# Peak memory (GB) Open-Sora v1.2.0's README reports for its Gradio app on an 80 GB H100 (T5 in fp32, bf16
# model, batch 1, 9:16): {(resolution, duration): GB}.
PUBLISHED_V1_2_PEAKS_GB: dict[tuple[str, str], int] = {
    ("360p", "2s"): 27, ("360p", "4s"): 27, ("360p", "8s"): 28, ("360p", "16s"): 33,
    ("480p", "2s"): 31, ("480p", "4s"): 30, ("480p", "8s"): 32, ("480p", "16s"): 36,
    ("720p", "2s"): 41, ("720p", "4s"): 39, ("720p", "8s"): 45, ("720p", "16s"): 67,
}  # fmt: skip
GPU_SIZES_GB = (24, 40, 80, 141)  # nominal sizes (RTX 4090 / A100 40 GB / A100, H100 80 GB / H200)
FIT = 0.95  # a setting "fits" a GPU of G GB when its peak is at most 95 % of G GiB

# Architectures of released encoders/VAEs, used when their config.json is not available offline.
KNOWN_TEXT_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # DeepFloyd/t5-v1_1-xxl config.json: the T5 v1.1 XXL encoder (4.76 B parameters)
    "DeepFloyd/t5-v1_1-xxl": (
        "t5",
        dict(
            d_model=4096,
            d_ff=10240,
            d_kv=64,
            num_heads=64,
            num_layers=24,
            vocab_size=32128,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=32,
        ),
    ),
    "openai/clip-vit-base-patch32": ("clip", {}),  # transformers' CLIPTextConfig defaults are ViT-B/32's
}


@dataclass(frozen=True)
class Part:
    """A module's weights: ``params`` parameter and ``buffers`` buffer elements in ``dtype``, ``on_gpu`` or not."""

    name: str
    params: int
    buffers: int
    dtype: torch.dtype
    on_gpu: bool
    note: str = ""

    @property
    def nbytes(self) -> int:
        return (self.params + self.buffers) * self.dtype.itemsize

    @property
    def gpu_bytes(self) -> int:
        return self.nbytes if self.on_gpu else 0


@dataclass
class MemoryPlan:
    """Weights per component and working memory per phase (bytes on the sampling device)."""

    config: str
    summary: str
    parts: dict[str, Part]
    phases: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)

    def phase_bytes(self, phase: str) -> int:
        return sum(self.phases[phase].values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_bytes)

    @property
    def peak_bytes(self) -> int:
        """The largest phase plus the runtime allowance."""
        return self.phase_bytes(self.peak_phase) + RUNTIME_ALLOWANCE

    def format(self) -> str:
        """The human-readable plan ``--plan`` prints."""
        lines = [f"memory plan for {self.config} ({self.summary}); estimate, nothing loaded", "", "weights:"]
        for part in self.parts.values():
            where = "GPU" if part.on_gpu else "CPU (not on the GPU)"
            note = f"  [{part.note}]" if part.note else ""
            lines.append(
                f"  {part.name:<16} {part.params:>14,d} params + {part.buffers:>10,d} buffer values  "
                f"{_dtype_name(part.dtype):<5} {_gib(part.nbytes):>10} on {where}{note}"
            )
        lines += ["", "accelerator memory per phase:"]
        for phase, items in self.phases.items():
            detail = ", ".join(f"{name} {_gib(b)}" for name, b in items.items())
            lines.append(f"  {phase:<8} {_gib(self.phase_bytes(phase)):>9}  = {detail}")
        lines += [
            "",
            f"expected peak: {_gib(self.peak_bytes)} ({self.peak_phase} phase + {_gib(RUNTIME_ALLOWANCE)} "
            "runtime allowance)",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _gib(nbytes: int) -> str:
    return f"{nbytes / GiB:.2f} GiB"


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def _part(name: str, module: nn.Module | None, dtype: torch.dtype, on_gpu: bool, note: str) -> Part:
    """The :class:`Part` of ``module`` (None: no weights)."""
    if module is None:
        return Part(name, 0, 0, dtype, on_gpu, note)
    params = sum(p.numel() for p in module.parameters())
    return Part(name, params, sum(b.numel() for b in module.buffers()), dtype, on_gpu, note)


# ------------------------------------------------------------------------------------------ architectures
def _text_encoder_architecture(te_cfg: Any, notes: list[str]) -> tuple[nn.Module | None, Any]:
    """``(model on meta or tiny real model, its HF config)``; ``(None, None)`` when it has no weights."""
    if te_cfg.type == "classes":
        return None, None
    name = te_cfg.from_pretrained
    if is_debug_id(name):
        from opensora_core.models import tiny

        model = tiny.load_debug_text_model(name, te_cfg.type)[0]
        return model, model.config
    from transformers import AutoConfig, CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    try:
        config = AutoConfig.from_pretrained(
            name, subfolder=te_cfg.subfolder or "", cache_dir=te_cfg.cache_dir, local_files_only=True
        )
        if te_cfg.type == "clip" and hasattr(config, "text_config"):
            config = config.text_config
    except Exception:  # not cached / not a local folder: fall back to the known constants
        if name not in KNOWN_TEXT_CONFIGS:
            notes.append(
                f"text_encoder.from_pretrained={name!r}: its config is not available offline and its "
                "architecture is not among the known ones; its weights are not counted"
            )
            return None, None
        kind, values = KNOWN_TEXT_CONFIGS[name]
        config = T5Config(**values) if kind == "t5" else CLIPTextConfig(**values)
        notes.append(
            f"text encoder: {name}'s config could not be read offline; its known config constants are used"
        )
    with torch.device("meta"):
        model = T5EncoderModel(config) if te_cfg.type == "t5" else CLIPTextModel(config)
    return model, config


def _vae_architecture(cfg: RunConfig, notes: list[str]) -> nn.Module:
    """The VAE of ``cfg`` without its weights (built on meta; tiny debug and identity VAEs for real)."""
    vae_cfg = cfg.vae
    name = getattr(vae_cfg, "from_pretrained", None)
    if vae_cfg.type == "identity" or (name is not None and is_debug_id(name)):
        return build_vae(vae_cfg.as_dict())
    if vae_cfg.type == "OpenSoraVAE_V1_2":
        from opensora_core.models.vae_v1_2 import build_opensora_vae_v1_2

        with torch.device("meta"):
            return build_opensora_vae_v1_2(vae_cfg, load_weights=False)
    if vae_cfg.type == "VideoAutoencoderKL":
        from diffusers import AutoencoderKL

        from opensora_core.models.vae import build_kl
        from opensora_core.models.vae_v1_2 import SDXL_VAE_CONFIG

        notes.append(
            f"VAE: {name} is counted with the SD VAE architecture (sd-vae-ft-ema / SD-XL VAE, 83.7 M params)"
        )
        with torch.device("meta"):
            return build_kl(vae_cfg, module=AutoencoderKL(**SDXL_VAE_CONFIG))
    raise SampleInputError(
        f"--plan: vae.type {vae_cfg.type!r} cannot be sized offline (supported: identity, debug ids, "
        "VideoAutoencoderKL, OpenSoraVAE_V1_2)"
    )


# ------------------------------------------------------------------------------------------------ the plan
def plan_memory(cfg: RunConfig, config_name: str = "<config>") -> MemoryPlan:
    """The memory plan of sampling ``cfg`` on a GPU (see the module docstring); loads no weights."""
    if cfg.num_frames is None or cfg.image_size is None or cfg.batch_size is None:
        raise SampleInputError("--plan needs num_frames, image_size (or resolution) and batch_size")
    notes: list[str] = []
    batch, frames = cfg.batch_size, cfg.num_frames
    height, width = cfg.image_size
    dtype = to_torch_dtype(cfg.model.dtype or cfg.dtype)
    te_cfg = cfg.text_encoder
    te_dtype = to_torch_dtype(getattr(te_cfg, "dtype", None) or "fp32")
    te_on_gpu = (getattr(te_cfg, "device", None) or "cuda") != "cpu"
    offload = bool(getattr(te_cfg, "offload", False))

    te_model, te_config = _text_encoder_architecture(te_cfg, notes)
    vae = _vae_architecture(cfg, notes)
    latent_size = tuple(vae.get_latent_size((frames, height, width)))
    latent_channels = int(vae.out_channels)

    class _Dims:  # what model_kwargs reads from a text encoder
        output_dim = getattr(te_config, "d_model", None) or getattr(te_config, "hidden_size", None)
        model_max_length = getattr(te_cfg, "model_max_length", None)

    kwargs = model_kwargs(cfg, latent_size, latent_channels, _Dims if te_config is not None else None, dtype)
    kwargs.pop("from_pretrained", None)
    with torch.device("meta"):
        model = build_model(cfg.model.type, **kwargs)

    te_placement = "CPU" if not te_on_gpu else ("GPU, freed after encoding" if offload else "GPU")
    parts = {
        "text encoder": _part(
            "text encoder", te_model, te_dtype, te_on_gpu, f"{te_cfg.type}, {te_placement}"
        ),
        "diffusion model": _part("diffusion model", model, dtype, True, cfg.model.type),
        "VAE": _part("VAE", vae, dtype, True, cfg.vae.type),
    }
    size = dtype.itemsize

    # encode: B prompts of L tokens (the loops' captions of a batch are encoded together)
    encode: dict[str, int] = {}
    if te_model is not None and te_on_gpu:
        length = int(getattr(te_cfg, "model_max_length", 0))
        d_model = int(getattr(te_config, "d_model", 0) or te_config.hidden_size)
        d_ff = int(getattr(te_config, "d_ff", 0) or te_config.intermediate_size)
        heads = int(getattr(te_config, "num_heads", 0) or te_config.num_attention_heads)
        prompts = batch * cfg.loop
        encode["text encoder"] = parts["text encoder"].nbytes
        encode["its activations"] = (
            te_dtype.itemsize * prompts * (length * (2 * d_ff + 4 * d_model) + 2 * heads * length * length)
        )
    if not offload:
        encode["diffusion model"] = parts["diffusion model"].nbytes
        encode["VAE"] = parts["VAE"].nbytes

    resident = {
        name: parts[name].gpu_bytes
        for name in ("text encoder", "diffusion model", "VAE")
        if not (name == "text encoder" and (offload or parts[name].gpu_bytes == 0))
    }
    patch = tuple(int(p) for p in getattr(model, "patch_size", (1, 1, 1)))
    tokens = math.prod(math.ceil(int(s) / p) for s, p in zip(latent_size, patch, strict=True))
    hidden = int(model.hidden_size)
    caption = int(kwargs.get("model_max_length") or 1)
    latent_values = batch * latent_channels * math.prod(int(s) for s in latent_size)
    denoise = dict(resident)
    denoise["activations"] = 2 * batch * hidden * (ACTIVATION_COPIES * tokens + 3 * caption) * size
    denoise["latents"] = latent_values * (4 + 6 * size)  # fp32 state + CFG input/output copies

    decode = dict(resident)
    decode["VAE activations"] = _vae_decode_bytes(cfg, vae, batch, frames, latent_size, size)
    decode["decoded video"] = batch * 3 * frames * height * width * size

    phases = {"encode": encode, "denoise": denoise, "decode": decode}
    if not encode:
        del phases["encode"]
    summary = (
        f"{height}x{width}, {frames} frames, batch {batch}, CFG, latent {latent_channels}x"
        f"{'x'.join(str(s) for s in latent_size)}, {tokens:,} tokens"
    )
    return MemoryPlan(config_name, summary, parts, phases, notes)


def _vae_decode_bytes(
    cfg: RunConfig, vae: nn.Module, batch: int, frames: int, latent_size: Sequence[int], size: int
) -> int:
    """Working memory of decoding a batch (see the module docstring)."""
    if cfg.vae.type == "identity":
        return 0
    height, width = cfg.image_size  # type: ignore[misc]
    micro = getattr(cfg.vae, "micro_batch_size", None)
    frames_at_once = min(micro, batch * frames) if micro else batch * frames
    spatial = 3 * 256 * height * width * frames_at_once * size
    temporal = 0
    if cfg.vae.type == "OpenSoraVAE_V1_2":
        chunk = getattr(cfg.vae, "micro_frame_size", None) or frames
        _, h, w = latent_size
        temporal = 3 * 512 * int(h) * int(w) * batch * min(chunk, frames) * size
    return max(spatial, temporal)


# ---------------------------------------------------------------------------------------- settings table
_SETTINGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("defaults", {}),
    ("text_encoder.dtype=bf16", {"text_encoder.dtype": "bf16"}),
    ("text_encoder.offload=True", {"text_encoder.offload": True}),
    ("bf16 + offload", {"text_encoder.dtype": "bf16", "text_encoder.offload": True}),
    ("text_encoder.device=cpu", {"text_encoder.device": "cpu"}),
)
# (config, label, overrides): the shipped sample configs at common sizes
TABLE_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("configs/opensora/inference/16x256x256.py", "1.0, 16x256x256", {}),
    ("configs/opensora/inference/16x512x512.py", "1.0, 16x512x512", {}),
    ("configs/opensora-v1-1/inference/sample.py", "1.1, 16x240x426", {}),
    ("configs/opensora-v1-1/inference/sample.py", "1.1, 16x480x854", {"image_size": (480, 854)}),
    ("configs/opensora-v1-2/inference/sample.py", "1.2, 240p 4s", {"num_frames": "4s"}),
    ("configs/opensora-v1-2/inference/sample.py", "1.2, 480p 4s", {"resolution": "480p", "num_frames": "4s"}),
    ("configs/opensora-v1-2/inference/sample.py", "1.2, 720p 4s", {"resolution": "720p", "num_frames": "4s"}),
    (
        "configs/opensora-v1-2/inference/sample.py",
        "1.2, 720p 16s",
        {"resolution": "720p", "num_frames": "16s"},
    ),
)


def _row_config(path: str, overrides: dict[str, Any]) -> RunConfig:
    """The config at ``path`` with size overrides; a size name replaces the file's image_size and vice versa."""
    out = dict(overrides)
    if "resolution" in out:
        out.setdefault("image_size", None)
    elif "image_size" in out:
        out.setdefault("resolution", None)
    return load_config(path, overrides=out)


def settings_table(rows: Sequence[tuple[str, str, dict[str, Any]]] = TABLE_ROWS) -> str:
    """Markdown: per config and size, the expected peak with default settings and the lightest setting that
    fits each GPU size of :data:`GPU_SIZES_GB` (from :func:`plan_memory`)."""
    header = "| config, size | default peak | " + " | ".join(f"{g} GB GPU" for g in GPU_SIZES_GB) + " |"
    lines = [header, "|" + "---|" * (2 + len(GPU_SIZES_GB))]
    for path, label, overrides in rows:
        peaks = []
        for name, extra in _SETTINGS:
            cfg = _row_config(path, {**overrides, **extra})
            peaks.append((name, plan_memory(cfg, path).peak_bytes))
        cells = []
        for gb in GPU_SIZES_GB:
            fitting = [f"{name} ({peak / GiB:.1f} GiB)" for name, peak in peaks if peak <= FIT * gb * GiB]
            cells.append(fitting[0] if fitting else "does not fit")
        lines.append(f"| {label} | {peaks[0][1] / GiB:.1f} GiB | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(config: str = "configs/opensora-v1-2/inference/sample.py") -> str:
    """Markdown: the estimated peak of the 1.2 sample config next to the peak Open-Sora published, per cell of
    :data:`PUBLISHED_V1_2_PEAKS_GB` (GB = 10^9 bytes, as published)."""
    lines = ["| 1.2 size | published peak (H100) | `--plan` estimate | difference |", "|---|---|---|---|"]
    for (resolution, duration), published in PUBLISHED_V1_2_PEAKS_GB.items():
        over = {"resolution": resolution, "aspect_ratio": "9:16", "num_frames": duration}
        estimate = plan_memory(_row_config(config, over), config).peak_bytes / 1e9
        lines.append(
            f"| {resolution} {duration} | {published} GB | {estimate:.1f} GB | {estimate - published:+.1f} GB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m opensora_core.sample.memory [--write FILE]``: print or write the GPU settings table and the
    comparison with Open-Sora's published peaks."""
    parser = argparse.ArgumentParser(prog="python -m opensora_core.sample.memory", description=main.__doc__)
    parser.add_argument(
        "--write", type=Path, default=None, help="replace the tables between the markers of FILE"
    )
    args = parser.parse_args(argv)
    tables = {"SETTINGS": settings_table(), "COMPARISON": comparison_table()}
    if args.write is None:
        print("\n\n".join(tables.values()))
        return 0
    text = args.write.read_text()
    for name, table in tables.items():
        begin, end = f"<!-- BEGIN GENERATED {name} -->", f"<!-- END GENERATED {name} -->"
        if begin not in text or end not in text:
            raise SystemExit(f"{args.write}: the markers {begin} / {end} are missing; add them where it goes")
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}"
    args.write.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
