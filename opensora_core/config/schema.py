"""`RunConfig`: the typed, validated form of an Open-Sora `.py` config (plus our additions).

Top-level names are the module-level variables of Open-Sora v1.0 / v1.1 config files; defaults are those
Open-Sora's `parse_configs` fills in (reference section 8) or, for keys it never fills, the values the shipped
configs use. Cross-field rules live in `_check_consistency` (always) and `check_ready` (per mode).
"""

from __future__ import annotations

import json
import math
import pprint
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from opensora_core.config.errors import ConfigError
from opensora_core.config.hints import did_you_mean
from opensora_core.config.sections import (
    DatasetConfig,
    ModelConfig,
    SchedulerConfig,
    TextEncoderConfig,
    TrackingConfig,
    VAEConfig,
    VariableVideoTextDatasetConfig,
)
from opensora_core.entry import Entry
from opensora_core.fields import (
    Bool,
    DType,
    Int,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Prob,
    Section,
    Size2,
)
from opensora_core.models.registry import MODELS, model_caps
from opensora_core.models.text_encoder_registry import TEXT_ENCODERS, text_encoder_caps
from opensora_core.models.vae_registry import carried_frames, vae_caps
from opensora_core.parallel.registry import BACKENDS, backend_caps
from opensora_core.schedulers.registry import SCHEDULERS, scheduler_caps
from opensora_core.video_sizes import ASPECT_RATIO_NAMES, ASPECT_RATIOS, image_size_of, num_frames_of

# Resolution names of the aspect-ratio tables (Open-Sora 1.1's, then 1.2's 2k / 2048 / 2880).
ASPECT_TABLE_NAMES: tuple[str, ...] = tuple(ASPECT_RATIOS)

# Mask kinds of Open-Sora's MaskGenerator (`mask_ratios` keys): 1.1's nine, then 1.2's `random` (each frame
# conditioning with one probability drawn per sample) and `intepolate` (sic: every other frame).
MASK_RATIO_NAMES: tuple[str, ...] = (
    "mask_no",
    "mask_quarter_random",
    "mask_quarter_head",
    "mask_quarter_tail",
    "mask_quarter_head_tail",
    "mask_image_random",
    "mask_image_head",
    "mask_image_tail",
    "mask_image_head_tail",
    "random",
    "intepolate",
)
# Later Open-Sora spellings of the same kinds, accepted and mapped to the 1.1 names.
MASK_RATIO_ALIASES: dict[str, str] = {"identity": "mask_no"} | {
    name.removeprefix("mask_"): name
    for name in MASK_RATIO_NAMES
    if name.startswith("mask_") and name != "mask_no"
}

# Training backends (`plugin`) and Open-Sora's `multi_resolution` spellings, from the component tables.
PLUGINS: tuple[str, ...] = tuple(BACKENDS)
MULTI_RESOLUTIONS: tuple[str, ...] = tuple(
    dict.fromkeys(e.caps.multi_resolution for e in MODELS.values() if e.caps.multi_resolution)
)
_RATIO_TOLERANCE = 1e-6


# keep_prob, or 1.2's (keep_prob, frame_prob) on video frame keys; None: evaluation only (1.2's eval_loss.py)
KeepProb = float | tuple[float, float] | None


