"""The checkpoint format and its one implementation: layout, writing, reading, finding, verifying.

    from opensora_core import checkpoint as ckpt
    ref = ckpt.find_latest_checkpoint("outputs", "STDiT-XL/2")     # newest complete checkpoint, or None
    folder = ckpt.fetch_checkpoint(env, ref.uri)                    # local folder (downloads s3://)
    state = ckpt.load_safetensors(folder / ckpt.EMA_FILE)

Modules: :mod:`~.layout` (every file and folder name; nothing outside this package spells them),
:mod:`~.write` (atomic save, retention, final metrics), :mod:`~.read`, :mod:`~.find`, :mod:`~.verify`,
:mod:`~.files` (fsynced JSON/safetensors), :mod:`~.collective` (ranks agree on failures).
The package sits below train/sample/eval/registry and imports only ``opensora_core.io.storage`` (and torch).
"""

from opensora_core.checkpoint.collective import DistLike
from opensora_core.checkpoint.errors import CheckpointError
from opensora_core.checkpoint.files import (
    fsync_dir,
    fsync_file,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from opensora_core.checkpoint.find import (
    CheckpointRef,
    find_latest_checkpoint,
    latest_experiment_dir,
    list_checkpoints,
    next_experiment_dir,
    resolve_load,
)
from opensora_core.checkpoint.layout import (
    COMPLETE_MARKER,
    CONFIG_JSON,
    CONFIG_PY,
    CONFIG_STEM,
    EMA_FILE,
    FINAL_METRICS_FILE,
    LOG_FILE,
    MODEL_FILE,
    RUNNING_STATES_FILE,
    SAMPLER_FILE,
    SAMPLING_WEIGHT_FILES,
    WEIGHT_FILES,
    OptimizerFiles,
    checkpoint_name,
    model_folder_name,
    parse_checkpoint_name,
    rng_file,
)
from opensora_core.checkpoint.read import (
    fetch_checkpoint,
    fetch_files,
    read_final_metrics,
    read_running_states,
    read_running_states_uri,
)
from opensora_core.checkpoint.verify import is_complete, read_manifest, verify_checkpoint
from opensora_core.checkpoint.write import (
    apply_retention,
    save_checkpoint,
    write_final_metrics,
)

__all__ = [
    "COMPLETE_MARKER",
    "CONFIG_JSON",
    "CONFIG_PY",
    "CONFIG_STEM",
    "EMA_FILE",
    "FINAL_METRICS_FILE",
    "LOG_FILE",
    "MODEL_FILE",
    "RUNNING_STATES_FILE",
    "SAMPLER_FILE",
    "SAMPLING_WEIGHT_FILES",
    "WEIGHT_FILES",
    "CheckpointError",
    "CheckpointRef",
    "DistLike",
    "OptimizerFiles",
    "apply_retention",
    "checkpoint_name",
    "fetch_checkpoint",
    "fetch_files",
    "find_latest_checkpoint",
    "latest_experiment_dir",
    "fsync_dir",
    "fsync_file",
    "is_complete",
    "list_checkpoints",
    "load_safetensors",
    "model_folder_name",
    "next_experiment_dir",
    "parse_checkpoint_name",
    "read_final_metrics",
    "read_json",
    "read_manifest",
    "read_running_states",
    "read_running_states_uri",
    "resolve_load",
    "rng_file",
    "save_checkpoint",
    "save_safetensors",
    "verify_checkpoint",
    "write_final_metrics",
    "write_json",
]
