"""Sampling cost on a small STDiT (batch 1, classifier-free guidance, CPU): ours vs the Open-Sora 1.0 reference.

Runners, measured in alternating rounds (each round runs every runner once, in a rotating order, so
background load on a shared machine hits them alike); medians over the rounds are reported:

- ``ours_dpm``: our DPM-Solver++ with ``--dpm-steps`` (20) steps;
- ``ours_iddpm``: our IDDPM with ``--iddpm-steps`` (100) steps;
- ``ref_iddpm``: the reference's ``IDDPM(num_sampling_steps=100).sample`` on the reference's own STDiT, only
  with ``--reference`` (an Open-Sora checkout at c861b98) and ``--reference-deps`` (timm 0.9.16; see
  ``benchmarks/_reference.py`` for the CPU stand-ins). Both models hold the same weights (the reference's
  state dict loaded into ours, strict), and our IDDPM uses the reference's float64 schedule; the first
  record checks that both IDDPMs give the same video from the same seed;
- ``ours_dpm_compiled`` with ``--compile``: the DPM-Solver on the model as ``compile_sampler=True`` compiles
  it (``compile_sampling_model``: torch.compile, inductor), compiled in the warm-up (about 35 CPU seconds here).

One JSON line per measurement: ``name``, ``ours``, ``baseline``, ``ratio`` (= baseline / ours: the speed-up,
> 1 is faster), ``unit``, ``rounds`` (the per-round ratios, each from the same round), ``cpu_ours`` / ``cpu_baseline`` /
``cpu_ratio`` (the same in process CPU seconds: steadier than wall time on a shared machine, one thread),
``machine`` and ``loadavg`` (``os.getloadavg()`` before and after the timed rounds):

- ``sampling_seconds_per_video_dpm20_vs_reference_iddpm100`` (target >= 6), ``..._iddpm100_vs_reference_iddpm100``
  and ``..._compiled_dpm20_vs_reference_iddpm100``: wall seconds per video;
- ``sampling_seconds_per_video_dpm20_vs_iddpm100``: ours vs ours (the baseline when no reference is given);
- ``sampling_iddpm100_max_abs_diff_vs_reference``: same seed, same weights: the two IDDPM videos agree;
- ``sampling_model_evals_per_video``: DPM-Solver vs IDDPM (20 vs 100; both samplers, like the reference's,
  run cond + null as one 2B forward per step);
- ``sampler_overhead_ms_per_step``: the sampler's own arithmetic per step with a model that costs nothing
  (ours IDDPM vs the reference's IDDPM; ours DPM-Solver vs ours IDDPM without a reference).

Usage (about a minute of one idle core: a round is about 6 CPU seconds, the reference's IDDPM-100 half of
it; ``--compile`` adds about 35 s of compiling; ``--tiny`` = a smoke test of a few seconds)::

    python benchmarks/sampling.py --reference /work/ref10 --reference-deps /work/refdeps [--rounds 7] [--compile]
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


def _wall(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _wall_and_cpu(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


class _FixedText:
    """Text-encoder stand-in for the reference's ``IDDPM.sample``: fixed embeddings and null caption."""

    def __init__(self, y, mask, y_null) -> None:
        self.y, self.mask, self.y_null = y, mask, y_null

    def encode(self, prompts):
        return {"y": self.y, "mask": self.mask}

    def null(self, n):
        return self.y_null


