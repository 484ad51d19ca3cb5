"""Trainer benchmarks on CPU: DDP scaling, gradient-checkpointing overhead, checkpoint save/load speed.

Measurements (one JSON line each: name, ours, baseline, ratio, unit, machine; ratio = ours / baseline):

- ``ddp2_vs_1proc_tokens_per_s_{tiny,mid}``: training tokens/s of the real trainer
  (``python -m opensora_core.train``, data loading, text encoding, EMA included) with 2 DDP processes
  (torchrun, gloo, one thread each, per-rank batch B) vs 1 process (one thread, batch B). The ideal ratio is 2.
- ``ddp2_vs_1proc_2threads_tokens_per_s_{tiny,mid}``: the same 2-process run vs 1 process using both cores
  (two threads): data parallelism vs intra-op threads on the same cores.
- ``grad_ckpt_step_time_{tiny,mid}``: seconds per training step with per-block activation checkpointing vs
  without (one process, one thread); the ratio is the recomputation overhead.
- ``ckpt_save_s_per_gb`` / ``ckpt_load_s_per_gb``: our checkpoint (model + EMA safetensors, optimizer, RNG,
  sampler, running states; fsync + atomic rename) of a 4-block XL-width STDiT vs the reference way of one
  ``torch.save`` per object without fsync; seconds per GB written / read (page cache warm for loads).
- Sequence-parallel rows (``sp2_vs_sp1_*``) come from ``benchmarks/sequence_parallel.py`` with
  ``--with-sp`` (:func:`sequence_parallel_rows`).

Sizes: tiny = the debug STDiT (hidden 64, depth 2, 8x32x32 pixels, patch 1x4x4: 512 tokens, batch 4);
mid = hidden 192, depth 4, 6 heads, patch 1x2x2 (2048 tokens, batch 2). Throughput comes from the trainer's
own ``tokens/s`` over the second half of the steps (the first half is warm-up).

    python benchmarks/train_step.py [--sizes tiny,mid] [--steps 8] [--repeats 2] [--with-sp] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import cpu_model  # noqa: E402

CONFIG = REPO / "configs" / "debug" / "tiny_train.py"

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "model.hidden_size": 64,
        "model.depth": 2,
        "model.num_heads": 4,
        "model.patch_size": (1, 4, 4),
        "batch_size": 4,
    },
    "mid": {
        "model.hidden_size": 192,
        "model.depth": 4,
        "model.num_heads": 6,
        "model.patch_size": (1, 2, 2),
        "batch_size": 2,
    },
}


def machine() -> str:
    """CPU model, core count, torch version."""
    import torch

    return f"{cpu_model()}, {os.cpu_count()} cpu, torch {torch.__version__}"


def record(name: str, ours: float, baseline: float, unit: str) -> dict[str, Any]:
    """One JSON line."""
    row = {
        "name": name,
        "ours": round(ours, 4),
        "baseline": round(baseline, 4),
        "ratio": round(ours / baseline, 4) if baseline else None,
        "unit": unit,
        "machine": machine(),
    }
    print(json.dumps(row), flush=True)
    return row


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _options(data: str, size: str, steps: int, extra: dict[str, Any] | None = None) -> list[str]:
    values = {
        **SIZES[size],
        "dataset.data_path": data,
        "max_steps": steps,
        "log_every": max(1, steps // 2),
        "ckpt_every": 0,
        "num_workers": 0,
        **(extra or {}),
    }
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in values.items()]


def _trainer_tokens_per_s(data: str, size: str, steps: int, nproc: int, threads: int, out: Path) -> float:
    """tokens/s of the trainer's last log window (the second half of ``steps``)."""
    args = [str(CONFIG), "--outputs", str(out), "--no-ema", "--cfg-options", *_options(data, size, steps)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "opensora_core.train", *args]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "opensora_core.train", *args,
        ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(REPO), timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    from opensora_core.train.reporting import parse_log_line

    lines = [
        parse_log_line(line) for line in proc.stderr.splitlines() if " step=" in line and "tokens/s=" in line
    ]
    return float(lines[-1]["tokens/s"])


def bench_ddp(data: str, size: str, steps: int, work: Path, repeats: int = 1) -> list[dict[str, Any]]:
    """2-process DDP vs 1 process (1 and 2 threads); variants alternate, best of ``repeats`` each."""
    variants = {"ddp": (2, 1), "one": (1, 1), "one2t": (1, 2)}
    best = dict.fromkeys(variants, 0.0)
    for r in range(repeats):
        for key, (nproc, threads) in variants.items():
            tps = _trainer_tokens_per_s(data, size, steps, nproc, threads, work / f"{key}-{size}-{r}")
            best[key] = max(best[key], tps)
    return [
        record(f"ddp2_vs_1proc_tokens_per_s_{size}", best["ddp"], best["one"], "tokens/s"),
        record(f"ddp2_vs_1proc_2threads_tokens_per_s_{size}", best["ddp"], best["one2t"], "tokens/s"),
    ]


def bench_grad_ckpt(data: str, size: str, steps: int, work: Path) -> list[dict[str, Any]]:
    """Step time with vs without gradient checkpointing (in-process, one thread, alternating runs)."""
    import torch

    from opensora_core.config import load_config
    from opensora_core.train import train

    torch.set_num_threads(1)
    times: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(2):
        for ckpt in (False, True):
            overrides = [*_options(data, size, steps), f"grad_checkpoint={ckpt}"]
            cfg = load_config(
                CONFIG, overrides=[*overrides, f"outputs={str(work / f'gc-{round_}-{ckpt}')!r}"]
            )
            result = train(cfg, ema=False)
            times[ckpt].append(result.final_metrics["step_time_s"])
    return [record(f"grad_ckpt_step_time_{size}", min(times[True]), min(times[False]), "s/step")]


