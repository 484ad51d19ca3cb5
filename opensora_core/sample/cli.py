"""``python -m opensora_core.sample CONFIG [flags]``: sample videos with Open-Sora 1.1's flags.

Flags (see ``--help`` and docs/sampling.md): the Open-Sora inference flags of
:mod:`opensora_core.config.cli` (``--prompt``, ``--prompt-path``, ``--num-sample``, ``--loop``,
``--reference-path``, ``--mask-strategy``, ...), ``--cfg-options KEY=VALUE`` and three of ours: ``--device``,
``--no-progress`` and ``--plan`` (print the expected peak GPU memory and exit; :mod:`opensora_core.sample.memory`). The config, prompts, references and mask strategies are checked before torch is imported;
bad input exits with status 2 and one ``error: ...`` line naming the value. Videos written before an error stay.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from opensora_core.config import ConfigError, build_parser, config_from_args, load_config
from opensora_core.config.cli import overrides_from_args
from opensora_core.io.storage import InvalidURIError
from opensora_core.sample.long import SampleInputError
from opensora_core.sample.prompts import plan_run

EXIT_BAD_INPUT = 2

# Input errors raised by modules that are imported only once sampling starts (module, class name).
_LATE_INPUT_ERRORS = (
    ("opensora_core.models.checkpoint", "UnsafeCheckpointError"),
    ("opensora_core.data.video_io", "VideoDecodeError"),
)


def _input_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConfigError, SampleInputError, InvalidURIError, FileNotFoundError]
    for module_name, class_name in _LATE_INPUT_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None:
            errors.append(getattr(module, class_name))
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sampler CLI; returns the process exit status (0 ok, 2 bad input)."""
    parser = build_parser(training=False, prog="python -m opensora_core.sample")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the expected peak GPU memory per component and phase for the config, flags and sizes "
        "given, then exit (loads no weights, downloads nothing; an estimate, see docs/gpu-memory.md)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.plan:  # no prompts needed: only the sizes
            from opensora_core.sample.memory import plan_memory

            cfg = load_config(args.config, overrides=overrides_from_args(args, training=False))
            print(plan_memory(cfg, str(args.config)).format())
            return 0
        cfg = config_from_args(args, training=False)
        plan = plan_run(cfg)  # prompts, references, mask strategies: fail before the models load
        from opensora_core.sample.pipeline import sample

        sample(cfg, progress=not args.no_progress, device=args.device, plan=plan)
    except Exception as exc:
        if not isinstance(exc, _input_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