class _FreeModel:
    """A model that costs nothing (zeros of the output shape): what is left is the sampler's own work."""

    def __call__(self, x, t, y=None, **kwargs):
        import torch

        return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    forward = __call__  # the reference calls ``model.forward``


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print/return its JSON records."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians are reported)")
    parser.add_argument("--iddpm-steps", type=int, default=100)
    parser.add_argument("--dpm-steps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: stable on shared CPUs; 0 = torch default)",
    )
    parser.add_argument("--reference", type=Path, help="Open-Sora 1.0 checkout (commit c861b98)")
    parser.add_argument("--reference-deps", type=Path, help="pip --target folder with timm 0.9.16")
    parser.add_argument("--compile", action="store_true", help="also time the DPM-Solver with compile_model")
    parser.add_argument("--tiny", action="store_true", help="tiny model and few steps (smoke test)")
    args = parser.parse_args(argv)
    if (args.reference is None) != (args.reference_deps is None):
        parser.error("--reference and --reference-deps go together")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's sampler always asks for a progress bar

    import torch

    from opensora_core.models import build_model
    from opensora_core.schedulers import build_scheduler

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.tiny:
        size, hidden, depth, iddpm_steps, dpm_steps, rounds = (2, 8, 8), 32, 1, 5, 2, 1
    else:
        size, hidden, depth = (8, 16, 16), 128, 2
        iddpm_steps, dpm_steps, rounds = args.iddpm_steps, args.dpm_steps, args.rounds
    config = dict(
        depth=depth,
        hidden_size=hidden,
        num_heads=4,
        input_size=size,
        caption_channels=64,
        model_max_length=16,
    )
    torch.manual_seed(0)
    reference = None
    if args.reference is not None:
        from benchmarks._reference import load_opensora_v1

        reference = load_opensora_v1(args.reference, args.reference_deps)
        ref_model = reference.stdit.STDiT(**config).eval()
        randomise_zero_params(ref_model)
        model = build_model("STDiT-XL/2", **config).eval()
        model.load_state_dict(ref_model.state_dict(), strict=True)
    else:
        model = build_model("STDiT-XL/2", **config).eval()
        randomise_zero_params(model)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, *size, generator=g)
    y = torch.randn(1, 1, config["model_max_length"], config["caption_channels"], generator=g)
    mask = torch.ones(1, config["model_max_length"], dtype=torch.long)
    y_null = model.null_caption(1)

    # the 1.0 reference computes its schedule in float64; ours follows it here so both do the same sums
    iddpm = build_scheduler(
        "iddpm", num_sampling_steps=iddpm_steps, cfg_scale=7.0, cfg_channel=3, schedule_dtype="float64"
    )
    dpm = build_scheduler("dpm-solver", num_sampling_steps=dpm_steps, cfg_scale=7.0)
    runners: dict[str, Callable[[], object]] = {
        "ours_dpm": lambda: dpm.sample(model, z, y, mask=mask, y_null=y_null),
        "ours_iddpm": lambda: iddpm.sample(model, z, y, mask=mask, y_null=y_null),
    }
    records: list[dict] = []
    host = machine() + f", torch {torch.__version__}, threads {torch.get_num_threads()}"

    def record(name: str, ours: float, baseline: float, unit: str, **extra: object) -> None:
        ratio = round(baseline / ours, 3) if ours else None
        records.append(
            dict(name=name, ours=ours, baseline=baseline, ratio=ratio, unit=unit, machine=host, **extra)
        )

    with torch.inference_mode():
        if reference is not None:
            ref_iddpm = reference.iddpm.IDDPM(num_sampling_steps=iddpm_steps, cfg_scale=7.0)
            text = _FixedText(y, mask, y_null)

            def ref_sample() -> torch.Tensor:
                return ref_iddpm.sample(ref_model, text, z_size=z.shape[1:], prompts=[""], device="cpu")

            runners["ref_iddpm"] = ref_sample
            torch.manual_seed(3)  # the reference draws z and every step's noise from the global RNG
            ref_video = ref_sample()
            torch.manual_seed(3)
            ref_z = torch.randn_like(z)
            ours_video = iddpm.sample(model, ref_z, y, mask=mask, y_null=y_null)
            diff = (ours_video - ref_video).abs().max().item()
            record(f"sampling_iddpm{iddpm_steps}_max_abs_diff_vs_reference", diff, 0.0, "max |ours - ref|")
        if args.compile:
            from opensora_core.sample.pipeline import compile_sampling_model

            compiled = compile_sampling_model(model)  # what compile_sampler=True does; same weights
            runners["ours_dpm_compiled"] = lambda: dpm.sample(compiled, z, y, mask=mask, y_null=y_null)
        for run in runners.values():  # warm-up (and compilation)
            run()
        times: dict[str, list[float]] = {name: [] for name in runners}
        cpu_times: dict[str, list[float]] = {name: [] for name in runners}
        names = list(runners)
        load_before = os.getloadavg()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
                wall, cpu = _wall_and_cpu(runners[name])
                times[name].append(wall)
                cpu_times[name].append(cpu)
        load_after = os.getloadavg()
        evals = (dpm.last_num_model_evals, iddpm.last_num_model_evals)

        free_model = _FreeModel()
        free_rounds = max(rounds, 3)
        free_dpm = statistics.median(
            _wall(lambda: dpm.sample(free_model, z, y, mask=mask, y_null=y_null)) for _ in range(free_rounds)
        )
        free_iddpm = statistics.median(
            _wall(lambda: iddpm.sample(free_model, z, y, mask=mask, y_null=y_null))
            for _ in range(free_rounds)
        )
        if reference is not None:
            free_ref = statistics.median(
                _wall(lambda: ref_iddpm.sample(free_model, text, z.shape[1:], [""], "cpu"))
                for _ in range(free_rounds)
            )

    loadavg = {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after]}

    def compare(name: str, ours: str, baseline: str) -> None:
        per_round = [round(b / o, 3) for o, b in zip(times[ours], times[baseline], strict=True)]
        record(
            name,
            round(statistics.median(times[ours]), 4),
            round(statistics.median(times[baseline]), 4),
            "s/video (median)",
            rounds=per_round,
            cpu_ours=round(statistics.median(cpu_times[ours]), 4),
            cpu_baseline=round(statistics.median(cpu_times[baseline]), 4),
            cpu_ratio=round(statistics.median(cpu_times[baseline]) / statistics.median(cpu_times[ours]), 3),
            loadavg=loadavg,
        )

    tag_dpm, tag_iddpm = f"dpm{dpm_steps}", f"iddpm{iddpm_steps}"
    if reference is not None:
        compare(f"sampling_seconds_per_video_{tag_dpm}_vs_reference_{tag_iddpm}", "ours_dpm", "ref_iddpm")
        compare(f"sampling_seconds_per_video_{tag_iddpm}_vs_reference_{tag_iddpm}", "ours_iddpm", "ref_iddpm")
        if args.compile:
            compare(
                f"sampling_seconds_per_video_compiled_{tag_dpm}_vs_reference_{tag_iddpm}",
                "ours_dpm_compiled",
                "ref_iddpm",
            )
    compare(f"sampling_seconds_per_video_{tag_dpm}_vs_{tag_iddpm}", "ours_dpm", "ours_iddpm")
    record("sampling_model_evals_per_video", evals[0], evals[1], "forwards/video")
    if reference is not None:
        ours_ms, base_ms = 1000 * free_iddpm / iddpm_steps, 1000 * free_ref / iddpm_steps
        record(
            "sampler_overhead_ms_per_step_iddpm_vs_reference", round(ours_ms, 4), round(base_ms, 4), "ms/step"
        )
    ours_ms, base_ms = 1000 * free_dpm / dpm_steps, 1000 * free_iddpm / iddpm_steps
    record("sampler_overhead_ms_per_step_dpm_vs_iddpm", round(ours_ms, 4), round(base_ms, 4), "ms/step")
    for rec in records:
        print(json.dumps(rec), flush=True)
    return records


if __name__ == "__main__":
    main()
