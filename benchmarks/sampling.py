"""Sampling cost: DPM-Solver++-20 vs IDDPM-100, both with classifier-free guidance, on a small STDiT (CPU).

Prints one JSON line per measurement (name, ours, baseline, ratio, unit, machine):

- ``sampling_seconds_per_video``: wall seconds per video, ours = DPM-Solver-20, baseline = IDDPM-100
  (fastest of ``--repeats`` interleaved runs: least disturbed by background load); ratio = baseline / ours (speed-up; target >= 4.5).
- ``sampling_cpu_seconds_per_video_...``: the same in process CPU seconds (steadier than wall time when the
  machine is shared).
- ``sampling_model_evals_per_video``: model forwards per video (20 vs 100).
- ``cfg_forwards_per_step``: forwards per sampling step with CFG; ours batches cond + null into one 2B forward,
  the baseline is running them as two forwards.
- ``sampler_overhead_per_step``: scheduler arithmetic per step with a free (zero-output) model, DPM-Solver vs
  IDDPM; shows the speed-up comes from the 5x fewer model evaluations.

Usage: ``python benchmarks/sampling.py [--repeats 3] [--tiny]`` (``--tiny`` = fewer steps / smaller model
for smoke tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable


def _machine() -> str:
    import torch

    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, threads {torch.get_num_threads()}"


def _seconds(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print/return its JSON records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iddpm-steps", type=int, default=100)
    parser.add_argument("--dpm-steps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: stable on shared CPUs; 0 = torch default)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny model and few steps (smoke test)")
    args = parser.parse_args(argv)

    import torch

    from opensora_core.models import build_model
    from opensora_core.schedulers import build_scheduler

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.tiny:
        size, hidden, depth, iddpm_steps, dpm_steps = (2, 8, 8), 32, 1, 5, 2
        args.repeats = 1
    else:
        size, hidden, depth, iddpm_steps, dpm_steps = (8, 16, 16), 128, 2, args.iddpm_steps, args.dpm_steps
    caption_channels, max_len = 64, 16
    model = build_model(
        "STDiT-XL/2",
        depth=depth,
        hidden_size=hidden,
        num_heads=4,
        input_size=size,
        caption_channels=caption_channels,
        model_max_length=max_len,
    ).eval()
    with torch.no_grad():  # zero-initialised layers (adaLN / final) would make the model output 0
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    z = torch.randn(1, 4, *size)
    y = torch.randn(1, 1, max_len, caption_channels)
    mask = torch.ones(1, max_len, dtype=torch.long)
    y_null = model.null_caption(1)

    iddpm = build_scheduler("iddpm", num_sampling_steps=iddpm_steps, cfg_scale=7.0, cfg_channel=3)
    dpm = build_scheduler("dpm-solver", num_sampling_steps=dpm_steps, cfg_scale=7.0)
    with torch.inference_mode():
        warm_up = build_scheduler("dpm-solver", num_sampling_steps=2)
        warm_up.sample(model, z, y, mask=mask, y_null=y_null)
        dpm_times, iddpm_times = [], []
        for _ in range(args.repeats):  # interleaved so background load hits both alike
            dpm_times.append(_seconds(lambda: dpm.sample(model, z, y, mask=mask, y_null=y_null)))
            iddpm_times.append(
                _seconds(
                    lambda: iddpm.sample(
                        model, z, y, mask=mask, y_null=y_null, generator=torch.Generator().manual_seed(0)
                    )
                )
            )
        dpm_evals, iddpm_evals = dpm.last_num_model_evals, iddpm.last_num_model_evals

        # scheduler arithmetic alone: a model that costs nothing
        def free_model(x, t, **kwargs):
            return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

        dpm_free = min(
            _seconds(lambda: dpm.sample(free_model, z, y, y_null=y_null))[0] for _ in range(args.repeats)
        )
        iddpm_free = min(
            _seconds(lambda: iddpm.sample(free_model, z, y, y_null=y_null))[0] for _ in range(args.repeats)
        )
    dpm_s, iddpm_s = min(w for w, _ in dpm_times), min(w for w, _ in iddpm_times)
    dpm_cpu, iddpm_cpu = min(c for _, c in dpm_times), min(c for _, c in iddpm_times)

    machine = _machine()
    records = [
        {
            "name": f"sampling_seconds_per_video_dpm{dpm_steps}_vs_iddpm{iddpm_steps}",
            "ours": round(dpm_s, 4),
            "baseline": round(iddpm_s, 4),
            "ratio": round(iddpm_s / dpm_s, 3),
            "unit": "s/video",
            "machine": machine,
        },
        {
            "name": f"sampling_cpu_seconds_per_video_dpm{dpm_steps}_vs_iddpm{iddpm_steps}",
            "ours": round(dpm_cpu, 4),
            "baseline": round(iddpm_cpu, 4),
            "ratio": round(iddpm_cpu / dpm_cpu, 3),
            "unit": "cpu s/video",
            "machine": machine,
        },
        {
            "name": "sampling_model_evals_per_video",
            "ours": dpm_evals,
            "baseline": iddpm_evals,
            "ratio": round(iddpm_evals / dpm_evals, 3),
            "unit": "forwards/video",
            "machine": machine,
        },
        {
            "name": "cfg_forwards_per_step",
            "ours": iddpm_evals / iddpm_steps,
            "baseline": 2.0,
            "ratio": round(2.0 / (iddpm_evals / iddpm_steps), 3),
            "unit": "forwards/step",
            "machine": machine,
        },
        {
            "name": "sampler_overhead_per_step",
            "ours": round(1000 * dpm_free / dpm_steps, 4),
            "baseline": round(1000 * iddpm_free / iddpm_steps, 4),
            "ratio": round((iddpm_free / iddpm_steps) / (dpm_free / dpm_steps), 3),
            "unit": "ms/step (model excluded)",
            "machine": machine,
        },
    ]
    for record in records:
        print(json.dumps(record))
    return records


if __name__ == "__main__":
    main()
