"""``python -m opensora_core.train CONFIG [flags]`` (run it under torchrun for several processes).

Flags are Open-Sora 1.1's (``--load``, ``--data-path``, ``--outputs``, ``--ckpt-path``, ``--start-from-scratch``,
``--batch-size``, ``--seed``, ``--cfg-options KEY=VALUE ...``; see docs/config.md) plus ``--no-ema``.
``--load latest`` resumes from the newest complete checkpoint under ``outputs``.

Exit codes: 0 done, 2 bad config or arguments, 3 aborted after ``max_bad_steps`` bad steps (a checkpoint was
saved), 200 preempted by SIGTERM and resumable (``opensora_core.train.preemption``), 1 any other error (including
``max_failed_saves`` consecutive failed checkpoint saves).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0") or 0)
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("urllib3", "mlflow", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, train, return the exit code."""
    from opensora_core.config import ConfigError, build_parser, config_from_args

    parser = build_parser(training=True, prog="python -m opensora_core.train")
    parser.add_argument("--no-ema", action="store_true", help="do not keep EMA weights (no ema.safetensors)")
    args = parser.parse_args(argv)
    _setup_logging()
    log = logging.getLogger("opensora_core.train")
    try:
        cfg = config_from_args(args, training=True)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from opensora_core.train.checkpoint import CheckpointError
    from opensora_core.train.loop import ABORT_EXIT_CODE, TrainingAborted, train
    from opensora_core.train.preemption import PREEMPTED_EXIT_CODE, Preempted, write_record

    try:
        result = train(cfg, ema=not args.no_ema)
    except Preempted as e:
        log.warning("%s; exit %d (resumable)", e, PREEMPTED_EXIT_CODE)
        write_record(e)
        return PREEMPTED_EXIT_CODE
    except TrainingAborted as e:
        log.error("training aborted: %s", e)
        return ABORT_EXIT_CODE
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        log.error("%s: %s", type(e).__name__, e)
        return 1
    log.info("done at global step %d; final checkpoint: %s", result.global_step, result.checkpoint_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
