"""Sequence-parallel overhead on CPU: two processes at the same global batch, sp=2 vs sp=1.

Both variants train the same STDiT (hidden 192, depth 4, 6 heads, latent 4x8x32x32, patch 1x2x2: 8 frames x
256 tokens) with the ``fsdp2`` backend on two gloo processes (one thread each) and a global batch of 4:

- baseline, sp=1 (dp 2): each rank trains 2 samples on the full 2048-token sequence;
- ours, sp=2 (dp 1 x sp 2): each rank trains all 4 samples on 4 of the 8 frames (1024 tokens), with two
  all-to-alls per temporal attention and an all-gather of the output.

Per rank the arithmetic is the same, so the ratio is the cost of the sequence-parallel communication and of
the duplicated per-sample work (embeddings, timestep/caption MLPs, the loss on the gathered output).

Measurements (one JSON line each: name, ours, baseline, ratio, unit, machine; ratio = ours / baseline):
- ``sp2_vs_sp1_train_step_s``: one optimizer step (forward, backward, step), wall seconds;
- ``sp2_vs_sp1_forward_s``: one forward pass without autograd, wall seconds;
- ``*_cpu_s``: the same in CPU seconds of each process (mean of the two ranks, gloo threads included). Wall
  time on a shared machine also counts waiting for a descheduled peer at every collective; CPU time is the
  work itself (compute plus the copies and transfers sequence parallelism adds).

Timing: the two variants alternate (``--repeats`` rounds of ``--steps`` steps each, after a warm-up step) and
the median per-step time over rounds is reported (alternation cancels slow drifts of a shared machine).

    python benchmarks/sequence_parallel.py [--repeats 3] [--steps 3] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import cpu_model  # noqa: E402

FULL = dict(hidden=192, depth=4, heads=6, latent=(4, 8, 32, 32), batch=4)
TINY = dict(hidden=48, depth=2, heads=2, latent=(4, 4, 8, 8), batch=4)


def _machine() -> str:
    import torch

    return f"{cpu_model()}, {os.cpu_count()} cpu, torch {torch.__version__}, 2 processes x 1 thread, gloo"


def _variant(size: dict[str, Any], sp_size: int, env: Any) -> dict[str, Any]:
    """Model + fsdp2 backend + this rank's fixed inputs for one sp size."""
    import torch

    from opensora_core.models import build_model
    from opensora_core.parallel import apply_sequence_parallel, build_backend, build_mesh
    from opensora_core.schedulers import build_scheduler

    c, t, h, w = size["latent"]
    torch.manual_seed(0)
    model = build_model(
        "STDiT-XL/2",
        input_size=(t, h, w),
        in_channels=c,
        hidden_size=size["hidden"],
        depth=size["depth"],
        num_heads=size["heads"],
        caption_channels=64,
        model_max_length=16,
        class_dropout_prob=0.0,
    )
    mesh = build_mesh(env, sp_size)
    apply_sequence_parallel(model, mesh.sp_group)
    backend = build_backend("fsdp2", model, mesh, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batch = size["batch"]
    x = torch.randn(batch, c, t, h, w, generator=g)
    y = torch.randn(batch, 1, 16, 64, generator=g)
    timestep = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn(x.shape, generator=g)
    rows = slice(mesh.dp_rank, None, mesh.dp_size)  # this data-parallel rank's share of the global batch
    return dict(
        backend=backend,
        scheduler=build_scheduler("iddpm", timestep_respacing=""),
        x=x[rows],
        y=y[rows],
        t=timestep[rows],
        noise=noise[rows],
    )


def _train_step(v: dict[str, Any]) -> None:
    loss = v["scheduler"].training_losses(
        v["backend"].model, v["x"], v["t"], model_kwargs=dict(y=v["y"]), noise=v["noise"]
    )["loss"]
    v["backend"].backward(loss.mean())
    v["backend"].step()


def _forward(v: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        v["backend"].model(v["x"], v["t"], v["y"])


def _timed(fn: Any, v: dict[str, Any], steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process incl. its communication threads) per call of ``fn``."""
    import torch
    import torch.distributed as dist

    dist.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn(v)
    cpu = time.process_time() - cpu
    dist.barrier()
    wall = time.perf_counter() - start
    mean_cpu = torch.tensor([cpu])
    dist.all_reduce(mean_cpu)  # both ranks' CPU time (the work is symmetric; this averages the noise)
    return wall / steps, float(mean_cpu) / 2 / steps


def _worker(rank: int, port: int, size: dict[str, Any], repeats: int, steps: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ.update(MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    from opensora_core.parallel import init_distributed

    env = init_distributed(backend="gloo")
    try:
        variants = {sp: _variant(size, sp, env) for sp in (1, 2)}
        for v in variants.values():  # warm-up (FSDP lazy init, allocator, kernels)
            _train_step(v)
            _forward(v)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(repeats):
            for sp, v in variants.items():
                for kind, fn in (("step", _train_step), ("forward", _forward)):
                    wall, cpu = _timed(fn, v, steps)
                    times.setdefault((kind, sp), []).append(wall)
                    times.setdefault((f"{kind}_cpu", sp), []).append(cpu)
        if rank == 0:
            medians = {f"{kind}_sp{sp}": statistics.median(ts) for (kind, sp), ts in times.items()}
            Path(out).write_text(json.dumps(medians))
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    size = TINY if args.tiny else FULL

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.start_processes(
            _worker, args=(port, size, args.repeats, args.steps, out), nprocs=2, start_method="spawn"
        )
        medians = json.loads(Path(out).read_text())

    machine = _machine()
    c, t, h, w = size["latent"]
    rows = (
        ("step", "sp2_vs_sp1_train_step_s"),
        ("forward", "sp2_vs_sp1_forward_s"),
        ("step_cpu", "sp2_vs_sp1_train_step_cpu_s"),
        ("forward_cpu", "sp2_vs_sp1_forward_cpu_s"),
    )
    for kind, name in rows:
        ours, base = medians[f"{kind}_sp2"], medians[f"{kind}_sp1"]
        row = dict(
            name=name,
            ours=round(ours, 4),
            baseline=round(base, 4),
            ratio=round(ours / base, 3),
            unit="s",
            machine=machine,
            config=f"STDiT hidden {size['hidden']} depth {size['depth']} heads {size['heads']}, latent "
            f"{c}x{t}x{h}x{w}, global batch {size['batch']}, fsdp2",
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
