"""STDiT / STDiT2 training step on CPU, ours side by side with the Open-Sora reference's model code.

The reference is imported from checkouts given on the command line (no reference code lives in this repo):
Open-Sora 1.0 (commit c861b98) for STDiT, Open-Sora 1.1 (commit d599fd7) for STDiT2. Modules the reference
imports that are CUDA-only or absent here are replaced before the import by ``benchmarks/_reference.py``
(the stand-ins ``benchmarks/sampling.py`` uses too: mmengine registry, timm's layer files, placeholders for
checkpoint/config helpers); xformers' block-diagonal ``memory_efficient_attention`` becomes one
``scaled_dot_product_attention`` call per caption block (what the kernel computes, at fused-kernel speed).

Both models are built at the same size, the reference's weights (zero-initialised projections given random
values) are loaded into ours with our checkpoint loader (``strict=True``), and the outputs are compared
(``max_abs_diff`` in the records). Mid size (default): hidden 384, depth 4, 6 heads, latent 4x16x32x32,
batch 2, 120-token captions (``--caption-lens``), 2 threads.

Precision (``--dtype``): ``fp32`` (default) or ``bf16``: both models cast to bf16 with bf16 inputs, as Open-Sora
trains (its booster casts the model; fp32 master weights live in the optimizer, outside this step). On this
CPU bf16 matrix multiplies run on AMX units, so the step is bound by everything around them.

Modes: ``plain`` and ``ckpt`` (gradient checkpointing of every block: the reference's
``set_grad_checkpoint``, our ``grad_checkpointing``); ours eager and, with ``--compile``, each block
``torch.compile``d (inductor). The reference always runs eager.

Speed: one process builds both models and times forward+backward alternately (ours, reference, reference,
ours, ...) after warm-up; medians of ``--rounds``. It runs with glibc's default allocator settings (what a
training process gets): the fixed mmap threshold of the memory workers below makes every allocation over
64 KiB a fresh mapping, which slowed the reference (many more temporaries) far more than ours and inflated the
speed ratio (STDiT compiled: 1.8x with it, 1.2-1.4x without). ``tokens_per_s`` = B*T*S patch tokens / step seconds.
Peak memory: one fresh subprocess per (model, implementation, mode, compiled), with glibc's mmap threshold
fixed (``MALLOC_MMAP_THRESHOLD_=65536``, ``MALLOC_TRIM_THRESHOLD_=0``: freed buffers go back to the OS for
both implementations alike). Each worker imports both implementations (same import footprint) and builds
one. ``step_peak_mib``: VmHWM - VmRSS over one step after a warm-up step (``/proc/self/clear_refs`` reset);
``process_peak_mib``: the worker's whole-process VmHWM (model, inputs, warm-up and timed steps; for a compiled
worker the compilation too).

One JSON line per (model, mode, compiled): ours and reference tokens/s, ``speed_ratio`` (ours / reference,
higher is better), ``step_mem_ratio`` and ``process_mem_ratio`` (ours / reference, lower is better), the
per-round times, recompiles, load average before/after, threads, machine.

    python benchmarks/reference_step.py --stdit /work/ref10 --stdit2 /work/ref11 --deps /work/refdeps \
        [--compile] [--dtype bf16] [--rounds 5] [--modes plain,ckpt] [--tiny] [--out results.jsonl]

A quiet 2-core machine takes about 1 minute per fp32 record (3 rounds; 8 records with --compile), so about 4
minutes with ``--modes plain`` or ``--no-eager``; bf16 with 7 rounds takes about 16 minutes for all 8
records. ``--tiny`` is a smoke run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import machine, randomise_zero_params  # noqa: E402
from opensora_core.models.compile import compile_blocks  # noqa: E402

MID = dict(hidden=384, depth=4, heads=6, latent=(4, 16, 32, 32), batch=2, caption=4096, tokens=120)
TINY = dict(hidden=48, depth=2, heads=3, latent=(4, 4, 8, 8), batch=2, caption=32, tokens=12)
MODELS = ("stdit", "stdit2")


# ---- the reference, imported from a checkout --------------------------------------------------------------


def install_reference(reference: Path, deps: Path) -> None:
    """Make the reference's model modules importable on this CPU machine (``benchmarks/_reference.py``)."""
    from benchmarks._reference import install_stand_ins

    install_stand_ins(reference, deps)