def _fake_training_state(depth: int) -> tuple[Any, Any, Any]:
    """(model, ema state, optimizer) of an XL-width STDiT with ``depth`` blocks after one AdamW step."""
    import torch

    from opensora_core.models import build_model
    from opensora_core.train.ema import EMA

    model = build_model("STDiT-XL/2", depth=depth, input_size=(16, 32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    return model, EMA(model).state_dict(), opt


def bench_checkpoint(depth: int, work: Path) -> list[dict[str, Any]]:
    """Our atomic checkpoint vs one torch.save per object (no fsync); seconds per GB."""
    import torch

    from opensora_core import checkpoint as ckpt
    from opensora_core.parallel import init_distributed
    from opensora_core.train.rng import capture_rng_state

    env = init_distributed(env={})
    model, ema_state, opt = _fake_training_state(depth)
    model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def write(folder: Path) -> None:
        ckpt.save_safetensors(model_state, folder / ckpt.MODEL_FILE)
        ckpt.save_safetensors(ema_state, folder / ckpt.EMA_FILE)
        torch.save({"optimizer": opt.state_dict()}, folder / "optimizer.pt")
        torch.save(capture_rng_state(), folder / "rng.pt")
        ckpt.write_json({"epoch": 0, "global_step": 1}, folder / ckpt.RUNNING_STATES_FILE)

    def reference(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model_state, folder / "model.pt")
        torch.save(ema_state, folder / "ema.pt")
        torch.save(opt.state_dict(), folder / "optimizer.pt")
        (folder / "running_states.json").write_text(json.dumps({"epoch": 0, "global_step": 1}))

    def size_gb(folder: Path) -> float:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9

    def timed(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    save_ours, save_ref, load_ours, load_ref = [], [], [], []
    gb_ours = gb_ref = 0.0
    for i in range(2):
        exp = work / f"ckpt-{i}"
        save_ours.append(
            timed(lambda exp=exp: ckpt.save_checkpoint(env, str(exp), "epoch0-global_step1", write))
        )
        folder = exp / "epoch0-global_step1"
        gb_ours = size_gb(folder)
        ref = work / f"ref-{i}"
        save_ref.append(timed(lambda ref=ref: reference(ref)))
        gb_ref = size_gb(ref)

        def load_our(folder: Path = folder) -> None:
            ckpt.load_safetensors(folder / ckpt.MODEL_FILE)
            ckpt.load_safetensors(folder / ckpt.EMA_FILE)
            torch.load(folder / "optimizer.pt", weights_only=True)

        def load_reference(ref: Path = ref) -> None:
            for name in ("model.pt", "ema.pt", "optimizer.pt"):
                torch.load(ref / name, weights_only=True)

        load_ours.append(timed(load_our))
        load_ref.append(timed(load_reference))
        shutil.rmtree(exp)
        shutil.rmtree(ref)
    return [
        record("ckpt_save_s_per_gb", min(save_ours) / gb_ours, min(save_ref) / gb_ref, "s/GB"),
        record("ckpt_load_s_per_gb", min(load_ours) / gb_ours, min(load_ref) / gb_ref, "s/GB"),
    ]


def sequence_parallel_rows(tiny: bool) -> list[dict[str, Any]]:
    """Rows of ``benchmarks/sequence_parallel.py`` (sp=2 vs sp=1 overhead), run as a subprocess."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "sequence_parallel.py"), *(["--tiny"] if tiny else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"sequence_parallel.py failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,mid", help="comma-separated: tiny, mid")
    parser.add_argument("--steps", type=int, default=8, help="training steps per run (timed: the last half)")
    parser.add_argument(
        "--ckpt-depth", type=int, default=4, help="blocks of the XL-width STDiT for save/load"
    )
    parser.add_argument("--repeats", type=int, default=1, help="DDP runs per variant (best of, alternating)")
    parser.add_argument("--with-sp", action="store_true", help="also run benchmarks/sequence_parallel.py")
    parser.add_argument("--tiny", action="store_true", help="smallest settings (a smoke test)")
    parser.add_argument("--skip", default="", help="comma-separated groups to skip: ddp, grad_ckpt, ckpt")
    args = parser.parse_args(argv)
    sizes = ["tiny"] if args.tiny else [s for s in args.sizes.split(",") if s]
    unknown = set(sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
    steps = 4 if args.tiny else args.steps
    skip = set(args.skip.split(",")) - {""}
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        from opensora_core.data.synthetic import generate

        generate(work / "data", 16 if args.tiny else 32, size=32, num_frames=16, seed=0)
        data = str(work / "data" / "meta.csv")
        for size in sizes:
            if "ddp" not in skip:
                rows += bench_ddp(data, size, steps, work, args.repeats)
            if "grad_ckpt" not in skip:
                rows += bench_grad_ckpt(data, size, steps, work)
        if "ckpt" not in skip:
            rows += bench_checkpoint(1 if args.tiny else args.ckpt_depth, work)
        if args.with_sp:
            rows += sequence_parallel_rows(args.tiny)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
