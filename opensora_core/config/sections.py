"""Typed sub-configs: `model`, `vae`, `text_encoder`, `scheduler`, `dataset`, `tracking`.

Each family is a pydantic model with `extra="forbid"` and a literal `type`; the RunConfig fields are
discriminated unions on `type`, so `model = dict(type="STDiT-XL/2", ...)` from an Open-Sora config file
selects `STDiTConfig`. The model, VAE, text encoder and scheduler configs are declared next to their components
(the `*registry.py` tables, see `opensora_core.entry`); this module assembles the unions from those tables and
declares the dataset and tracking sections itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, field_validator

from opensora_core.entry import Entry, config_classes
from opensora_core.fields import Bool, NonNegFloat, OptSize2, PosFloat, PosInt, Section, Size2
from opensora_core.models.registry import MODELS
from opensora_core.models.text_encoder_registry import TEXT_ENCODERS
from opensora_core.models.vae_registry import VAES
from opensora_core.schedulers.registry import SCHEDULERS


def _union(table: Mapping[str, Entry[Any]]) -> Any:
    """`Annotated[A | B | ..., Field(discriminator="type")]` over the distinct config classes of a table."""
    return Annotated[Union[config_classes(table)], Field(discriminator="type")]  # noqa: UP007


def _types(table: Mapping[str, Entry[Any]]) -> dict[str, type[BaseModel]]:
    """name -> config class of a component table."""
    return {name: entry.config for name, entry in table.items() if entry.config is not None}


ModelConfig = _union(MODELS)
VAEConfig = _union(VAES)
TextEncoderConfig = _union(TEXT_ENCODERS)
SchedulerConfig = _union(SCHEDULERS)
MODEL_TYPES = _types(MODELS)
VAE_TYPES = _types(VAES)
TEXT_ENCODER_TYPES = _types(TEXT_ENCODERS)
SCHEDULER_TYPES = _types(SCHEDULERS)

# ------------------------------------------------------------------------------------------- datasets


class _DatasetBase(Section):
    type: str = Field(..., description="Dataset class (see the list of dataset types).")
    data_path: str | None = Field(
        None, description="Metadata table (csv/parquet; local path or s3://). `--data-path` sets it."
    )
    frame_interval: PosInt = Field(1, description="Take every k-th frame.")
    transform_name: Literal["center", "resize_crop"] = Field(
        "center", description="center: short-side resize + center crop; resize_crop: fill then crop."
    )
    root: str | None = Field(None, description="Folder prepended to relative video paths.")


class DatasetFromCSVConfig(_DatasetBase):
    """Open-Sora 1.0 dataset: headerless CSV (path, caption). Built from the 1.0 top-level keys too."""

    type: Literal["DatasetFromCSV"]
    data_path: str | None = Field(
        None,
        validation_alias=AliasChoices("data_path", "csv_path"),
        description="Headerless CSV of (path, caption) rows (`csv_path` accepted).",
    )
    num_frames: PosInt = Field(16, description="Frames per sample.")
    image_size: Size2 = Field((256, 256), description="(H, W) after crop.")
    use_image_transform: Bool = Field(False, description="Images instead of videos (ADM center crop + flip).")


class VideoTextDatasetConfig(_DatasetBase):
    """Fixed-size video/image dataset over a metadata table with `path` and `text` columns."""

    type: Literal["VideoTextDataset"]
    num_frames: PosInt = Field(16, description="Frames per sample.")
    image_size: Size2 = Field((256, 256), description="(H, W) after crop.")


class VariableVideoTextDatasetConfig(_DatasetBase):
    """Multi-resolution dataset; sizes come from `bucket_config` (needs num_frames/height/width columns)."""

    type: Literal["VariableVideoTextDataset"]
    num_frames: PosInt | None = Field(None, description="Unused (bucket sizes decide); kept for 1.1 configs.")
    image_size: OptSize2 = Field(
        (None, None), description="Unused (bucket sizes decide); kept for 1.1 configs."
    )


DatasetConfig = Annotated[
    DatasetFromCSVConfig | VideoTextDatasetConfig | VariableVideoTextDatasetConfig,
    Field(discriminator="type"),
]
DATASET_TYPES: dict[str, type[Section]] = {
    "DatasetFromCSV": DatasetFromCSVConfig,
    "VideoTextDataset": VideoTextDatasetConfig,
    "VariableVideoTextDataset": VariableVideoTextDatasetConfig,
}

# ------------------------------------------------------------------------------------------- tracking


class TrackingConfig(Section):
    """Ours: experiment tracking (see opensora_core.io.tracking.build_tracker)."""

    backend: Literal["none", "mlflow"] = Field("none", description="none or mlflow.")
    uri: str | None = Field(None, description="Tracking server URI; None = $MLFLOW_TRACKING_URI.")
    experiment: str = Field("opensora", description="Experiment name.")
    run_name: str | None = Field(None, description="Run name (default: generated).")
    request_timeout: PosFloat = Field(
        5.0, description="Seconds per tracking request (never blocks training)."
    )
    system_metrics_interval_s: NonNegFloat = Field(
        15.0,
        description="Seconds between samples of MLflow's system metrics (CPU, memory, disk, network; GPU "
        "utilisation and memory with NVML), logged as `system/...`; 0 = off.",
    )

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and urlsplit(v).password is not None:
            raise ValueError(
                "the URI carries a password; put credentials in MLFLOW_TRACKING_USERNAME / "
                "MLFLOW_TRACKING_PASSWORD environment variables, not in the config"
            )
        return v


# Sections whose value is a discriminated union on `type`, with their valid types.
UNION_SECTIONS: dict[str, dict[str, type[BaseModel]]] = {
    "model": MODEL_TYPES,
    "vae": VAE_TYPES,
    "text_encoder": TEXT_ENCODER_TYPES,
    "scheduler": SCHEDULER_TYPES,
    "dataset": DATASET_TYPES,
}