# ---- models and inputs ------------------------------------------------------------------------------------


def _config(model: str, size: dict[str, Any]) -> dict[str, Any]:
    c, t, h, w = size["latent"]
    common = dict(
        in_channels=c,
        patch_size=(1, 2, 2),
        hidden_size=size["hidden"],
        depth=size["depth"],
        num_heads=size["heads"],
        class_dropout_prob=0.0,
        caption_channels=size["caption"],
        model_max_length=size["tokens"],
    )
    if model == "stdit":
        return {**common, "input_size": (t, h, w)}
    return {**common, "input_sq_size": 8 * h, "qk_norm": True}


DTYPES = ("fp32", "bf16")


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def cast(net, dtype: str, reference: bool):
    """The model in ``dtype`` (the random values are drawn in fp32 first, so both precisions hold the same
    weights); the 1.0 reference also keeps its own ``dtype`` attribute, which its forward casts inputs to."""
    net = net.to(_torch_dtype(dtype))
    if reference and "dtype" in vars(net):  # a plain attribute (1.0), not 1.1's PreTrainedModel property
        net.dtype = _torch_dtype(dtype)
    return net


def build_reference(model: str, size: dict[str, Any]):
    """The reference model at ``size`` (float32, train mode), zero-initialised weights given random values."""
    import torch

    torch.manual_seed(0)
    cfg = _config(model, size)
    if model == "stdit":
        net = importlib.import_module("opensora.models.stdit.stdit").STDiT(**cfg)
    else:
        mod = importlib.import_module("opensora.models.stdit.stdit2")
        net = mod.STDiT2(mod.STDiT2Config(**cfg))
    randomise_zero_params(net)
    return net.train()


def build_ours(model: str, size: dict[str, Any], state: dict[str, Any] | None):
    """Our model at ``size`` (train mode), with ``state`` (the reference's state dict) loaded strictly."""
    import torch

    from opensora_core.models import build_model
    from opensora_core.models.checkpoint import load_checkpoint

    torch.manual_seed(0)
    name = "STDiT-XL/2" if model == "stdit" else "STDiT2-XL/2"
    net = build_model(name, **_config(model, size))
    if state is not None:
        load_checkpoint(net, state, strict=True)
    return net.train()


def set_checkpointing(net, on: bool, reference: bool) -> None:
    """Gradient checkpointing of every block: the reference's block attribute, our model flag."""
    if reference:
        for block in net.blocks:
            block.grad_checkpointing = on
    else:
        net.grad_checkpointing = on


def make_inputs(
    model: str, size: dict[str, Any], caption_lens: list[int], dtype: str = "fp32"
) -> tuple[dict[str, Any], int]:
    """Model inputs (fixed seed; floating ones in ``dtype``) and the number of patch tokens of the batch."""
    import torch

    c, t, h, w = size["latent"]
    b, length = size["batch"], size["tokens"]
    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(b, length, dtype=torch.long)
    for i in range(b):
        mask[i, : min(length, caption_lens[i % len(caption_lens)])] = 1
    inputs: dict[str, Any] = dict(
        x=torch.randn(b, c, t, h, w, generator=g),
        timestep=torch.randint(0, 1000, (b,), generator=g),
        y=torch.randn(b, 1, length, size["caption"], generator=g),
        mask=mask,
    )
    if model == "stdit2":
        px_h, px_w = 8 * h, 8 * w
        inputs.update(
            height=torch.full((b,), float(px_h)),
            width=torch.full((b,), float(px_w)),
            num_frames=torch.full((b,), float(t)),
            ar=torch.full((b,), px_h / px_w),
            fps=torch.full((b,), 24.0),
        )
    inputs = {k: v.to(_torch_dtype(dtype)) if v.is_floating_point() else v for k, v in inputs.items()}
    return inputs, b * t * (h // 2) * (w // 2)


def step(net, inputs: dict[str, Any]) -> None:
    """One forward+backward (loss = mean square of the output)."""
    net.zero_grad(set_to_none=True)
    net(**inputs).square().mean().backward()


# ---- workers (subprocesses) -------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _setup(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(spec["threads"])
    install_reference(Path(spec["reference"]), Path(spec["deps"]))
    importlib.import_module(
        "opensora.models.stdit.stdit" if spec["model"] == "stdit" else "opensora.models.stdit.stdit2"
    )
    importlib.import_module("opensora_core.models")
    return TINY if spec["tiny"] else MID


def _dynamo_recompiles() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["recompiles"].values())) if "recompiles" in counters else 0


