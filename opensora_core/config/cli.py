"""Command-line flags of `python -m opensora_core.train` / `python -m opensora_core.sample`.

The flags mirror Open-Sora 1.1's `parse_configs` (reference section 8), with two differences: every flag maps
to a config key and is applied when given (1.0 silently ignored flags whose key was absent from the file), and
`--seed` / store-true flags only override the file when passed (1.1 always wrote seed=42 and False). Named
flags are applied first, then `--cfg-options KEY=VALUE ...` (any field, dotted keys), so the latter wins.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opensora_core.config.loader import load_config, overrides_to_dict
from opensora_core.config.schema import RunConfig


def _str2bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _optional_str(text: str) -> str | None:
    """Per-prompt list entries: "" or "None" means no entry for that prompt."""
    return None if text.strip() in ("", "None", "none", "null") else text


@dataclass(frozen=True)
class Flag:
    """One command-line flag and the dotted config key it sets."""

    name: str
    key: str
    help: str
    kind: str = "value"  # value | bool | list | pair
    type: Any = str
    metavar: str | None = None


COMMON_FLAGS: tuple[Flag, ...] = (
    Flag("--seed", "seed", "random seed", type=int),
    Flag("--ckpt-path", "model.from_pretrained", "model weights (file, checkpoint dir or hub id)"),
    Flag("--batch-size", "batch_size", "batch size (training: per GPU)", type=int),
)
TRAIN_FLAGS: tuple[Flag, ...] = (
    Flag("--outputs", "outputs", "experiment folder root (local or s3://)"),
    Flag("--load", "load", "checkpoint directory to resume from"),
    Flag("--data-path", "dataset.data_path", "metadata table (csv/parquet) of the training data"),
    Flag("--start-from-scratch", "start_from_scratch", "with --load: reset epoch/step/sampler", kind="bool"),
)
# Flags of Open-Sora that this platform does not implement: passing one is an error that says what to use.
REMOVED_TRAIN_FLAGS: dict[str, str] = {
    "--wandb": "Weights & Biases logging is not supported; track the run in MLflow with "
    "--cfg-options tracking.backend=mlflow tracking.uri=URI (or set MLFLOW_TRACKING_URI)",
}
SAMPLE_FLAGS: tuple[Flag, ...] = (
    Flag("--prompt-path", "prompt_path", "text file with one prompt per line (clears config prompts)"),
    Flag("--prompt", "prompt", "prompt(s); repeatable", kind="list"),
    Flag("--save-dir", "save_dir", "where videos are written"),
    Flag("--sample-name", "sample_name", "file name stem"),
    Flag("--start-index", "start_index", "first prompt index", type=int),
    Flag("--end-index", "end_index", "end of the prompt slice (exclusive)", type=int),
    Flag("--num-sample", "num_sample", "videos per prompt", type=int),
    Flag("--prompt-as-path", "prompt_as_path", "name files after prompts", kind="bool"),
    Flag("--num-sampling-steps", "scheduler.num_sampling_steps", "sampling steps", type=int),
    Flag("--cfg-scale", "scheduler.cfg_scale", "classifier-free guidance scale", type=float),
    Flag(
        "--num-frames", "num_frames", "frames to generate: a count or an Open-Sora 1.2 name (2s, 4s, 2x, ...)"
    ),
    Flag("--fps", "fps", "frame rate", type=int),
    Flag("--save-fps", "save_fps", "frame rate written into the saved videos", type=int),
    Flag(
        "--image-size", "image_size", "height and width in pixels", kind="pair", type=int, metavar=("H", "W")
    ),
    Flag("--resolution", "resolution", "Open-Sora 1.2 size name (144p, 240p, 360p, 480p, 720p, ...)"),
    Flag("--aspect-ratio", "aspect_ratio", "Open-Sora 1.2 H:W name (9:16, 16:9, 1:1, ...)"),
    Flag("--aes", "aes", 'append "aesthetic score: X." to prompts (Open-Sora 1.2)', type=float),
    Flag("--flow", "flow", 'append "motion score: X." to prompts (Open-Sora 1.2)', type=float),
    Flag("--camera-motion", "camera_motion", 'append "camera motion: X." to prompts (Open-Sora 1.2)'),
    Flag("--loop", "loop", "generation loops (long videos)", type=int),
    Flag("--condition-frame-length", "condition_frame_length", "frames carried between loops", type=int),
    Flag("--condition-frame-edit", "condition_frame_edit", "edit ratio of the carried frames", type=float),
    Flag("--align", "align", "snap mask-strategy starts to multiples of N latent frames (1.2)", type=int),
    Flag("--text-encoder-device", "text_encoder.device", "run the text encoder on this device (e.g. cpu)"),
    Flag("--text-encoder-dtype", "text_encoder.dtype", "text encoder precision: fp32 or bf16"),
    Flag(
        "--offload-text-encoder",
        "text_encoder.offload",
        "encode all prompts first, then free the text encoder",
        kind="bool",
    ),
    Flag("--reference-path", "reference_path", "per-prompt references; 'None' = none", kind="list"),
    Flag("--mask-strategy", "mask_strategy", "per-prompt mask strategies; 'None' = none", kind="list"),
)


def _flags(training: bool) -> tuple[Flag, ...]:
    return COMMON_FLAGS + (TRAIN_FLAGS if training else SAMPLE_FLAGS)


def _dest(flag: Flag) -> str:
    return flag.name.lstrip("-").replace("-", "_")


class _RemovedFlag(argparse.Action):
    """A flag that exists in Open-Sora but not here: using it stops the parser with what to do instead."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        parser.error(f"{option} was removed: {REMOVED_TRAIN_FLAGS[option]}")


