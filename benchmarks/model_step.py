"""STDiT training-step cost on CPU: attention backends (sdpa vs math) and gradient checkpointing.

Measurements (one JSON line each: name, ours, baseline, ratio, unit, machine):

- ``step_tokens_per_s_sdpa_vs_math``: forward+backward of a small STDiT (hidden 384, depth 4, 6 heads, latent
  4x16x32x32, batch 2); ours = ``attn_backend="sdpa"``, baseline = ``"math"`` (reference numerics).
  ratio = ours / baseline (target >= 1.15).
- ``step_peak_mem_sdpa_vs_math``: peak extra memory of one step; ratio = ours / baseline (lower is better).
- ``attn_op_tokens_per_s_sdpa_vs_math`` / ``attn_op_peak_mem_sdpa_vs_math``: the attention op alone,
  forward+backward on the spatial-attention shape of that model (q/k/v [B*T, H, S, D] = [32, 6, 256, 64],
  laid out as the model produces them); target speed ratio >= 1.4.
- ``grad_ckpt_peak_mem_depth8`` / ``grad_ckpt_tokens_per_s_depth8``: depth 8, checkpointing on (ours) vs off;
  target memory ratio <= 0.6 (a cut of >= 40 %).

- ``compile_recompiles_per_epoch`` (``--recompiles``): a tiny STDiT2 with every block ``torch.compile``d trains
  (forward+backward) on the batches of two epochs of the bucket sampler (``VariableVideoBatchSampler`` over a
  table of mixed sizes; latents = frames x pixels/8); reports the graphs dynamo compiled in each epoch
  (``torch._dynamo`` counters; the backend does not change what dynamo recompiles, so ``eager`` by default)
  next to the batches and distinct shapes of the epoch. Target: a few graphs in epoch 1, none in epoch 2.

Timing: both variants run in one process on the same model and inputs, alternating, after a warm-up;
the median of ``--repeats`` runs each is reported (alternation cancels slow drifts of a shared machine).

Peak memory: every variant runs in a fresh subprocess with glibc's mmap threshold fixed at 64 KiB
(``MALLOC_MMAP_THRESHOLD_``), so every tensor buffer is its own mapping and is returned to the OS when freed
(RSS follows live tensor memory instead of heap high-water marks). After the model, inputs and one warm-up
step are in memory the process resets its peak-RSS mark (``/proc/self/clear_refs`` = 5), notes the current
RSS, runs one step and reports ``VmHWM - baseline``: the extra memory the step needed (activations, gradients,
attention temporaries). tracemalloc does not see torch allocations, so it is not used.

    python benchmarks/model_step.py [--repeats 3] [--tiny]
    python benchmarks/model_step.py --recompiles [--compile-backend eager|inductor]
"""

from __future__ import annotations

import argparse
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

from benchmarks._machine import cpu_model  # noqa: E402

FULL = dict(hidden=384, depth=4, heads=6, latent=(4, 16, 32, 32), batch=2, ckpt_depth=8)
TINY = dict(hidden=48, depth=2, heads=3, latent=(4, 4, 8, 8), batch=2, ckpt_depth=4)


def _machine() -> str:
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cpu, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )


# ---- workloads ---------------------------------------------------------------------------------------------