def time_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Both models in one process: parity check, then alternating timed steps per mode."""
    import torch

    size = _setup(spec)
    model = spec["model"]
    ref = build_reference(model, size)
    ours = cast(build_ours(model, size, ref.state_dict()), spec["dtype"], reference=False)
    ref = cast(ref, spec["dtype"], reference=True)
    inputs, tokens = make_inputs(model, size, spec["caption_lens"], spec["dtype"])
    with torch.no_grad():
        ref.eval(), ours.eval()
        diff = (ref(**inputs) - ours(**inputs)).abs().max().item()
        ref.train(), ours.train()
    out: dict[str, Any] = {"tokens": tokens, "max_abs_diff": diff, "modes": {}}
    if spec["compiled"]:
        compile_blocks(ours)  # inductor, each block (opensora_core.models.compile)
    for mode in spec["modes"]:
        set_checkpointing(ref, mode == "ckpt", reference=True)
        set_checkpointing(ours, mode == "ckpt", reference=False)
        start = time.perf_counter()
        step(ours, inputs)  # warm-up (compiles when compiled)
        warm_s = time.perf_counter() - start
        step(ref, inputs)
        recompiles_before = _dynamo_recompiles()
        t_ours, t_ref = [], []
        for i in range(spec["rounds"]):
            order = ((ours, t_ours), (ref, t_ref)) if i % 2 == 0 else ((ref, t_ref), (ours, t_ours))
            for net, acc in order:
                start = time.perf_counter()
                step(net, inputs)
                acc.append(time.perf_counter() - start)
        out["modes"][mode] = {
            "ours_s": t_ours,
            "ref_s": t_ref,
            "first_step_s": warm_s,
            "recompiles_while_timed": _dynamo_recompiles() - recompiles_before,
        }
    return out


def mem_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One implementation, one mode: step peak over the resting RSS, and the whole-process peak."""
    size = _setup(spec)
    model, reference = spec["model"], spec["impl"] == "reference"
    net = build_reference(model, size) if reference else build_ours(model, size, None)
    net = cast(net, spec["dtype"], reference=reference)
    set_checkpointing(net, spec["mode"] == "ckpt", reference=reference)
    if spec["compiled"]:
        compile_blocks(net)
    inputs, _ = make_inputs(model, size, spec["caption_lens"], spec["dtype"])
    step(net, inputs)  # warm-up: kernels, thread pools, gradient buffers (and compilation)
    step(net, inputs)
    warm_peak = _status_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status_kib("VmRSS")
    step(net, inputs)
    peak = _status_kib("VmHWM")
    return {"step_peak_mib": (peak - base) / 1024, "process_peak_mib": max(peak, warm_peak) / 1024}


