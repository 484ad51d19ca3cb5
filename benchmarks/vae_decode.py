"""Peak memory of VAE decoding for a 64-frame video: micro_batch_size=4 vs all frames at once (None).

Each configuration runs in a fresh subprocess. After the model and the latents are in memory and a single-frame
warm-up decode has run (lazy library loading, kernel set-up), the process resets its peak-RSS mark
(``/proc/self/clear_refs`` = 5), notes the current RSS as baseline, decodes once, and reports
``ru_maxrss - baseline``: the extra memory the decode needed. Both decodes are also checked to give the same
video. Prints one JSON line per measurement (name, ours, baseline, ratio, unit, machine).

Defaults are scaled down to run in 2-3 minutes on 2 CPU cores: the SD-VAE decoder layout
(4 blocks, 2 resnets per block, mid-block attention, 8x upsampling) with block_out_channels (64, 128, 256, 256)
and 16x16 latents (128x128 frames). The full SD-VAE widths (128, 256, 512, 512) at 32x32 latents take about
12 s per frame here (13 minutes per configuration); pass ``--channels 128,256,512,512 --latent 32`` on a
bigger machine.

    python benchmarks/vae_decode.py [--frames 64] [--latent 16] [--channels 64,128,256,256] [--micro-batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    """Build the VAE, decode once, print peak extra memory (MiB) and time as JSON."""
    import torch
    from diffusers import AutoencoderKL

    from opensora_core.models.vae import VideoAutoencoderKL

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.channels.split(","))
    module = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=2,
        norm_num_groups=args.norm_groups,
        latent_channels=4,
    )
    mbs = None if args.micro_batch_size <= 0 else args.micro_batch_size
    vae = VideoAutoencoderKL(module, micro_batch_size=mbs)
    z = torch.randn(1, 4, args.frames, args.latent, args.latent, generator=torch.Generator().manual_seed(1))
    vae.decode(
        z[:, :, :1]
    )  # warm-up on one frame: lazy library loading and kernel set-up are not decode memory
    reset = _reset_peak_rss()
    baseline = _rss_mib()
    start = time.perf_counter()
    video = vae.decode(z)  # [1, 3, T, 8h, 8w]
    seconds = time.perf_counter() - start
    peak = _peak_rss_mib()
    if args.out:
        torch.save(video.contiguous(), args.out)
    result = {
        "peak_extra_mib": peak - baseline,
        "seconds": seconds,
        "baseline_rss_mib": baseline,
        "peak_reset": reset,
        "shape": list(video.shape),
    }
    print(json.dumps(result))


def _run_child(args: argparse.Namespace, micro_batch_size: int, out: Path) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--micro-batch-size", str(micro_batch_size)]
    for key in ("frames", "latent", "channels", "norm_groups", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({' '.join(cmd)}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _machine(threads: int) -> str:
    import torch

    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {threads} threads"


def main(argv: list[str] | None = None) -> list[dict]:
    """Run both configurations and print the JSON lines; returns them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--latent", type=int, default=16, help="latent height = width (pixels = 8x)")
    parser.add_argument(
        "--channels", default="64,128,256,256", help="block_out_channels of the AutoencoderKL"
    )
    parser.add_argument("--norm-groups", type=int, default=32)
    parser.add_argument(
        "--micro-batch-size", type=int, default=4, help="<= 0 means None (all frames at once)"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return []
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        chunked = _run_child(args, args.micro_batch_size, Path(tmp) / "chunked.pt")
        full = _run_child(args, 0, Path(tmp) / "full.pt")
        max_diff = (
            (torch.load(Path(tmp) / "chunked.pt") - torch.load(Path(tmp) / "full.pt")).abs().max().item()
        )
    size = f"{args.frames}x{args.latent * 8}x{args.latent * 8}, channels {args.channels}"
    machine = _machine(args.threads)
    lines = [
        {
            "name": f"vae_decode_peak_extra_rss ({size}; micro_batch_size={args.micro_batch_size} vs None)",
            "ours": round(chunked["peak_extra_mib"], 1),
            "baseline": round(full["peak_extra_mib"], 1),
            "ratio": round(chunked["peak_extra_mib"] / full["peak_extra_mib"], 4),
            "unit": "MiB",
            "machine": machine,
            "max_abs_diff": max_diff,
            "peak_reset": chunked["peak_reset"] and full["peak_reset"],
        },
        {
            "name": f"vae_decode_seconds ({size}; micro_batch_size={args.micro_batch_size} vs None)",
            "ours": round(chunked["seconds"], 2),
            "baseline": round(full["seconds"], 2),
            "ratio": round(chunked["seconds"] / full["seconds"], 4),
            "unit": "s",
            "machine": machine,
        },
    ]
    for line in lines:
        print(json.dumps(line))
    return lines


if __name__ == "__main__":
    main()
