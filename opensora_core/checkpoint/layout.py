"""The checkpoint format: every file and folder name of a training run's output, defined here and only here.

Run layout (``{outputs}/{NNN}-{model type, / -> -}/``)::

    config.py, config.json  the resolved RunConfig of the run
    log.txt                 rank 0's log (local outputs)
    final_metrics.json      written at the end of training: final step, metrics, checkpoint, MLflow run id
    epoch{E}-global_step{G}/  one checkpoint:
        model.safetensors      consolidated fp32 model state dict (official Open-Sora keys)
        ema.safetensors        fp32 EMA weights (absent when EMA is off)
        optimizer.pt           replicated optimizer (+ loss scaler) state (ddp; written by rank 0)
        optimizer_full.pt      consolidated (unsharded, parameter-name keyed) optimizer state of a sharded
                               backend (fsdp2 / torch-native zero2; rank 0 writes, resumes on any world size)
        optimizer_rank00000.pt ... per-rank optimizer shards (older fsdp2 checkpoints; same world size only)
        optimizer/             ColossalAI Booster optimizer checkpoint (optimizer.bin when unsharded)
        sampler.json           data sampler state (epoch and position)
        rng/rank00000.pt ...   RNG states of every rank
        running_states.json    epoch, step, global_step, sample_start_index, mlflow_run_id, world_size, ...
        config.py, config.json the resolved RunConfig
        _COMPLETE              written last: only folders holding it count as checkpoints
    epoch{E}-global_step{G}.staging-{nonce}/  s3:// only: a checkpoint being uploaded (never loaded by name)

Open-Sora's own checkpoints (``ema.pt``, a ``model/`` folder) are read by the sampler too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COMPLETE_MARKER = "_COMPLETE"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
RUNNING_STATES_FILE = "running_states.json"
SAMPLER_FILE = "sampler.json"
RNG_DIR = "rng"
CONFIG_STEM = "config"  # RunConfig.save(folder, stem) writes {stem}.py and {stem}.json
CONFIG_JSON = f"{CONFIG_STEM}.json"
CONFIG_PY = f"{CONFIG_STEM}.py"
LOG_FILE = "log.txt"
FINAL_METRICS_FILE = "final_metrics.json"
OPTIMIZER_FILE = "optimizer.pt"
OPTIMIZER_FULL_FILE = "optimizer_full.pt"
OPTIMIZER_DIR = "optimizer"
OPTIMIZER_UNSHARDED_FILE = "optimizer.bin"
REFERENCE_EMA_FILE = "ema.pt"  # Open-Sora's checkpoints
REFERENCE_MODEL_DIR = "model"

WEIGHT_FILES = {"ema": EMA_FILE, "model": MODEL_FILE}
"""Weight variant -> file of a checkpoint."""
SAMPLING_WEIGHT_FILES = (EMA_FILE, REFERENCE_EMA_FILE, MODEL_FILE, REFERENCE_MODEL_DIR)
"""What the sampler loads from a checkpoint folder, first match wins (EMA preferred)."""

_CKPT_RE = re.compile(r"^epoch(\d+)-global_step(\d+)$")
_EXP_RE = re.compile(r"^(\d{3,})-(.+)$")


def checkpoint_name(epoch: int, global_step: int) -> str:
    """``epoch{E}-global_step{G}`` (the reference's folder name)."""
    return f"epoch{int(epoch)}-global_step{int(global_step)}"


def parse_checkpoint_name(name: str) -> tuple[int, int] | None:
    """``(epoch, global_step)`` of a checkpoint folder name, or None."""
    m = _CKPT_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def model_folder_name(model_type: str) -> str:
    """``STDiT-XL/2`` -> ``STDiT-XL-2``."""
    return model_type.replace("/", "-")


def experiment_name(index: int, model_type: str) -> str:
    """``{NNN}-{model}``: the experiment folder of run number ``index``."""
    return f"{int(index):03d}-{model_folder_name(model_type)}"


def parse_experiment_name(name: str) -> tuple[int, str] | None:
    """``(index, model folder name)`` of an experiment folder name, or None."""
    m = _EXP_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def partial_name(name: str) -> str:
    """The hidden folder a local checkpoint is written into before it is renamed into place."""
    return f".{name}.partial"


def replaced_name(name: str) -> str:
    """The hidden folder an older checkpoint of the same name is moved to while the new one is published."""
    return f".{name}.old"


def staging_name(name: str, nonce: str) -> str:
    """The prefix an ``s3://`` checkpoint is uploaded to before it is published under ``name`` (``find``
    ignores it: it is not a checkpoint name)."""
    return f"{name}.staging-{nonce}"


def is_staging_of(child: str, name: str) -> bool:
    """Whether folder/prefix name ``child`` is a staging prefix of checkpoint ``name``."""
    return child.startswith(f"{name}.staging-")


def rng_file(folder: str | Path, rank: int) -> Path:
    """Where rank ``rank`` keeps its RNG state in a checkpoint."""
    return Path(folder) / RNG_DIR / f"rank{rank:05d}.pt"


@dataclass(frozen=True)
class OptimizerFiles:
    """Where a training backend keeps its optimizer state inside checkpoint ``folder``.

    The backends (``opensora_core.parallel``) take this object instead of naming files themselves.
    """

    folder: Path

    @property
    def replicated(self) -> Path:
        """One file for replicated optimizer state (written by rank 0, resumes on any world size)."""
        return Path(self.folder) / OPTIMIZER_FILE

    @property
    def consolidated(self) -> Path:
        """The full (unsharded) optimizer state of a sharded backend, keyed by parameter name (rank 0 writes;
        resumes on any world size)."""
        return Path(self.folder) / OPTIMIZER_FULL_FILE

    def shard(self, rank: int) -> Path:
        """Rank ``rank``'s optimizer shard (the older per-rank fsdp2 layout: same world size only)."""
        return Path(self.folder) / f"optimizer_rank{rank:05d}.pt"

    @property
    def booster_dir(self) -> Path:
        """The ColossalAI Booster's (sharded) optimizer checkpoint folder."""
        return Path(self.folder) / OPTIMIZER_DIR

    @property
    def booster_unsharded(self) -> Path:
        """The ColossalAI Booster's unsharded optimizer file (inside :attr:`booster_dir`)."""
        return self.booster_dir / OPTIMIZER_UNSHARDED_FILE