def add_cli_args(parser: argparse.ArgumentParser, training: bool) -> argparse.ArgumentParser:
    """Add the positional config path, the Open-Sora flags of the mode, and `--cfg-options` to `parser`."""
    parser.add_argument("config", help="config file (.py Open-Sora style, or a .json dump)")
    for name in REMOVED_TRAIN_FLAGS if training else ():
        parser.add_argument(name, nargs="?", action=_RemovedFlag, help=argparse.SUPPRESS)
    for flag in _flags(training):
        if flag.kind == "bool":
            parser.add_argument(
                flag.name,
                nargs="?",
                const=True,
                default=None,
                type=_str2bool,
                metavar="BOOL",
                help=f"{flag.help} (sets {flag.key})",
            )
        elif flag.kind == "list":
            item_type = _optional_str if flag.key in ("reference_path", "mask_strategy") else str
            parser.add_argument(
                flag.name,
                nargs="+",
                action="extend",
                default=None,
                type=item_type,
                help=f"{flag.help} (sets {flag.key})",
            )
        elif flag.kind == "pair":
            parser.add_argument(
                flag.name,
                nargs=2,
                type=flag.type,
                default=None,
                metavar=flag.metavar,
                help=f"{flag.help} (sets {flag.key})",
            )
        else:
            parser.add_argument(
                flag.name, type=flag.type, default=None, help=f"{flag.help} (sets {flag.key})"
            )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action="extend",
        default=None,
        metavar="KEY=VALUE",
        help="override any config key, e.g. model.depth=2 scheduler.cfg_scale=4.0 (values are Python literals)",
    )
    return parser


def build_parser(training: bool, prog: str | None = None) -> argparse.ArgumentParser:
    """A fresh parser with `add_cli_args` applied."""
    desc = "Train a model from a config." if training else "Sample videos from a config."
    return add_cli_args(argparse.ArgumentParser(prog=prog, description=desc), training)


def overrides_from_args(args: argparse.Namespace, training: bool) -> dict[str, Any]:
    """{dotted key: value} for every flag that was given, then the --cfg-options entries."""
    out: dict[str, Any] = {}
    for flag in _flags(training):
        value = getattr(args, _dest(flag), None)
        if value is None:
            continue
        out[flag.key] = tuple(value) if flag.kind == "pair" else value
    if not training and "prompt_path" in out and "prompt" not in out:
        out["prompt"] = None  # prompts in the file would take priority and silently win over --prompt-path
    if not training and "image_size" in out:  # an explicit size replaces the file's size names
        out.setdefault("resolution", None)
        out.setdefault("aspect_ratio", None)
    elif not training and ("resolution" in out or "aspect_ratio" in out):
        out["image_size"] = None  # size names replace the file's image_size (it is recomputed from them)
    out.update(overrides_to_dict(getattr(args, "cfg_options", None)))
    return out


def config_from_args(args: argparse.Namespace, training: bool) -> RunConfig:
    """Load `args.config` with the flags applied and check it is ready for the mode (raises ConfigError)."""
    cfg = load_config(args.config, overrides=overrides_from_args(args, training))
    return cfg.check_ready(training, source=str(args.config))


def parse_cli(argv: Sequence[str] | None = None, training: bool = False) -> RunConfig:
    """Parse Open-Sora-style command-line arguments into a validated RunConfig (raises ConfigError)."""
    args = build_parser(training).parse_args(argv)
    return config_from_args(args, training)
