"""``python -m opensora_core.eval.val_loss CONFIG --ckpt-path W --data-path TABLE [--resolution R]``.

The CLI of :mod:`opensora_core.eval.val_loss`: its validation loss from an Open-Sora config (e.g. upstream 1.2's
``configs/opensora-v1-2/misc/eval_loss.py``, unchanged) as the reference's ``eval/loss/eval_loss.py`` is run;
under ``torchrun`` the batches are split over the ranks and rank 0 prints the result and writes ``--output``.
Bad input exits with status 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opensora_core.eval.val_loss import (
    VAL_LOSS,
    ValLossInputError,
    ValLossResult,
    check_scheduler,
    config_val_loss,
)


def _format(result: ValLossResult) -> str:
    lines = [f"{VAL_LOSS} = {result.overall:.6f} ({result.num_samples} clip-buckets)"]
    lines += [f"  bucket {b}: {v:.6f}" for b, v in result.per_bucket.items()]
    lines += [f"  t = {t:8.3f}: {v:.6f}" for t, v in result.per_timestep.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m opensora_core.eval.val_loss CONFIG --ckpt-path W --data-path TABLE``; 0 ok, 2 bad input."""
    from opensora_core.config import ConfigError, load_config
    from opensora_core.config.loader import overrides_to_dict

    parser = argparse.ArgumentParser(
        prog="python -m opensora_core.eval.val_loss",
        description="Validation loss of a checkpoint on a held-out metadata table (Open-Sora 1.2 eval_loss); "
        "run with torchrun to split the batches over processes.",
    )
    parser.add_argument("config", help="config file, e.g. configs/opensora-v1-2/misc/eval_loss.py")
    parser.add_argument("--ckpt-path", help="weights: a file, a training checkpoint folder (EMA) or hub id")
    parser.add_argument("--data-path", help="held-out metadata table (sets dataset.data_path)")
    parser.add_argument("--resolution", help="evaluate only this resolution of bucket_config (e.g. 144p)")
    parser.add_argument("--seed", type=int, help="noise seed (default: the config's seed)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of fixed-size datasets")
    parser.add_argument("--output", help="write the result as JSON here (must not exist)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--cfg-options", nargs="+", action="extend", default=None, metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"num_workers": 0}
    if args.data_path:
        overrides["dataset.data_path"] = args.data_path
    if args.ckpt_path:
        overrides["model.from_pretrained"] = args.ckpt_path
    overrides.update(overrides_to_dict(args.cfg_options))
    try:
        cfg = load_config(args.config, overrides=overrides)
        check_scheduler(cfg, args.config)
        if cfg.dataset is None or cfg.dataset.data_path is None:
            raise ValueError("no held-out table: pass --data-path META.csv (sets dataset.data_path)")
        if not cfg.model.from_pretrained:
            raise ValueError("no weights to evaluate: pass --ckpt-path (sets model.from_pretrained)")
        if args.output and Path(args.output).exists():
            raise ValueError(f"--output {args.output} exists; choose a new file (it is not overwritten)")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from opensora_core.parallel.dist import init_distributed
    from opensora_core.sample.long import SampleInputError
    from opensora_core.sample.pipeline import resolve_checkpoint

    env = init_distributed()
    try:
        weights = resolve_checkpoint(cfg.model.from_pretrained)
        result = config_val_loss(
            cfg,
            weights,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device or (str(env.device) if env.is_distributed else None),
            dist_env=env,
            resolution=args.resolution,
        )
    except (ValLossInputError, SampleInputError, FileNotFoundError) as exc:  # every rank sees the same data
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        env.close()
    if env.is_main:
        print(_format(result), flush=True)
        if args.output:
            Path(args.output).write_text(json.dumps({**result.as_dict(), "weights": str(weights)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
