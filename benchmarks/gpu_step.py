"""Training-step throughput on a GPU: STDiT-XL/2, STDiT2-XL/2 and STDiT3-XL/2 at 16x256x256, bf16, VAE encode on the fly.

One step is what Open-Sora's trainer does per batch: encode the 16x256x256 pixel videos with the SD VAE (bf16,
frame by frame in chunks of 32 frames, no grad) to latents 4x16x32x32, then an IDDPM training loss of the
model (fp32 master weights, ``torch.autocast`` bf16, flash attention through SDPA) with T5-XXL-sized caption embeddings (120 tokens x 4096,
random: the text encoder is not part of the step), backward, AdamW (fused) with gradient clipping, through the
``ddp`` backend of one process. Measured per model for eager and ``torch.compile`` (each block compiled) and for
gradient checkpointing off and on, at the batch size found to fill the GPU (see ``find_batch``).

One JSON line per measurement (``name`` = "train_step"): model, compiled, grad_ckpt, batch, step_s (median),
vae_s (its VAE-encode part), tokens_per_s_per_gpu (latent patches: 16 x 16 x 16 = 4096 per video, VAE time
included), mfu (``3 x forward FLOPs per token x tokens/s / peak``; forward FLOPs counted by
``FlopCounterMode`` on one sample, recomputation under checkpointing not counted; peak = the measured bf16
matmul rate, ``mfu_datasheet`` against 989 TFLOP/s), peak_mem_gib (CUDA allocator peak), plus one
``matmul_peak`` line. Measurements that do not fit ``--budget-s`` are written with ``skipped``.

    python benchmarks/gpu_step.py [--out FILE.jsonl] [--budget-s 200] [--models STDiT-XL/2,STDiT2-XL/2,STDiT3-XL/2] [--tiny]

``--tiny``: hidden 48, depth 2, 4x32x32 pixels, a narrow VAE, on the CPU in a few seconds, compiled with the
``eager`` backend (graph capture without code generation; keeps the script working between GPU runs; its
numbers mean nothing) and only two variants per model (eager without and compiled with checkpointing).
``compiled`` in a record is the compile backend, or false.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks import _gpu  # noqa: E402

FULL = dict(frames=16, image=256, caption=(120, 4096), model={}, max_batch=64, warmup=2, steps=4, peak_n=8192)
TINY = dict(
    frames=4,
    image=32,
    caption=(8, 64),
    model=dict(hidden_size=48, depth=2, num_heads=4),
    max_batch=2,
    warmup=0,  # the batch search has run the step already
    steps=1,
    peak_n=256,
)
DATASHEET_BF16 = 989.4e12  # H100/H200 dense bf16 tensor-core peak
# (compiled, grad_ckpt) in order of importance: what is measured first when the budget is short
VARIANTS = ((False, False), (True, False), (False, True), (True, True))
TINY_VARIANTS = ((False, False), (True, True))  # --tiny: each code path once (eager/compiled, ckpt off/on)


class StepBench:
    """One model on the device with its backend, VAE and inputs; ``step(b)`` runs a training step of batch b."""

    def __init__(self, name: str, size: dict[str, Any], device: torch.device, vae: torch.nn.Module) -> None:
        from opensora_core.models import build_model
        from opensora_core.models.registry import model_caps
        from opensora_core.parallel import build_backend
        from opensora_core.parallel.mesh import Mesh
        from opensora_core.schedulers import build_scheduler

        self.size, self.device, self.vae = size, device, vae
        latent = vae.get_latent_size((size["frames"], size["image"], size["image"]))
        self.length, self.caption_dim = size["caption"]
        torch.manual_seed(0)
        model = build_model(
            name,
            input_size=latent,
            caption_channels=self.caption_dim,
            model_max_length=self.length,
            **size["model"],
        ).to(device)
        _gpu.randomize_zero_params(model)
        self.model = model.train()
        self.patch = model.patch_size
        self.tokens_per_sample = latent[0] * (latent[1] // self.patch[1]) * (latent[2] // self.patch[2])
        mesh = Mesh(dp_size=1, dp_rank=0, dp_group=None, sp_size=1, sp_rank=0, sp_group=None)
        self.backend = build_backend("ddp", model, mesh, lr=1e-4, dtype="bf16", grad_clip=1.0)
        self.scheduler = build_scheduler("iddpm", timestep_respacing="")
        self.video_info = model_caps(name).video_info  # the size-conditioning inputs this family takes
        self.inputs: dict[int, dict[str, torch.Tensor]] = {}

    def batch(self, b: int) -> dict[str, torch.Tensor]:
        """Pixels [b, 3, T, H, W] in [-1, 1], captions [b, 1, L, D] with a mask (cached per batch size)."""
        if b not in self.inputs:
            self.inputs.clear()  # one batch size in memory at a time
            s, d = self.size, self.device
            inputs = {
                "pixels": torch.rand(b, 3, s["frames"], s["image"], s["image"], device=d) * 2 - 1,
                "y": torch.randn(b, 1, self.length, self.caption_dim, device=d),
                "mask": torch.ones(b, self.length, dtype=torch.long, device=d),
            }
            values = {"height": s["image"], "width": s["image"], "num_frames": s["frames"], "ar": 1.0, "fps": 24}
            for key in self.video_info:
                inputs[key] = torch.full((b,), float(values[key]), device=d)
            self.inputs[b] = inputs
        return self.inputs[b]

    def step(self, b: int) -> tuple[float, float]:
        """One training step of batch ``b``; returns (seconds of the whole step, seconds of the VAE encode)."""
        inputs = dict(self.batch(b))
        pixels = inputs.pop("pixels")
        _gpu.sync(self.device)
        start = time.perf_counter()
        x = self.vae.encode(pixels).float()  # [b, 4, T, H/8, W/8]
        _gpu.sync(self.device)
        vae_s = time.perf_counter() - start
        t = torch.randint(0, self.scheduler.num_timesteps, (b,), device=self.device)
        with self.backend.autocast():
            loss = self.scheduler.training_losses(self.backend.model, x, t, model_kwargs=inputs)[
                "loss"
            ].mean()
        self.backend.backward(loss)
        self.backend.step()
        _gpu.sync(self.device)
        return time.perf_counter() - start, vae_s

    def forward_flops_per_token(self) -> float:
        """Forward FLOPs of one sample / its tokens (FlopCounterMode, under bf16 autocast)."""
        from opensora_core.train.throughput import count_forward_flops

        inputs = {k: v[:1] for k, v in self.batch(1).items()}
        pixels = inputs.pop("pixels")
        x = self.vae.encode(pixels).float()
        t = torch.zeros(1, dtype=torch.long, device=self.device)
        with self.backend.autocast():
            flops = count_forward_flops(self.model, (x, t), inputs)
        return flops / self.tokens_per_sample


def find_batch(bench: StepBench, max_batch: int, budget: _gpu.Budget) -> tuple[int, list[int]]:
    """Largest power-of-two batch up to ``max_batch`` whose step fits in memory: double from 1 until a step
    runs out of memory, the GPU is over 80 % full, or ``max_batch``; returns (batch, batches tried)."""
    tried, best = [], 0
    total = _gpu.total_memory_gib(bench.device)
    b = 1
    while b <= max_batch and budget.left() > 0:
        tried.append(b)
        _gpu.reset_peak_memory(bench.device)
        try:
            bench.step(b)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory ends the search quietly
            if not _gpu.is_oom(exc):
                raise
            bench.inputs.clear()
            bench.backend.zero_grad()
            _gpu.reset_peak_memory(bench.device)
            break
        best = b
        if total is not None and _gpu.peak_memory_gib(bench.device) > 0.4 * total:
            break  # doubling again would pass ~80 %: keep headroom for the compiled variant
        b *= 2
    if best == 0:
        raise RuntimeError("even batch 1 does not fit in memory")
    return best, tried


def measure(bench: StepBench, b: int, size: dict[str, Any]) -> dict[str, float]:
    """Median step time of ``size['steps']`` steps at batch ``b`` after warm-up, and the peak memory."""
    for _ in range(size["warmup"]):
        bench.step(b)
    _gpu.reset_peak_memory(bench.device)
    times = [bench.step(b) for _ in range(size["steps"])]
    step_s = statistics.median(t for t, _ in times)
    return {
        "step_s": step_s,
        "vae_s": statistics.median(v for _, v in times),
        "peak_mem_gib": _gpu.peak_memory_gib(bench.device),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the measurements; print and return their records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="append the JSON lines to this file")
    parser.add_argument("--budget-s", type=float, default=200.0, help="stop starting measurements after this")
    parser.add_argument("--models", default="STDiT-XL/2,STDiT2-XL/2,STDiT3-XL/2", help="comma-separated MODELS names")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (smoke test)")
    args = parser.parse_args(argv)

    from opensora_core.models.registry import MODELS
    from opensora_core.train.throughput import measured_matmul_flops

    budget = _gpu.Budget(args.budget_s)
    size = TINY if args.tiny else FULL
    device = _gpu.pick_device(args.tiny)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    rec = _gpu.Recorder(args.out, {"machine": _gpu.machine(device), "tiny": args.tiny})
    peak = measured_matmul_flops(
        torch.bfloat16, n=size["peak_n"], seconds=1.0 if not args.tiny else 0.1, device=device
    )
    rec.write(name="matmul_peak", dtype="bf16", n=size["peak_n"], tflops=peak / 1e12)
    vae = _gpu.build_vae(args.tiny, device, torch.bfloat16)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; known: {sorted(MODELS)}")

    for name in names:
        bench = StepBench(name, size, device, vae)
        flops_per_token = bench.forward_flops_per_token()
        batches: dict[bool, int] = {}
        for compiled, ckpt in TINY_VARIANTS if args.tiny else VARIANTS:
            common = dict(
                name="train_step",
                model=name,
                compiled=_gpu.compile_backend(device) if compiled else False,
                grad_ckpt=ckpt,
            )
            if budget.left() <= 0:
                rec.write(**common, skipped=f"time budget of {args.budget_s:.0f} s used up")
                continue
            if compiled and not getattr(bench.model.blocks[0], "_compiled_call_impl", None):
                _gpu.compile_blocks(bench.model, _gpu.compile_backend(device))
            bench.model.grad_checkpointing = ckpt
            if ckpt not in batches:  # eager runs first and sizes the batch for both modes
                batches[ckpt], tried = find_batch(bench, size["max_batch"], budget)
            b = batches[ckpt]
            result = measure(bench, b, size)
            tokens_per_s = b * bench.tokens_per_sample / result["step_s"]
            rec.write(
                **common,
                batch=b,
                tokens_per_sample=bench.tokens_per_sample,
                **result,
                tokens_per_s_per_gpu=tokens_per_s,
                fwd_gflop_per_token=flops_per_token / 1e9,
                mfu=3 * flops_per_token * tokens_per_s / peak,
                mfu_datasheet=3 * flops_per_token * tokens_per_s / DATASHEET_BF16,
                batches_tried=tried if not compiled else None,
            )
        del bench
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rec.records


if __name__ == "__main__":
    main()
