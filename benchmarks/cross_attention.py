"""Cross-attention to padded captions on CPU: packed (the default) vs the dense key mask.

``MultiHeadCrossAttention(packed=True)`` cuts off the caption positions that are padding in every sample
before the kv projection and attends without a mask when the samples then have equal lengths (flash-attn's
varlen kernel on a GPU); ``packed=False`` attends over all L positions under a [B, 1, 1, L] key mask.
Outputs agree within fp32 rounding (``tests/models/test_attention.py``).

Cases (caption of ``L`` = 120 positions, T5-like; ``valid`` = tokens per sample):

- ``sample``: the sampling benchmark's model size (hidden 128, 4 heads, 512 video tokens per sample), batch 2
  = one video with CFG (cond and null share the mask), short prompt (12 tokens); forward only;
- ``train_short`` / ``train_long``: the model-step size (hidden 384, 6 heads, 4096 video tokens per sample),
  batch 2 with prompts of 12 and 30 tokens / of 100 and 120 tokens (almost no padding); forward + backward;
- ``model_sample``: the whole small STDiT forward (sampling benchmark size, depth 2) with a 120-token caption
  and a 12-token prompt, batch 2.

One JSON line per case: ``name``, ``ours`` (packed, ms per call, median), ``baseline`` (dense mask),
``ratio`` (= baseline / ours, > 1: packing is faster), ``rounds`` (per-round ratios), ``cpu_ours`` /
``cpu_baseline`` / ``cpu_ratio`` (the same in process CPU time: steadier on a shared machine),
``max_abs_diff`` (packed vs dense output), ``unit``, ``machine``, ``loadavg`` (before, after). The variants
alternate within each round; each timing repeats the call for at least about 50 ms.

    python benchmarks/cross_attention.py [--rounds 7] [--threads 1] [--tiny]     # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._machine import machine, randomise_zero_params  # noqa: E402

LENGTH = 120


def _set_packed(module, packed: bool) -> None:
    from opensora_core.models.attention import MultiHeadCrossAttention

    for sub in module.modules():
        if isinstance(sub, MultiHeadCrossAttention):
            sub.packed = packed


def _mask(valid: list[int], length: int):
    import torch

    return (torch.arange(length)[None] < torch.tensor(valid)[:, None]).long()  # [B, L], right padded


def _attention_case(hidden: int, heads: int, tokens: int, valid: list[int], backward: bool, length: int):
    """(run(packed) -> output, None) for one MultiHeadCrossAttention call."""
    import torch

    from opensora_core.models.attention import MultiHeadCrossAttention

    torch.manual_seed(0)
    module = MultiHeadCrossAttention(hidden, heads)
    b = len(valid)
    x = torch.randn(b, tokens, hidden, requires_grad=backward)
    cond = torch.randn(b, length, hidden, requires_grad=backward)
    mask = _mask(valid, length)

    def run(packed: bool):
        module.packed = packed
        if not backward:
            with torch.inference_mode():
                return module(x, cond, mask)
        module.zero_grad(set_to_none=True)
        out = module(x, cond, mask)
        out.square().mean().backward()
        return out.detach()

    return run


def _model_case(size: tuple[int, int, int], hidden: int, depth: int, valid: list[int], length: int):
    import torch

    from opensora_core.models import build_model

    torch.manual_seed(0)
    model = build_model(
        "STDiT-XL/2",
        depth=depth,
        hidden_size=hidden,
        num_heads=4,
        input_size=size,
        caption_channels=64,
        model_max_length=length,
    ).eval()
    randomise_zero_params(model)
    b = len(valid)
    x, t = torch.randn(b, 4, *size), torch.full((b,), 500.0)
    y, mask = torch.randn(b, 1, length, 64), _mask(valid, length)

    def run(packed: bool):
        _set_packed(model, packed)
        with torch.inference_mode():
            return model(x, t, y, mask=mask)

    return run


def _time(run: Callable[[], object], calls: int) -> tuple[float, float]:
    """(wall, process CPU) seconds per call, over ``calls`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        run()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the cases and print/return one JSON record each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = leave the default)")
    parser.add_argument("--tiny", action="store_true", help="small sizes, one round (smoke test)")
    args = parser.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.tiny else args.rounds
    if (
        args.tiny
    ):  # (hidden, heads, video tokens) of the sampling and training sizes; model size; caption length
        small, mid, model_size, length = (32, 4, 64), (48, 6, 64), ((2, 8, 8), 32, 1), 24
    else:
        small, mid, model_size, length = (128, 4, 512), (384, 6, 4096), ((8, 16, 16), 128, 2), LENGTH
    cases = {
        "sample": _attention_case(*small, [12, 12], False, length),
        "train_short": _attention_case(*mid, [12, 30], True, length),
        "train_long": _attention_case(*mid, [length - 20, length], True, length),
        "model_sample": _model_case(*model_size, [12, 12], length),
    }
    host = machine() + f", torch {torch.__version__}, threads {torch.get_num_threads()}"
    records = []
    for name, run in cases.items():
        diff = (run(True) - run(False)).abs().max().item()  # also the warm-up
        calls = max(1, round(0.05 / max(_time(lambda run=run: run(False), 1)[1], 1e-6)))  # >= ~50 ms a timing
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        before = os.getloadavg()
        for r in range(rounds):
            for packed in (r % 2 == 0, r % 2 == 1):  # alternate which variant goes first
                w, c = _time(lambda run=run, packed=packed: run(packed), calls)
                wall[packed].append(w)
                cpu[packed].append(c)
        after = os.getloadavg()
        ours, base = statistics.median(wall[True]), statistics.median(wall[False])
        cpu_ours, cpu_base = statistics.median(cpu[True]), statistics.median(cpu[False])
        records.append(
            {
                "name": f"cross_attention_packed_vs_dense_{name}",
                "ours": round(1000 * ours, 3),
                "baseline": round(1000 * base, 3),
                "ratio": round(base / ours, 3),
                "rounds": [round(b / o, 3) for o, b in zip(wall[True], wall[False], strict=True)],
                "cpu_ours": round(1000 * cpu_ours, 3),
                "cpu_baseline": round(1000 * cpu_base, 3),
                "cpu_ratio": round(cpu_base / cpu_ours, 3),
                "max_abs_diff": diff,
                "unit": "ms/call (median)",
                "machine": host,
                "loadavg": {"before": [round(v, 2) for v in before], "after": [round(v, 2) for v in after]},
            }
        )
        print(json.dumps(records[-1]), flush=True)
    return records


if __name__ == "__main__":
    main()
