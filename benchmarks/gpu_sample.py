"""Sampling time on a GPU: seconds per 16x256x256 video with STDiT-XL/2, IDDPM-100 and DPM-Solver-20, CFG.

Per video: the sampler over latents 4x16x32x32 with classifier-free guidance batched into one 2B forward per
step (cfg_scale 7), bf16 weights, then the SD-VAE decode (bf16, chunks of 32 frames: all 16 at once) to
16x256x256 pixels.
Caption embeddings are T5-XXL-sized random tensors (120 x 4096): the text encoder runs once per prompt and is
not part of the per-video time. Eager and ``torch.compile`` (each block compiled) for both samplers.

One JSON line per measurement (``name`` = "sample"): scheduler, steps, compiled, batch (videos per call),
seconds_per_video (median of ``--repeats`` after a warm-up call), sampler_s and vae_decode_s (its parts),
model_evals, peak_mem_gib. Measurements that do not fit ``--budget-s`` are written with ``skipped``.

    python benchmarks/gpu_sample.py [--out FILE.jsonl] [--budget-s 110] [--repeats 3] [--batch 1] [--tiny]

``--tiny``: hidden 48, depth 2, 4x32x32 pixels, a narrow VAE, 5 / 2 steps, on the CPU in a few seconds
(``eager`` compile backend, DPM-Solver eager and IDDPM compiled only; its numbers mean nothing).
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

FULL = dict(frames=16, image=256, caption=(120, 4096), model={}, steps={"dpm-solver": 20, "iddpm": 100})
TINY = dict(
    frames=4,
    image=32,
    caption=(8, 64),
    model=dict(hidden_size=48, depth=2, num_heads=4),
    steps={"dpm-solver": 2, "iddpm": 5},
)
# (scheduler, compiled) in order of importance
VARIANTS = (("dpm-solver", False), ("dpm-solver", True), ("iddpm", False), ("iddpm", True))
TINY_VARIANTS = (("dpm-solver", False), ("iddpm", True))  # --tiny: each code path once


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the measurements; print and return their records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="append the JSON lines to this file")
    parser.add_argument("--budget-s", type=float, default=110.0, help="stop starting measurements after this")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--batch", type=int, default=1, help="videos per sampler call")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU (smoke test)")
    args = parser.parse_args(argv)

    from opensora_core.models import build_model
    from opensora_core.schedulers import build_scheduler

    budget = _gpu.Budget(args.budget_s)
    size = TINY if args.tiny else FULL
    repeats = 1 if args.tiny else args.repeats
    device = _gpu.pick_device(args.tiny)
    rec = _gpu.Recorder(args.out, {"machine": _gpu.machine(device), "tiny": args.tiny})
    vae = _gpu.build_vae(args.tiny, device, torch.bfloat16)
    latent = vae.get_latent_size((size["frames"], size["image"], size["image"]))
    length, dim = size["caption"]
    torch.manual_seed(0)
    model = build_model(
        "STDiT-XL/2",
        input_size=latent,
        caption_channels=dim,
        model_max_length=length,
        dtype="bf16",
        **size["model"],
    )
    _gpu.randomize_zero_params(model)
    model = model.to(device=device, dtype=torch.bfloat16).eval()
    b = args.batch
    z = torch.randn(b, 4, *latent, device=device)
    y = torch.randn(b, 1, length, dim, device=device)
    mask = torch.ones(b, length, dtype=torch.long, device=device)
    y_null = model.null_caption(b)

    def video(scheduler: Any) -> tuple[float, float]:
        """(sampler seconds, decode seconds) of one call producing ``b`` videos."""
        _gpu.sync(device)
        start = time.perf_counter()
        latents = scheduler.sample(model, z, y, mask=mask, y_null=y_null)
        _gpu.sync(device)
        mid = time.perf_counter()
        pixels = vae.decode(latents.to(torch.bfloat16))  # [b, 3, T, H, W]
        _gpu.sync(device)
        assert pixels.shape[-2:] == (size["image"], size["image"])
        return mid - start, time.perf_counter() - mid

    with torch.inference_mode():
        for name, compiled in TINY_VARIANTS if args.tiny else VARIANTS:
            steps = size["steps"][name]
            backend = _gpu.compile_backend(device) if compiled else False
            common = dict(name="sample", scheduler=name, steps=steps, compiled=backend, batch=b)
            if budget.left() <= 0:
                rec.write(**common, skipped=f"time budget of {args.budget_s:.0f} s used up")
                continue
            if compiled and not getattr(model.blocks[0], "_compiled_call_impl", None):
                _gpu.compile_blocks(model, backend)
            scheduler = build_scheduler(name, num_sampling_steps=steps, cfg_scale=7.0)
            video(build_scheduler(name, num_sampling_steps=2, cfg_scale=7.0))  # warm-up (and compilation)
            _gpu.reset_peak_memory(device)
            times = [video(scheduler) for _ in range(repeats)]
            total = statistics.median(s + d for s, d in times)
            rec.write(
                **common,
                seconds_per_video=total / b,
                sampler_s=statistics.median(s for s, _ in times) / b,
                vae_decode_s=statistics.median(d for _, d in times) / b,
                model_evals=scheduler.last_num_model_evals,
                peak_mem_gib=_gpu.peak_memory_gib(device),
            )
    return rec.records


if __name__ == "__main__":
    main()