def _is_prob(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= 1


def _validate_bucket_config(value: Any) -> dict[str, dict[int, tuple[KeepProb, int | None]]] | None:
    """Check an Open-Sora `bucket_config` = {res: {num_frames: (keep_prob, batch_size)}} and normalise it."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(
            f"bucket_config must be a dict {{resolution: {{num_frames: (keep_prob, batch_size)}}}}, got {value!r}"
        )
    problems: list[str] = []
    out: dict[str, dict[int, tuple[KeepProb, int | None]]] = {}
    for res, frames in value.items():
        where = f"bucket_config[{res!r}]"
        if res not in ASPECT_TABLE_NAMES:
            problems.append(
                f"{where}: unknown resolution {res!r}{did_you_mean(str(res), ASPECT_TABLE_NAMES)} "
                f"(known: {', '.join(ASPECT_TABLE_NAMES)})"
            )
            continue
        if not isinstance(frames, dict) or not frames:
            problems.append(
                f"{where}: must be a non-empty dict {{num_frames: (keep_prob, batch_size)}}, got {frames!r}"
            )
            continue
        out[res] = {}
        for t, entry in frames.items():
            if isinstance(t, str) and t.isdigit():  # JSON dumps turn int keys into strings
                t = int(t)
            at = f"{where}[{t!r}]"
            if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
                problems.append(f"{at}: the number of frames must be a positive int, got {t!r}")
                continue
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                problems.append(f"{at}: must be a pair (keep_prob, batch_size), got {entry!r}")
                continue
            keep_prob, batch_size = entry
            if keep_prob is None:  # Open-Sora 1.2's eval_loss config: a bucket to evaluate, not to train on
                if batch_size is not None and (type(batch_size) is not int or batch_size <= 0):
                    problems.append(f"{at}: batch_size must be a positive int or None, got {batch_size!r}")
                    continue
                out[res][t] = (None, batch_size)
                continue
            pair = isinstance(keep_prob, list | tuple)
            if pair and (t == 1 or len(keep_prob) != 2 or not all(_is_prob(p) for p in keep_prob)):
                problems.append(
                    f"{at}: keep_prob {keep_prob!r} must be a number in [0, 1] or, for video frame keys "
                    "(not 1), a pair (keep_prob, frame_prob) of numbers in [0, 1] (Open-Sora 1.2)"
                )
                continue
            if not pair and not _is_prob(keep_prob):
                problems.append(f"{at}: keep_prob must be a number in [0, 1], got {keep_prob!r}")
                continue
            keep_prob = (float(keep_prob[0]), float(keep_prob[1])) if pair else float(keep_prob)
            keep = keep_prob[0] if pair else keep_prob
            if batch_size is None:
                if keep > 0:
                    problems.append(
                        f"{at}: keep_prob {keep} > 0 needs a batch size; use (0.0, None) to disable "
                        f"the bucket or give a batch size like ({keep}, 4)"
                    )
                    continue
            elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
                problems.append(f"{at}: batch_size must be a positive int or None, got {batch_size!r}")
                continue
            out[res][t] = (keep_prob, batch_size)
    if problems:
        raise ValueError("\n".join(problems))
    return out


def normalize_mask_ratios(value: Any) -> dict[str, float] | None:
    """Check `mask_ratios` = {mask kind: probability} and return it with canonical names.

    Known kinds, values in [0, 1]. Without `mask_no` / `identity` the rest of the probability goes to
    `mask_no`, appended last (Open-Sora 1.2: its configs list only the conditioning kinds); with it the
    probabilities must sum to 1.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"mask_ratios must be a dict {{mask kind: probability}}, got {value!r}")
    problems: list[str] = []
    out: dict[str, float] = {}
    for name, ratio in value.items():
        canonical = MASK_RATIO_ALIASES.get(name, name)
        if canonical not in MASK_RATIO_NAMES:
            problems.append(
                f"mask_ratios[{name!r}]: unknown mask kind{did_you_mean(str(name), MASK_RATIO_NAMES)} "
                f"(known: {', '.join(MASK_RATIO_NAMES)})"
            )
            continue
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            problems.append(f"mask_ratios[{name!r}]: must be a probability in [0, 1], got {ratio!r}")
            continue
        if canonical in out:
            problems.append(f"mask_ratios[{name!r}]: given twice (as {canonical!r} too)")
            continue
        out[canonical] = float(ratio)
    total = sum(out.values())
    if not problems and "mask_no" not in out and total <= 1.0 + _RATIO_TOLERANCE:
        out["mask_no"] = max(0.0, 1.0 - total)
    elif not problems and out and not math.isclose(total, 1.0, abs_tol=_RATIO_TOLERANCE):
        extra = "" if "mask_no" in out else "; without mask_no they may sum to less, the rest is mask_no"
        problems.append(f"mask_ratios: the probabilities sum to {total:.6g}, they must sum to 1{extra}")
    if problems:
        raise ValueError("\n".join(problems))
    return out


def _parse_mask_strategy(text: str) -> list[tuple[int, int, int, int, int, float]]:
    """Parse one prompt's mask strategy "a,b,c,d,e,f;..." into full 6-tuples (short forms padded)."""
    tuples = []
    for part in text.split(";"):
        nums = [x.strip() for x in part.split(",")]
        if not 1 <= len(nums) <= 6 or any(not n for n in nums):
            raise ValueError(
                f"{part!r} must have 1 to 6 comma-separated numbers "
                "(loop_id, ref_id, ref_start, target_start, length, edit_ratio)"
            )
        try:
            ints = [int(n) for n in nums[:5]]
            ratio = float(nums[5]) if len(nums) == 6 else 0.0
        except ValueError:
            raise ValueError(
                f"{part!r}: the first five numbers must be integers, the sixth a float"
            ) from None
        full = ints + [0, 0, 0, 1][len(ints) - 1 :] if len(ints) < 5 else ints
        if full[4] <= 0:
            raise ValueError(f"{part!r}: length must be positive, got {full[4]}")
        if not 0 <= ratio <= 1:
            raise ValueError(f"{part!r}: edit_ratio must be in [0, 1], got {ratio}")
        tuples.append((*full[:5], ratio))
    return tuples


_SECTION_FIELDS = ("model", "vae", "text_encoder", "scheduler", "dataset", "tracking")