def _run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    if spec["kind"] == "mem":  # fixed thresholds for the peaks only; timing runs with glibc's defaults
        env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    env["OMP_NUM_THREADS"] = str(spec["threads"])
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise RuntimeError(f"worker {spec.get('kind')} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- driver -------------------------------------------------------------------------------------------------


def _mem_ratio(ours_mib: float, ref_mib: float) -> float | None:
    """ours / reference; None when the reference's peak is under 1 MiB (below what VmHWM resolves: the tiny
    sizes' step peaks read 0 or negative)."""
    return round(ours_mib / ref_mib, 3) if ref_mib >= 1.0 else None


def compare(model: str, compiled: bool, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Time both implementations and measure their memory; one record per mode."""
    import torch

    base = dict(
        model=model,
        reference=str(getattr(args, model)),
        deps=str(args.deps),
        tiny=args.tiny,
        threads=args.threads,
        caption_lens=args.caption_lens,
        dtype=args.dtype,
    )
    load_before = os.getloadavg()
    timing = _run_worker(
        {**base, "kind": "time", "compiled": compiled, "modes": args.modes, "rounds": args.rounds}
    )
    records = []
    for mode in args.modes:
        mem = {
            impl: _run_worker(
                {**base, "kind": "mem", "impl": impl, "mode": mode, "compiled": compiled and impl == "ours"}
            )
            for impl in ("ours", "reference")
        }
        t = timing["modes"][mode]
        ours_s, ref_s = statistics.median(t["ours_s"]), statistics.median(t["ref_s"])
        rec = {
            "name": "train_step_vs_reference",
            "model": model,
            "mode": mode,
            "compiled": "inductor" if compiled else False,
            "dtype": args.dtype,
            "ours_tokens_per_s": round(timing["tokens"] / ours_s, 1),
            "ref_tokens_per_s": round(timing["tokens"] / ref_s, 1),
            "speed_ratio": round(ref_s / ours_s, 3),
            "round_ratios": [round(r / o, 3) for o, r in zip(t["ours_s"], t["ref_s"], strict=True)],
            "ours_step_peak_mib": round(mem["ours"]["step_peak_mib"], 1),
            "ref_step_peak_mib": round(mem["reference"]["step_peak_mib"], 1),
            "step_mem_ratio": _mem_ratio(mem["ours"]["step_peak_mib"], mem["reference"]["step_peak_mib"]),
            "ours_process_peak_mib": round(mem["ours"]["process_peak_mib"], 1),
            "ref_process_peak_mib": round(mem["reference"]["process_peak_mib"], 1),
            "process_mem_ratio": _mem_ratio(
                mem["ours"]["process_peak_mib"], mem["reference"]["process_peak_mib"]
            ),
            "first_step_s": round(t["first_step_s"], 2),
            "recompiles_while_timed": t["recompiles_while_timed"],
            "max_abs_diff": timing["max_abs_diff"],
            "size": "tiny" if args.tiny else "mid",
            "rounds": args.rounds,
            "threads": args.threads,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__,
            "machine": machine(),
        }
        print(json.dumps(rec), flush=True)
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Parse the command line, run the comparisons, print (and optionally append) JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdit", type=Path, help="Open-Sora 1.0 checkout (c861b98) for STDiT")
    parser.add_argument("--stdit2", type=Path, help="Open-Sora 1.1 checkout (d599fd7) for STDiT2")
    parser.add_argument(
        "--deps", type=Path, help="pip --target folder with timm 0.9.16, rotary-embedding-torch"
    )
    parser.add_argument("--compile", action="store_true", help="also time ours with torch.compile'd blocks")
    parser.add_argument(
        "--eager", action=argparse.BooleanOptionalAction, default=True, help="time ours eager"
    )
    parser.add_argument("--modes", default="plain,ckpt", help="comma list of plain, ckpt")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="precision of both models and inputs")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every worker")
    parser.add_argument("--caption-lens", default="120", help="valid caption tokens per sample, comma list")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a smoke run of a few seconds)")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(time_worker(spec) if spec["kind"] == "time" else mem_worker(spec)))
        return []
    models = [m for m in MODELS if getattr(args, m) is not None]
    if not models or args.deps is None:
        parser.error("give --deps and at least one of --stdit / --stdit2 (reference checkouts)")
    for m in models:
        if not (getattr(args, m) / "opensora" / "models" / "stdit").is_dir():
            parser.error(f"--{m} {getattr(args, m)}: not an Open-Sora checkout (no opensora/models/stdit)")
    args.modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in args.modes if m not in ("plain", "ckpt")]:
        parser.error(f"--modes: unknown {bad}; use plain and/or ckpt")
    args.caption_lens = [int(n) for n in args.caption_lens.split(",")]
    variants = ([False] if args.eager else []) + ([True] if args.compile else [])
    records = [rec for m in models for compiled in variants for rec in compare(m, compiled, args)]
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return records


if __name__ == "__main__":
    main()