def _build(size: dict[str, Any], depth: int, backend: str, ckpt: bool):
    import torch

    from opensora_core.models import build_model

    c, t, h, w = size["latent"]
    torch.manual_seed(0)
    model = build_model(
        "STDiT-XL/2",
        input_size=(t, h, w),
        in_channels=c,
        hidden_size=size["hidden"],
        depth=depth,
        num_heads=size["heads"],
        caption_channels=4096,
        model_max_length=120,
        class_dropout_prob=0.0,
        attn_backend=backend,
        grad_checkpointing=ckpt,
    ).train()
    b = size["batch"]
    inputs = dict(
        x=torch.randn(b, c, t, h, w),
        timestep=torch.randint(0, 1000, (b,)),
        y=torch.randn(b, 1, 120, 4096),
        mask=torch.ones(b, 120, dtype=torch.long),
    )
    tokens = b * t * (h // 2) * (w // 2)
    return model, inputs, tokens


def _model_step(model, inputs) -> None:
    model.zero_grad(set_to_none=True)
    model(**inputs).square().mean().backward()


def _attn_tensors(size: dict[str, Any]):
    """q, k, v [B*T, H, S, D] as the model's qkv reshape/permute produces them (non-contiguous views)."""
    import torch

    _, t, h, w = size["latent"]
    n, s, heads = size["batch"] * t, (h // 2) * (w // 2), size["heads"]
    dim = size["hidden"] // heads
    qkv = torch.randn(n, s, 3, heads, dim).permute(2, 0, 3, 1, 4).detach().requires_grad_(False)
    leaf = qkv.clone().requires_grad_(True)
    return leaf, n * s


def _attn_step(leaf, backend: str) -> None:
    from opensora_core.models.attention import attention

    leaf.grad = None
    q, k, v = leaf.unbind(0)
    attention(q, k, v, backend).sum().backward()


# ---- peak memory (subprocess worker) --------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _worker(spec: dict[str, Any]) -> dict[str, float]:
    size = TINY if spec["tiny"] else FULL
    if spec["kind"] == "attn":
        leaf, _ = _attn_tensors(size)

        def run() -> None:
            _attn_step(leaf, spec["backend"])
    else:
        model, inputs, _ = _build(size, spec["depth"], spec["backend"], spec["ckpt"])

        def run() -> None:
            _model_step(model, inputs)

    run()  # warm-up: kernels, thread pools, gradient buffers of the parameters
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_kib("VmRSS")
    run()
    peak = _rss_kib("VmHWM")
    return {"peak_extra_mib": (peak - base) / 1024}


def _peak_mib(spec: dict[str, Any]) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_extra_mib"]


# ---- timing (in process, alternating) --------------------------------------------------------------------


def _alternate(run_a, run_b, repeats: int) -> tuple[float, float]:
    """Median seconds of run_a and run_b, alternating a, b, a, b, ... after one warm-up each."""
    run_a()
    run_b()
    ta, tb = [], []
    for i in range(repeats):
        for run, acc in ((run_a, ta), (run_b, tb)) if i % 2 == 0 else ((run_b, tb), (run_a, ta)):
            start = time.perf_counter()
            run()
            acc.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def _time_backends(size: dict[str, Any], repeats: int) -> tuple[float, float, int]:
    """Seconds per step with sdpa and with math (same model and inputs, backend switched)."""
    from opensora_core.models.attention import set_attn_backend

    model, inputs, tokens = _build(size, size["depth"], "sdpa", False)

    def step_sdpa() -> None:
        _model_step(set_attn_backend(model, "sdpa"), inputs)

    def step_math() -> None:
        _model_step(set_attn_backend(model, "math"), inputs)

    return (*_alternate(step_sdpa, step_math, repeats), tokens)


def _time_attention(size: dict[str, Any], repeats: int) -> tuple[float, float, int]:
    """Seconds per forward+backward of the attention op alone with sdpa and with math."""
    leaf, tokens = _attn_tensors(size)
    return (*_alternate(lambda: _attn_step(leaf, "sdpa"), lambda: _attn_step(leaf, "math"), repeats), tokens)


def _time_checkpointing(size: dict[str, Any], repeats: int) -> tuple[float, float, int]:
    """Seconds per step at ckpt_depth with gradient checkpointing on and off (sdpa)."""
    model, inputs, tokens = _build(size, size["ckpt_depth"], "sdpa", True)

    def step_on() -> None:
        model.grad_checkpointing = True
        _model_step(model, inputs)

    def step_off() -> None:
        model.grad_checkpointing = False
        _model_step(model, inputs)

    return (*_alternate(step_on, step_off, repeats), tokens)


# ---- recompiles on the bucket sampler ----------------------------------------------------------------------

BUCKETS = {"144p": {1: (1.0, 4), 8: (1.0, 2), 16: (1.0, 2)}, "240p": {1: (1.0, 2), 8: (1.0, 1)}}


def _bucket_batches(epoch: int) -> list[tuple[int, int, int, int]]:
    """(batch, T, H, W) pixel shapes of one epoch of the bucket sampler over 48 clips of mixed sizes."""
    import numpy as np
    import pandas as pd

    from opensora_core.data.sampler import VariableVideoBatchSampler

    rng = np.random.default_rng(0)
    sizes = np.array([(144, 256), (240, 426), (256, 256), (480, 640)])
    pick = rng.integers(0, len(sizes), 48)
    table = pd.DataFrame(
        {"num_frames": rng.choice([1, 20, 40], 48), "height": sizes[pick, 0], "width": sizes[pick, 1]}
    )
    dataset = type("Clips", (), {"data": table, "frame_interval": 1})()
    sampler = VariableVideoBatchSampler(dataset, BUCKETS, num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(epoch)
    shapes = []
    for batch in sampler:
        _, t, h, w = (int(v) for v in batch[0].split("-"))
        shapes.append((len(batch), t, h, w))
    return shapes


def measure_recompiles(backend: str, epochs: int = 2) -> dict[str, Any]:
    """Graphs compiled per epoch by a compiled tiny STDiT2 trained on the bucket sampler's batches."""
    import torch
    from torch._dynamo.utils import counters

    from opensora_core.models import build_model
    from opensora_core.models.compile import compile_blocks

    torch.manual_seed(0)
    model = build_model(
        "STDiT2-XL/2", hidden_size=48, depth=2, num_heads=3, caption_channels=32, model_max_length=12
    ).train()
    compile_blocks(model, backend=backend)
    torch._dynamo.reset()
    per_epoch, batches, shapes = [], [], []
    for epoch in range(epochs):
        before = counters["stats"]["unique_graphs"]
        epoch_shapes = _bucket_batches(epoch)
        for b, t, h, w in epoch_shapes:
            lat = (4, t, h // 8, w // 8)
            inputs = dict(
                x=torch.randn(b, *lat),
                timestep=torch.randint(0, 1000, (b,)),
                y=torch.randn(b, 1, 12, 32),
                mask=torch.ones(b, 12, dtype=torch.long),
                height=torch.full((b,), float(h)),
                width=torch.full((b,), float(w)),
                num_frames=torch.full((b,), float(t)),
                ar=torch.full((b,), h / w),
                fps=torch.full((b,), 24.0),
            )
            _model_step(model, inputs)
        per_epoch.append(int(counters["stats"]["unique_graphs"] - before))
        batches.append(len(epoch_shapes))
        shapes.append(len(set(epoch_shapes)))
    return {"graphs_per_epoch": per_epoch, "batches_per_epoch": batches, "distinct_shapes_per_epoch": shapes}


def _record(name: str, ours: float, baseline: float, unit: str, machine: str) -> dict[str, Any]:
    rec = {
        "name": name,
        "ours": round(ours, 3),
        "baseline": round(baseline, 3),
        "ratio": round(ours / baseline, 3) if baseline else None,
        "unit": unit,
        "machine": machine,
    }
    print(json.dumps(rec), flush=True)
    return rec


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run all measurements and print/return their JSON records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--recompiles", action="store_true", help="only count recompiles on the bucket sampler"
    )
    parser.add_argument("--compile-backend", default="eager", help="torch.compile backend for --recompiles")
    args = parser.parse_args(argv)
    if args.recompiles:
        import torch

        rec = {
            "name": "compile_recompiles_per_epoch",
            "backend": args.compile_backend,
            **measure_recompiles(args.compile_backend),
            "torch": torch.__version__,
            "machine": _machine(),
        }
        print(json.dumps(rec), flush=True)
        return [rec]
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return []

    size = TINY if args.tiny else FULL
    machine = _machine()
    records = []

    t_sdpa, t_math, tokens = _time_backends(size, args.repeats)
    records.append(
        _record("step_tokens_per_s_sdpa_vs_math", tokens / t_sdpa, tokens / t_math, "tokens/s", machine)
    )
    a_sdpa, a_math, attn_tokens = _time_attention(size, max(args.repeats, 5))
    records.append(
        _record(
            "attn_op_tokens_per_s_sdpa_vs_math",
            attn_tokens / a_sdpa,
            attn_tokens / a_math,
            "tokens/s",
            machine,
        )
    )
    t_on, t_off, ckpt_tokens = _time_checkpointing(size, args.repeats)

    # peak memory, one fresh subprocess per variant
    def peak(**spec: Any) -> float:
        return _peak_mib({"tiny": args.tiny, **spec})

    m_sdpa = peak(kind="step", depth=size["depth"], backend="sdpa", ckpt=False)
    m_math = peak(kind="step", depth=size["depth"], backend="math", ckpt=False)
    records.append(_record("step_peak_mem_sdpa_vs_math", m_sdpa, m_math, "MiB", machine))
    records.append(
        _record(
            "attn_op_peak_mem_sdpa_vs_math",
            peak(kind="attn", backend="sdpa"),
            peak(kind="attn", backend="math"),
            "MiB",
            machine,
        )
    )
    m_on = peak(kind="step", depth=size["ckpt_depth"], backend="sdpa", ckpt=True)
    m_off = peak(kind="step", depth=size["ckpt_depth"], backend="sdpa", ckpt=False)
    records.append(_record("grad_ckpt_peak_mem_depth8", m_on, m_off, "MiB", machine))
    records.append(
        _record("grad_ckpt_tokens_per_s_depth8", ckpt_tokens / t_on, ckpt_tokens / t_off, "tokens/s", machine)
    )
    return records


if __name__ == "__main__":
    main()