def _names(table: dict[str, Entry[Any]], **caps: Any) -> str:
    """The names of a component table whose capabilities match `caps`, quoted: "'iddpm' or 'iddpm-speed'"."""
    names = [repr(n) for n, e in table.items() if all(getattr(e.caps, k) == v for k, v in caps.items())]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _py_literal(value: Any, indent: int = 0) -> str:
    """Python source for a config value; dicts with identifier keys are written as dict(key=value, ...)."""
    pad = " " * (indent + 4)
    if isinstance(value, dict) and value and all(isinstance(k, str) and k.isidentifier() for k in value):
        items = "".join(f"{pad}{k}={_py_literal(v, indent + 4)},\n" for k, v in value.items())
        return "dict(\n" + items + " " * indent + ")"
    if isinstance(value, dict) and value:
        items = "".join(f"{pad}{k!r}: {_py_literal(v, indent + 4)},\n" for k, v in value.items())
        return "{\n" + items + " " * indent + "}"
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        items = "".join(f"{pad}{_py_literal(v, indent + 4)},\n" for v in value)
        return "[\n" + items + " " * indent + "]"
    return pprint.pformat(value, width=10_000, sort_dicts=False)


class RunConfig(Section):
    """A resolved run configuration (training or sampling); every Open-Sora v1.0/v1.1 config key is a field."""

    # ---- video size (sampling; Open-Sora 1.0 training)
    num_frames: PosInt | None = Field(
        None,
        description='Frames to generate (1 = image); Open-Sora 1.2 names "2s"/"4s"/... = 51/102/... frames.',
    )
    fps: PosInt = Field(24, description="Frame rate of generated videos (1.0 configs: 24 // 3 = 8).")
    frame_interval: PosInt = Field(
        1, description="Frame stride; 1.1 sampling saves at fps // frame_interval."
    )
    image_size: Size2 | None = Field(
        None, description="(H, W) in pixels (or give resolution and aspect_ratio, Open-Sora 1.2)."
    )
    resolution: Literal[ASPECT_TABLE_NAMES] | None = Field(
        None,
        description='Open-Sora 1.2 sampling size name ("480p"); with aspect_ratio it sets image_size when that '
        "is not given.",
    )
    aspect_ratio: Literal[tuple(ASPECT_RATIO_NAMES)] | None = Field(
        None, description='Open-Sora 1.2 "H:W" name ("9:16") of the resolution\'s table entry.'
    )
    save_fps: PosInt | None = Field(
        None, description="Frame rate written into saved videos (default fps // frame_interval)."
    )
    multi_resolution: Bool | Literal[MULTI_RESOLUTIONS] = Field(
        False,
        description='Pass size info to the model: "STDiT2" (height/width/num_frames/ar/fps) or "PixArtMS" '
        "(hw/ar); True = PixArtMS (1.0 spelling).",
    )

    # ---- components
    model: ModelConfig = Field(..., description="The diffusion transformer; `type` selects the family.")
    vae: VAEConfig = Field(..., description="Latent encoder/decoder.")
    text_encoder: TextEncoderConfig = Field(..., description="Prompt encoder.")
    scheduler: SchedulerConfig = Field(..., description="Diffusion scheduler / sampler.")
    dtype: DType = Field("bf16", description="Compute dtype: fp32, fp16 or bf16.")

    # ---- sampling
    batch_size: PosInt | None = Field(
        1,
        description="Samples per step (training: per GPU; None with bucket_config, which sets it per bucket).",
    )
    seed: Int = Field(42, description="Random seed (sampler/dataloader seed in training).")
    prompt_path: str | None = Field(None, description="Text file with one prompt per line.")
    prompt: list[str] | None = Field(None, description="Prompts (take priority over prompt_path).")
    save_dir: str = Field("./samples/samples/", description="Where generated videos are written.")
    sample_name: str | None = Field(None, description='File name stem (default "sample") -> NAME_{i}.mp4.')
    start_index: NonNegInt | None = Field(None, description="First prompt to use (slice start).")
    end_index: PosInt | None = Field(None, description="End of the prompt slice (exclusive).")
    num_sample: PosInt = Field(1, description="Videos per prompt (suffix -k).")
    prompt_as_path: Bool = Field(False, description="Name files after the prompt; skip existing ones.")
    loop: PosInt = Field(1, description="Generation loops (long videos); each extends the previous clip.")
    condition_frame_length: NonNegInt | None = Field(
        None, description="Frames of the previous loop used as the condition of the next."
    )
    condition_frame_edit: Prob = Field(
        0.0, description="Edit ratio of the frames carried between loops (0 = keep them as generated)."
    )
    compile_sampler: Bool = Field(
        False,
        description="Ours: torch.compile the model call of the sampler (inductor; compiled at the first step of "
        "the first video, the same graph for every later step).",
    )
    align: PosInt | None = Field(
        None,
        description="Open-Sora 1.2: snap mask-strategy ref_start / target_start to the nearest multiple of align "
        "latent frames.",
    )
    aes: NonNegFloat | None = Field(
        None, description='Open-Sora 1.2: append "aesthetic score: X." to every prompt (1.2 sample.py: 6.5).'
    )
    flow: NonNegFloat | None = Field(
        None, description='Open-Sora 1.2: append "motion score: X." (optical-flow score) to every prompt.'
    )
    camera_motion: str | None = Field(
        None, description='Open-Sora 1.2: append "camera motion: X." to every prompt (e.g. "pan right").'
    )
    reference_path: list[str | None] | None = Field(
        None, description='Per prompt: ";"-separated reference images/videos (None = no reference).'
    )
    mask_strategy: list[str | None] | None = Field(
        None,
        description='Per prompt: ";"-separated tuples "loop_id,ref_id,ref_start,target_start,length,edit_ratio" '
        '(short forms "0", "0,1", ... allowed).',
    )

    # ---- data
    dataset: DatasetConfig | None = Field(None, description="Training data; `type` selects the dataset.")
    num_workers: NonNegInt = Field(4, description="DataLoader worker processes.")
    num_bucket_build_workers: PosInt = Field(1, description="Processes used to assign samples to buckets.")
    bucket_config: dict[str, dict[int, tuple[KeepProb, int | None]]] | None = Field(
        None,
        description="{resolution: {num_frames: (keep_prob, batch_size)}}; (0.0, None) disables a bucket; "
        "Open-Sora 1.2: keep_prob may be (keep_prob, frame_prob) for video frame keys, or None in a "
        "validation-loss config (every clip that fits is evaluated; not valid for training). "
        "Resolutions: " + ", ".join(ASPECT_TABLE_NAMES) + ".",
    )
    mask_ratios: dict[str, float] | None = Field(
        None,
        description="{mask kind: probability} for frame-conditioning masks in training; without mask_no the "
        "rest of the probability is mask_no. Kinds: " + ", ".join(MASK_RATIO_NAMES) + ".",
    )

    # ---- evaluation
    num_eval_timesteps: PosInt = Field(
        10,
        description="Validation loss (Open-Sora 1.2 eval_loss): evenly spaced timesteps at which every held-out "
        "clip is scored (python -m opensora_core.eval.val_loss).",
    )

    # ---- training
    plugin: Literal[PLUGINS] = Field(
        "zero2", description="Training backend; zero2-seq adds sequence parallelism over sp_size ranks."
    )
    sp_size: PosInt = Field(1, description="Sequence-parallel group size (needs plugin zero2-seq when > 1).")
    grad_checkpoint: Bool = Field(False, description="Activation checkpointing per block.")
    compile: Bool = Field(
        False,
        description="Ours: torch.compile each transformer block (inductor; the rest of the model stays eager). "
        "Bucket shapes are handled with dynamic shapes after the first recompile.",
    )
    grad_clip: PosFloat | None = Field(1.0, description="Max global grad norm (None = no clipping).")
    lr: PosFloat = Field(2e-5, description="AdamW learning rate (no schedule in Open-Sora).")
    adam_eps: PosFloat = Field(1e-8, description="AdamW epsilon (Open-Sora 1.2 training: 1e-15).")
    weight_decay: NonNegFloat = Field(0.0, description="Ours: AdamW weight decay (Open-Sora: 0).")
    warmup_steps: NonNegInt = Field(0, description="Ours: linear LR warm-up steps (0 = none, as Open-Sora).")
    ema_decay: Prob | None = Field(
        0.9999, description="EMA decay of the fp32 EMA weights (None = no EMA, like --no-ema)."
    )
    epochs: PosInt = Field(1000, description="Epochs to train.")
    max_steps: PosInt | None = Field(None, description="Ours: stop after this many global steps.")
    log_every: PosInt = Field(10, description="Log metrics every N global steps.")
    ckpt_every: NonNegInt = Field(1000, description="Checkpoint every N global steps (0 = only at the end).")
    preview_every: NonNegInt = Field(
        0,
        description="Ours: every N global steps rank 0 samples `preview_prompts` from the current (EMA) weights "
        "and logs one labelled grid (MLflow image `preview` at that step; `preview/` in the experiment "
        "folder); 0 = off.",
    )
    preview_prompts: list[str] = Field(
        default_factory=list, description="Ours: the preview's prompts, one grid row each (fixed seeds)."
    )
    preview_sampling_steps: PosInt = Field(
        10, description="Ours: sampling steps of the preview (the training scheduler, respaced)."
    )
    keep_last_n: PosInt | None = Field(None, description="Ours: keep only the newest N checkpoints.")
    max_bad_steps: NonNegInt = Field(
        5, description="Ours: abort after this many consecutive steps with a non-finite loss or grad norm."
    )
    save_retries: NonNegInt = Field(
        2,
        description="Ours: extra attempts of a failed periodic checkpoint save (with backoff) before skipping it.",
    )
    save_retry_backoff_s: NonNegFloat = Field(
        5.0, description="Ours: seconds before the first save retry; doubles per attempt (at most 300)."
    )
    max_failed_saves: PosInt = Field(
        3, description="Ours: stop training after this many consecutive skipped periodic saves."
    )
    final_save_retries: NonNegInt = Field(
        8, description="Ours: extra attempts of the final checkpoint save before the run fails."
    )
    experiment_folder: Literal["new", "latest"] = Field(
        "new",
        description="Ours: `new`: the next `NNN-model` folder under outputs; `latest`: continue in the newest "
        "one (so restarts before the first checkpoint stay in one folder; the pipeline sets it).",
    )
    load: str | None = Field(None, description="Checkpoint directory to resume from (`--load`).")
    start_from_scratch: Bool = Field(
        False, description="With load: keep weights/optimizer but reset epoch, step and sampler."
    )
    outputs: str = Field("outputs", description="Experiment folder root (local path or s3://).")
    wandb: Bool = Field(
        False,
        description="Open-Sora's Weights & Biases switch, accepted only as False (upstream configs set it); "
        "True is an error: track runs in MLflow with `tracking = dict(backend='mlflow', ...)`.",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Ours: experiment tracking (MLflow)."
    )

    # ------------------------------------------------------------------ field normalisation

    @field_validator("wandb")
    @classmethod
    def _no_wandb(cls, v: bool) -> bool:
        if v:
            raise ValueError(
                "wandb=True: Weights & Biases logging is not supported. Remove `wandb = True` (or set it False) "
                "and track the run in MLflow: tracking = dict(backend='mlflow', uri=..., experiment=...) "
                "(CLI: --cfg-options tracking.backend=mlflow tracking.uri=URI)"
            )
        return v

    @field_validator("prompt", "reference_path", "mask_strategy", mode="before")
    @classmethod
    def _wrap_single_string(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _named_size(cls, data: Any) -> Any:
        """Open-Sora 1.2's resolution + aspect_ratio give image_size when it is not set (as its inference)."""
        if not isinstance(data, dict) or data.get("image_size") is not None:
            return data
        res, ar = data.get("resolution"), data.get("aspect_ratio")
        if isinstance(res, str) and isinstance(ar, str) and res in ASPECT_RATIOS and ar in ASPECT_RATIO_NAMES:
            try:
                return {**data, "image_size": image_size_of(res, ar)}
            except ValueError:
                return data  # reported by _size_problems
        return data

    @field_validator("num_frames", mode="before")
    @classmethod
    def _named_num_frames(cls, v: Any) -> Any:
        return num_frames_of(v) if isinstance(v, str) else v

    @field_validator("multi_resolution", mode="before")
    @classmethod
    def _legacy_multi_resolution(cls, v: Any) -> Any:
        return "PixArtMS" if v is True else v

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_none(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("bucket_config", mode="before")
    @classmethod
    def _bucket_config(cls, v: Any) -> Any:
        return _validate_bucket_config(v)

    @field_validator("mask_ratios", mode="before")
    @classmethod
    def _mask_ratios(cls, v: Any) -> Any:
        return normalize_mask_ratios(v)

    @field_validator("mask_strategy")
    @classmethod
    def _mask_strategy(cls, v: list[str | None] | None) -> list[str | None] | None:
        for i, s in enumerate(v or []):
            if s is not None:
                try:
                    _parse_mask_strategy(s)
                except ValueError as e:
                    raise ValueError(f"mask_strategy[{i}]: {e}") from None
        return v

    # ------------------------------------------------------------------ cross-field rules

    @model_validator(mode="after")
    def _check_consistency(self) -> RunConfig:
        problems = (
            self._size_problems()
            + self._conditioning_problems()
            + self._parallel_problems()
            + self._data_problems()
            + self._long_video_problems()
            + self._preview_problems()
        )
        if self.start_index is not None and self.end_index is not None and self.end_index <= self.start_index:
            problems.append(
                f"end_index ({self.end_index}) must be greater than start_index ({self.start_index})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _preview_problems(self) -> list[str]:
        if not self.preview_every:
            return []
        problems = []
        if not self.preview_prompts:
            problems.append(
                f"preview_every={self.preview_every} needs preview_prompts (a few prompts to sample), or set "
                "preview_every=0"
            )
        if any(not (isinstance(p, str) and p.strip()) for p in self.preview_prompts):
            problems.append("preview_prompts must be non-empty strings")
        if isinstance(self.dataset, VariableVideoTextDatasetConfig) and (
            self.num_frames is None or self.image_size is None
        ):
            problems.append(
                "preview_every with a bucketed dataset (VariableVideoTextDataset) needs num_frames and "
                "image_size: the size the preview samples at"
            )
        return problems

    def _named_size_problems(self) -> list[str]:
        res, ar = self.resolution, self.aspect_ratio
        if res is None and ar is None:
            return []
        if res is None or ar is None:
            given, missing = ("resolution", "aspect_ratio") if ar is None else ("aspect_ratio", "resolution")
            return [f"{given} is set but {missing} is not; Open-Sora 1.2 names need both (or set image_size)"]
        try:
            named = image_size_of(res, ar)
        except ValueError as e:
            return [f"resolution / aspect_ratio: {e}"]
        if self.image_size is not None and tuple(self.image_size) != named:
            return [
                f"image_size {tuple(self.image_size)} contradicts resolution={res!r}, aspect_ratio={ar!r} "
                f"({named}); set only one of them"
            ]
        return []

    def _size_problems(self) -> list[str]:
        m = self.model
        caps = model_caps(m.type)
        problems = self._named_size_problems()
        hidden, heads = m.effective("hidden_size"), m.effective("num_heads")
        if hidden % heads:
            problems.append(f"model.hidden_size ({hidden}) must be divisible by model.num_heads ({heads})")
        if "ar" in caps.video_info and hidden % 3:
            problems.append(
                f"model.hidden_size ({hidden}) must be divisible by 3 for {m.type} (its size and aspect-ratio "
                "embedders are hidden_size / 3 wide)"
            )
        if not caps.fixed_grid:
            return problems  # STDiT2 / PixArtMS pad to the patch and compute positions per call
        pt, ph, pw = m.effective("patch_size")
        stride = vae_caps(self.vae.type).spatial_stride
        sizes = [("image_size", self.image_size), ("num_frames", self.num_frames)]
        if self.dataset is not None and not isinstance(self.dataset, VariableVideoTextDatasetConfig):
            sizes += [
                ("dataset.image_size", self.dataset.image_size),
                ("dataset.num_frames", self.dataset.num_frames),
            ]
        for name, size in sizes:
            if size is None:
                continue
            if name.endswith("image_size"):
                bad = [s for s, p in zip(size, (ph, pw), strict=True) if s % (stride * p)]
                if bad:
                    need = (stride * ph, stride * pw)
                    problems.append(
                        f"{name} {tuple(size)} is not divisible by VAE stride {stride} (vae.type "
                        f"{self.vae.type!r}) x model patch {(ph, pw)} (model.patch_size {(pt, ph, pw)}) = {need}; "
                        f"{m.type} has a fixed positional grid, so use multiples of {need}"
                    )
            elif size % pt:
                problems.append(
                    f"{name} ({size}) is not divisible by the temporal patch {pt} (model.patch_size {(pt, ph, pw)})"
                )
        return problems

    def _conditioning_problems(self) -> list[str]:
        m, te = self.model, self.text_encoder
        output = text_encoder_caps(te.type).output
        classes = _names(TEXT_ENCODERS, output="class_ids")
        problems = []
        if model_caps(m.type).conditioning == "caption":
            if output != "caption":
                problems.append(
                    f"model.type {m.type!r} is conditioned on caption embeddings and needs text_encoder.type "
                    f"{_names(TEXT_ENCODERS, output='caption')}, got {te.type!r}"
                )
        else:
            n = m.num_label_classes()  # type: ignore[union-attr]
            num_classes = getattr(te, "num_classes", None)
            if n is not None and (output != "class_ids" or num_classes != n):
                got = f"{te.type!r}" + (f" with num_classes={num_classes}" if output == "class_ids" else "")
                problems.append(
                    f"model.condition {m.condition!r} needs text_encoder = dict(type={classes}, "  # type: ignore[union-attr]
                    f"num_classes={n}), got text_encoder.type {got}"
                )
            if n is None and output != "pooled_text":
                problems.append(
                    f"model.type {m.type!r} with condition 'text' needs text_encoder.type "
                    f"{_names(TEXT_ENCODERS, output='pooled_text')} (pooled text), got {te.type!r}; "
                    f"use condition='label_N' with type {classes} for class labels"
                )
        te_len = getattr(te, "model_max_length", None)
        if m.model_max_length is not None and te_len is not None and m.model_max_length != te_len:
            problems.append(
                f"model.model_max_length ({m.model_max_length}) differs from text_encoder.model_max_length "
                f"({te_len}); the model is built with the text encoder's length, so drop model.model_max_length"
            )
        if m.enable_flash_attn and m.attn_backend in ("sdpa", "math"):
            problems.append(
                f"model.enable_flash_attn=True contradicts model.attn_backend={m.attn_backend!r}; set only one"
            )
        if m.grad_checkpointing is not None and m.grad_checkpointing != self.grad_checkpoint:
            problems.append(
                f"model.grad_checkpointing ({m.grad_checkpointing}) contradicts grad_checkpoint "
                f"({self.grad_checkpoint}); set only grad_checkpoint"
            )
        if m.in_channels is not None and m.in_channels != self.vae.latent_channels:
            problems.append(
                f"model.in_channels ({m.in_channels}) differs from the {self.vae.type!r} VAE's "
                f"{self.vae.latent_channels} latent channels"
            )
        mr = self.multi_resolution
        if mr and mr != model_caps(m.type).multi_resolution:
            problems.append(
                f"multi_resolution={mr!r} needs model.type {_names(MODELS, multi_resolution=mr)}, got {m.type!r}"
            )
        return problems

    def _parallel_problems(self) -> list[str]:
        problems = []
        caps = model_caps(self.model.type)
        if self.sp_size > 1:
            if not backend_caps(self.plugin).sequence_parallel:
                problems.append(
                    f"sp_size={self.sp_size} needs plugin={_names(BACKENDS, sequence_parallel=True)} "
                    f"(got {self.plugin!r}); set sp_size=1 for data parallelism only"
                )
            if not caps.sequence_parallel:
                problems.append(
                    f"sp_size={self.sp_size}: model.type {self.model.type!r} has no sequence parallelism; use "
                    f"{_names(MODELS, sequence_parallel=True)} or set sp_size=1"
                )
            heads = self.model.effective("num_heads")
            if heads % self.sp_size:
                problems.append(
                    f"model.num_heads ({heads}) must be divisible by sp_size ({self.sp_size}): "
                    "sequence parallelism splits the attention heads across ranks"
                )
        if (
            caps.sequence_parallel
            and getattr(self.model, "enable_sequence_parallelism", None)
            and self.sp_size == 1
        ):
            problems.append("model.enable_sequence_parallelism=True needs sp_size > 1 and plugin='zero2-seq'")
        return problems

    def _data_problems(self) -> list[str]:
        problems = []
        variable = isinstance(self.dataset, VariableVideoTextDatasetConfig)
        if self.bucket_config is not None and not variable:
            got = self.dataset.type if self.dataset is not None else None
            problems.append(
                f"bucket_config is only used by dataset type 'VariableVideoTextDataset' (got dataset.type "
                f"{got!r}); remove bucket_config or switch the dataset type"
            )
        if variable and not self.bucket_config:
            problems.append("dataset.type 'VariableVideoTextDataset' needs a bucket_config")
        if self.dataset is not None and not variable and self.batch_size is None:
            problems.append(f"batch_size is None; dataset.type {self.dataset.type!r} needs a batch size")
        if self.mask_ratios and not model_caps(self.model.type).frame_mask:
            problems.append(
                f"mask_ratios needs a model that takes a frame mask ({_names(MODELS, frame_mask=True)}), "
                f"got {self.model.type!r}"
            )
        return problems

    def _long_video_problems(self) -> list[str]:
        problems = []
        refs, strategies = self.reference_path, self.mask_strategy
        if (refs or strategies) and not scheduler_caps(self.scheduler.type).frame_mask:
            masked = _names(SCHEDULERS, frame_mask=True, sampling=True)
            problems.append(
                f"reference_path / mask_strategy need scheduler type {masked} "
                f"({self.scheduler.type} has no frame mask)"
            )
        if (refs or strategies) and not model_caps(self.model.type).frame_mask:
            problems.append(
                f"reference_path / mask_strategy need a model that takes a frame mask, got {self.model.type!r}"
            )
        if strategies is not None and refs is None:
            problems.append(
                "mask_strategy is set but reference_path is not; give one reference entry per prompt"
            )
        if refs is not None and strategies is not None and len(refs) != len(strategies):
            problems.append(
                f"reference_path has {len(refs)} entries but mask_strategy has {len(strategies)}; give one per prompt"
            )
        if refs is not None and self.prompt is not None and len(refs) != len(self.prompt):
            problems.append(
                f"reference_path has {len(refs)} entries but prompt has {len(self.prompt)}; give one per prompt"
            )
        for i, strategy in enumerate(strategies if refs is not None and strategies is not None else []):
            if strategy is None:
                continue
            ref = refs[i] if i < len(refs) else None
            if ref is None:
                problems.append(f"mask_strategy[{i}] is set but reference_path[{i}] is None")
                continue
            n_refs = len(ref.split(";"))
            for loop_id, ref_id, *_ in _parse_mask_strategy(strategy):
                if loop_id >= self.loop:
                    problems.append(
                        f"mask_strategy[{i}]: loop_id {loop_id} is never reached with loop={self.loop}"
                    )
                if ref_id >= n_refs:
                    problems.append(
                        f"mask_strategy[{i}]: ref_id {ref_id} but reference_path[{i}] has {n_refs} reference(s)"
                    )
        if self.loop > 1:
            cfl = self.condition_frame_length
            if cfl is None or cfl == 0:
                problems.append(
                    f"loop={self.loop} needs condition_frame_length > 0 (frames carried between loops)"
                )
            else:
                try:
                    carried = carried_frames(self.vae, cfl)
                except ValueError as exc:
                    problems.append(str(exc))
                else:
                    if self.num_frames is not None and carried >= self.num_frames:
                        what = f"{cfl}" if carried == cfl else f"{cfl} latent frames = {carried} frames"
                        problems.append(
                            f"condition_frame_length ({what}) must be shorter than num_frames ({self.num_frames})"
                        )
        return problems

    # ------------------------------------------------------------------ per-mode checks and output

    def check_ready(self, training: bool, source: str | None = None) -> RunConfig:
        """Raise ConfigError when something the chosen mode needs is missing; return self otherwise."""
        problems: list[str] = []
        if training:
            if getattr(self.text_encoder, "offload", False):
                problems.append(
                    "text_encoder.offload=True is a sampling option (training encodes captions every step); "
                    "remove it from the training config"
                )
            no_keep = [
                f"{res}/{t}"
                for res, frames in (self.bucket_config or {}).items()
                for t, e in frames.items()
                if e[0] is None
            ]
            if no_keep:
                problems.append(
                    f"bucket_config {', '.join(no_keep[:4])}: keep_prob None marks a bucket for validation loss "
                    "(python -m opensora_core.eval.val_loss); give a number in [0, 1] to train on it"
                )
            if self.dataset is None or self.dataset.data_path is None:
                problems.append("dataset.data_path is not set: pass --data-path or set dataset.data_path")
            if not scheduler_caps(self.scheduler.type).training:
                problems.append(
                    f"scheduler.type {self.scheduler.type!r} is sampling-only; train with "
                    f"{_names(SCHEDULERS, training=True)}"
                )
        else:
            if not scheduler_caps(self.scheduler.type).sampling:
                problems.append(
                    f"scheduler.type {self.scheduler.type!r} is training-only; sample with "
                    f"{_names(SCHEDULERS, sampling=True)}"
                )
            if not self.prompt and self.prompt_path is None:
                problems.append("no prompts: set prompt or prompt_path, or pass --prompt / --prompt-path")
            if self.num_frames is None:
                problems.append("num_frames is not set: pass --num-frames or set num_frames")
            if self.image_size is None:
                problems.append("image_size is not set: pass --image-size H W or set image_size")
            if self.batch_size is None:
                problems.append("batch_size is None: pass --batch-size or set batch_size")
            wanted = model_caps(self.model.type).multi_resolution
            if wanted and self.multi_resolution != wanted:
                problems.append(
                    f"model.type {self.model.type!r} samples with multi_resolution={wanted!r} (size conditioning)"
                )
        if problems:
            raise ConfigError(source or "<config>", problems)
        return self

    def to_dict(self, mode: Literal["python", "json"] = "json") -> dict[str, Any]:
        """The resolved config as a plain dict (`json`: lists and string keys; `python`: tuples, int keys)."""
        return self.model_dump(mode=mode)

    def dumps_py(self) -> str:
        """The resolved config as an Open-Sora-style `.py` file that `load_config` reads back.

        Unset (None) fields inside sections are left out: they mean "the component's default" either way.
        """
        lines = [
            "# Resolved opensora-platform run config (written by RunConfig.dump; loads with load_config).",
            "",
        ]
        for key, value in self.to_dict(mode="python").items():
            if isinstance(value, dict) and key in _SECTION_FIELDS:
                value = {k: v for k, v in value.items() if v is not None}
            lines.append(f"{key} = {_py_literal(value)}")
        return "\n".join(lines) + "\n"

    def dumps_json(self) -> str:
        """The resolved config as indented JSON."""
        return json.dumps(self.to_dict(mode="json"), indent=2) + "\n"

    def save(self, directory: str | Path, stem: str = "config") -> tuple[Path, Path]:
        """Write `<stem>.py` and `<stem>.json` into `directory` (run folders, checkpoints); return both paths."""
        directory = Path(directory)
        return self.dump(directory / f"{stem}.py"), self.dump(directory / f"{stem}.json")

    def dump(self, path: str | Path) -> Path:
        """Write the resolved config to `path` (.py or .json, chosen by the suffix) and return the path."""
        path = Path(path)
        if path.suffix == ".py":
            text = self.dumps_py()
        elif path.suffix == ".json":
            text = self.dumps_json()
        else:
            raise ValueError(f"RunConfig.dump: {path} must end in .py or .json")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path
