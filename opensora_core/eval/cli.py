"""``python -m opensora_core.eval CHECKPOINT OUTPUT_DIR [flags]``: evaluate a training checkpoint.

    python -m opensora_core.eval outputs/000-STDiT-XL-2/epoch0-global_step400 outputs/eval \
        --prompt-path prompts.txt --val-table data/meta.eval.csv --weights ema untrained
    torchrun --nproc-per-node 4 -m opensora_core.eval ...     # prompts and held-out batches split over 4 ranks

The flags are :func:`opensora_core.eval.evaluate`'s arguments. Under ``torchrun`` (gloo on CPU, NCCL on GPU,
one GPU per process) the prompts and the validation-loss batches are split over the ranks and gathered on
rank 0, which alone writes ``OUTPUT_DIR`` and the MLflow run; the results equal one process's. Bad input exits
with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """The evaluation CLI's parser."""
    from opensora_core.eval.evaluate import WEIGHT_VARIANTS

    p = argparse.ArgumentParser(prog="python -m opensora_core.eval", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="training checkpoint folder (local or s3://)")
    p.add_argument("output_dir", help="where videos, previews and report.json go (local or s3://)")
    p.add_argument("--prompt", nargs="+", action="extend", default=None, help="prompt(s); repeatable")
    p.add_argument("--prompt-path", help="text file with one prompt per line")
    p.add_argument("--weights", nargs="+", default=["ema", "untrained"], choices=WEIGHT_VARIANTS)
    p.add_argument("--num-sampling-steps", type=int, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="seed of every video and of the validation noise")
    p.add_argument("--batch-size", type=int, default=16, help="videos sampled per batch (per rank)")
    p.add_argument("--val-table", help="held-out metadata table: also measure the validation loss")
    p.add_argument("--num-eval-timesteps", type=int, default=10, help="validation-loss timesteps")
    p.add_argument("--val-batch-size", type=int, default=8, help="held-out clips per validation batch")
    p.add_argument("--clip-model", help="CLIP hub id or folder: also measure clip_score")
    p.add_argument(
        "--fvd-extractor",
        help="video feature extractor for fvd against --val-table: a TorchScript file (trusted: it runs its "
        "graph) or a transformers video model id/folder",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (log the evaluation as a run)")
    p.add_argument("--experiment", default="opensora", help="MLflow experiment")
    p.add_argument("--run-name", help="MLflow run name (default eval-step{N})")
    p.add_argument(
        "--tag", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="MLflow tags of the run"
    )
    p.add_argument("--result-json", help="also write the result (metrics, paths, run id) to this local file")
    p.add_argument("--device", help="torch device (default: this rank's GPU, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--cfg-options", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation CLI; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from opensora_core.config import split_key_value
    from opensora_core.eval.evaluate import REPORT_FILE
    from opensora_core.io import storage
    from opensora_core.sample.prompts import SampleInputError, read_prompt_file

    try:
        tags = dict(split_key_value(item, "--tag") for item in args.tag)
        prompts = list(args.prompt or [])
        if args.prompt_path:
            prompts += read_prompt_file(args.prompt_path)
        out = args.output_dir
        if not storage.is_remote(out) and (storage.local_path(out) / REPORT_FILE).exists():
            raise ValueError(f"{out} already holds an evaluation ({REPORT_FILE}); choose a new folder")
    except (SampleInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from opensora_core.config import ConfigError
    from opensora_core.eval.evaluate import evaluate
    from opensora_core.parallel.dist import init_distributed

    env = init_distributed()
    tracking = {"uri": args.tracking_uri, "experiment": args.experiment, "run_name": args.run_name}
    try:
        result = evaluate(
            args.checkpoint,
            args.output_dir,
            prompts or None,
            weights=args.weights,
            overrides=args.cfg_options,
            num_sampling_steps=args.num_sampling_steps,
            cfg_scale=args.cfg_scale,
            seed=args.seed,
            batch_size=args.batch_size,
            tracking=tracking if args.tracking_uri else None,
            tags=tags,
            device=args.device or (str(env.device) if env.is_distributed else None),
            progress=not args.no_progress,
            val_table=args.val_table,
            num_eval_timesteps=args.num_eval_timesteps,
            val_batch_size=args.val_batch_size,
            clip_model=args.clip_model,
            fvd_extractor=args.fvd_extractor,
            dist_env=env,
        )
    except (FileNotFoundError, ConfigError, SampleInputError) as exc:  # missing checkpoint, bad overrides
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        env.close()
    if env.is_main:
        print(result.summary(), flush=True)
        if args.result_json:
            Path(args.result_json).write_text(json.dumps(dataclasses.asdict(result)), encoding="utf-8")
    return 0


def evaluate_data_parallel(
    processes: int,
    checkpoint: str,
    output_dir: str,
    prompts: Sequence[str] | None = None,
    *,
    weights: Sequence[str] = ("ema", "untrained"),
    overrides: Sequence[str] = (),
    num_sampling_steps: int | None = None,
    cfg_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 16,
    tracking: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    val_table: str | None = None,
    num_eval_timesteps: int = 10,
    clip_model: str | None = None,
    fvd_extractor: str | None = None,
) -> Any:
    """:func:`~opensora_core.eval.evaluate.evaluate` over ``processes`` local ranks: runs
    ``torchrun --standalone --nproc-per-node processes -m opensora_core.eval ...`` (one GPU per rank when there
    are GPUs, gloo on CPU) and returns rank 0's :class:`~opensora_core.eval.evaluate.EvalResult`. The results
    equal one process's. Raises RuntimeError with the end of the ranks' output when they fail."""
    import subprocess
    import tempfile

    from opensora_core.eval.evaluate import EvalResult

    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    argv = [
        checkpoint,
        output_dir,
        "--weights",
        *weights,
        "--seed",
        str(seed),
        "--batch-size",
        str(batch_size),
    ]
    argv += [f"--prompt={p}" for p in prompts or []]
    argv += [f"--cfg-options={o}" for o in overrides] + [f"--tag={k}={v}" for k, v in (tags or {}).items()]
    optional = {
        "--num-sampling-steps": num_sampling_steps,
        "--cfg-scale": cfg_scale,
        "--val-table": val_table,
        "--clip-model": clip_model,
        "--fvd-extractor": fvd_extractor,
        "--tracking-uri": (tracking or {}).get("uri"),
        "--experiment": (tracking or {}).get("experiment"),
        "--run-name": (tracking or {}).get("run_name"),
    }
    argv += [f"{flag}={value}" for flag, value in optional.items() if value is not None]
    argv += ["--num-eval-timesteps", str(num_eval_timesteps), "--no-progress"]
    with tempfile.TemporaryDirectory(prefix="opensora-eval-dp-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        cmd += ["-m", "opensora_core.eval", *argv, f"--result-json={result_file}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode or not result_file.is_file():
            raise RuntimeError(
                f"data-parallel evaluation on {processes} ranks failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )
        return EvalResult(**json.loads(result_file.read_text(encoding="utf-8")))
