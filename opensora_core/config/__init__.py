"""Run configuration: Open-Sora `.py` configs -> a validated, typed `RunConfig`.

    from opensora_core.config import load_config, parse_cli
    cfg = load_config("configs/opensora-v1-1/train/stage2.py", overrides=["model.depth=2"])
    cfg.model.type, cfg.model.build_kwargs(), cfg.bucket_config
    cfg.dump("outputs/run/config.py")          # or .json; loads back to an equal RunConfig

See docs/config.md for every key. Importing this package is cheap (pydantic only).
"""

from opensora_core.config.cli import add_cli_args, build_parser, config_from_args, parse_cli
from opensora_core.config.errors import ConfigError
from opensora_core.config.loader import (
    config_from_dict,
    load_config,
    parse_override_value,
    read_config_file,
    split_key_value,
)
from opensora_core.config.schema import ASPECT_TABLE_NAMES, MASK_RATIO_NAMES, RunConfig
from opensora_core.config.sections import (
    DATASET_TYPES,
    MODEL_TYPES,
    SCHEDULER_TYPES,
    TEXT_ENCODER_TYPES,
    VAE_TYPES,
    DatasetConfig,
    ModelConfig,
    SchedulerConfig,
    TextEncoderConfig,
    TrackingConfig,
    VAEConfig,
)

__all__ = [
    "ASPECT_TABLE_NAMES",
    "DATASET_TYPES",
    "MASK_RATIO_NAMES",
    "MODEL_TYPES",
    "SCHEDULER_TYPES",
    "TEXT_ENCODER_TYPES",
    "VAE_TYPES",
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "RunConfig",
    "SchedulerConfig",
    "TextEncoderConfig",
    "TrackingConfig",
    "VAEConfig",
    "add_cli_args",
    "build_parser",
    "config_from_args",
    "config_from_dict",
    "load_config",
    "parse_cli",
    "parse_override_value",
    "read_config_file",
    "split_key_value",
]
