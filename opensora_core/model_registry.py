"""MLflow model registry: log a trained checkpoint as a pyfunc model, register it with lineage, set aliases.

    from opensora_core.model_registry import register_checkpoint
    result = register_checkpoint(
        "s3://ckpts/run1/000-STDiT-XL-2/epoch3-global_step4000", "opensora-stdit",
        tracking_uri="http://mlflow:5000", run_id=eval_run_id,
        metrics={"colour_accuracy": 0.94, "colour_accuracy_gain": 0.66},
        gate={"colour_accuracy": 0.5, "colour_accuracy_gain": 0.2},
        lineage={"dataset_uri": "s3://datasets/meta.csv", "dataset_sha256": "...", "image": "...:0.1.0",
                 "pipeline_run_id": "..."})
    result.version, result.aliases          # "3", ["candidate", "champion"]

The logged model is a pyfunc model (``loader_module`` = this module) whose artifacts are the EMA weights
(``weights.safetensors``), the resolved config (``config.json`` / ``config.py``) and ``model_card.json``, which
names the VAE and text encoder the weights need (references, not copies: those are separate pretrained models).
``mlflow.pyfunc.load_model("models:/opensora-stdit@champion").predict(["a red square moving left"])`` samples
videos and returns a DataFrame of prompts and video paths.

Registration rules:

- the version gets lineage tags (``opensora.*``): checkpoint URI and SHA-256, config hash, dataset URI and hash,
  git commit, image, pipeline run id, model type, VAE and text encoder ids, global step, gate outcome;
- alias ``candidate`` always moves to the version; ``champion`` only when every gate threshold passes
  (``{"metric": min}``; ``"metric<=": max`` for lower-is-better metrics; an empty gate never promotes);
- idempotent: a version whose ``opensora.checkpoint_sha256`` tag equals the weights' hash is reused (no new
  model is logged), only aliases and gate tags are updated;
- no secrets: keys that look like credentials are dropped and URIs lose their user:password part.

``mlflow`` is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensora_core.checkpoint import CONFIG_JSON, CONFIG_PY, WEIGHT_FILES, read_running_states_uri
from opensora_core.checkpoint.verify import sha256_of  # one implementation (also used by prepare_data)
from opensora_core.config.hints import is_secret_key
from opensora_core.config.identity import config_hash, git_commit
from opensora_core.io.tracking import ensure_experiment, scrub_uri  # noqa: F401 - ensure_experiment: public here too

logger = logging.getLogger(__name__)

TAG_PREFIX = "opensora."
CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.json"
_LINEAGE_KEYS = ("dataset_uri", "dataset_sha256", "git_commit", "image", "pipeline_run_id")


@dataclass(frozen=True)
class GateResult:
    """Outcome of :func:`check_gate`: passed, and one line per threshold."""

    passed: bool
    details: tuple[str, ...]

    def summary(self) -> str:
        """The per-threshold lines joined with '; '."""
        return "; ".join(self.details)


@dataclass
class RegistrationResult:
    """What :func:`register_checkpoint` did."""

    name: str
    version: str
    aliases: list[str]
    champion: bool
    gate: GateResult
    reused: bool
    model_uri: str
    run_id: str | None
    checkpoint_sha256: str
    tags: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ lineage
def check_gate(metrics: Mapping[str, float], gate: Mapping[str, float] | None) -> GateResult:
    """Compare ``metrics`` with ``gate`` thresholds: ``{"m": x}`` or ``{"m>=": x}`` need m >= x,
    ``{"m<=": x}`` needs m <= x. A missing or non-finite metric fails; an empty gate never passes."""
    if not gate:
        return GateResult(False, ("no gate thresholds given: champion is never set without a gate",))
    from opensora_core.eval.gate import check_thresholds

    passed, details = check_thresholds(metrics, gate)
    return GateResult(passed, tuple(details))


def safe_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """String tags without credential-like keys, None values or secrets inside URIs (MLflow's 5000-char cap)."""
    out = {}
    for key, value in tags.items():
        if value is None or is_secret_key(key):
            continue
        out[key] = scrub_uri(str(value))[:5000]
    return out


# ------------------------------------------------------------------------------------------ pyfunc
class OpenSoraPyfuncModel:
    """The served model: samples videos for prompts (what ``mlflow.pyfunc.load_model`` returns inside)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.card = json.loads((self.folder / CARD_FILE).read_text())
        self._models: Any = None

    def _config(self, save_dir: str, params: Mapping[str, Any]) -> Any:
        from opensora_core.eval.evaluate import sampling_config

        return sampling_config(
            self.folder / CONFIG_JSON,
            self.folder / WEIGHTS_FILE,
            save_dir,
            num_sampling_steps=params.get("num_sampling_steps") or None,
            cfg_scale=params.get("cfg_scale"),
            seed=int(params.get("seed", 0)),
            batch_size=int(params.get("batch_size", 4)),
        )

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> Any:
        """``model_input``: a list of prompts or a DataFrame with a ``prompt`` column. ``params``:
        ``save_dir`` (default: a new temp folder), ``num_sampling_steps``, ``cfg_scale``, ``seed``,
        ``batch_size``. Returns a DataFrame with ``prompt`` and ``video`` (file path)."""
        import pandas as pd

        from opensora_core.sample import load_sampling_models, sample

        if isinstance(model_input, pd.DataFrame):
            if "prompt" not in model_input.columns:
                raise ValueError(f"input DataFrame needs a 'prompt' column, has {list(model_input.columns)}")
            prompts = [str(p) for p in model_input["prompt"]]
        elif isinstance(model_input, str):
            prompts = [model_input]
        else:
            prompts = [str(p) for p in model_input]
        if not prompts:
            raise ValueError("no prompts given")
        params = dict(params or {})
        save_dir = str(params.get("save_dir") or tempfile.mkdtemp(prefix="opensora-pyfunc-"))
        cfg = self._config(save_dir, params)
        if self._models is None:
            self._models = load_sampling_models(cfg)
        paths = sample(cfg, prompts, progress=False, models=self._models._replace(scheduler=_scheduler(cfg)))
        return pd.DataFrame({"prompt": prompts, "video": [str(p) for p in paths]})


def _scheduler(cfg: Any) -> Any:
    from opensora_core.sample.pipeline import build_sampling_scheduler

    return build_sampling_scheduler(cfg)


def _load_pyfunc(data_path: str) -> OpenSoraPyfuncModel:
    """MLflow ``loader_module`` entry point: ``data_path`` is the logged model's data folder."""
    folder = Path(data_path)
    if not (folder / CARD_FILE).is_file():  # mlflow keeps the staged folder's name under data/
        children = [c for c in folder.iterdir() if (c / CARD_FILE).is_file()]
        if len(children) != 1:
            raise FileNotFoundError(f"{data_path} holds no {CARD_FILE}: not an opensora pyfunc model")
        folder = children[0]
    return OpenSoraPyfuncModel(folder)


# ------------------------------------------------------------------------------------------ registry
def _stage(checkpoint: str, weights: str, into: Path) -> tuple[Path, dict[str, Any]]:
    """Copy the weights and resolved config of ``checkpoint`` into ``into`` (the model's data folder)."""
    from opensora_core.io import storage

    source = storage.join(checkpoint, WEIGHT_FILES[weights])
    if not storage.exists(source):
        raise FileNotFoundError(
            f"{source} does not exist: register a checkpoint folder written by opensora_core.train"
            + (" (trained with EMA, or pass weights='model')" if weights == "ema" else "")
        )
    into.mkdir(parents=True)
    storage.download_file(source, into / WEIGHTS_FILE)
    storage.download_file(storage.join(checkpoint, CONFIG_JSON), into / CONFIG_JSON)
    config = json.loads((into / CONFIG_JSON).read_text())
    if storage.exists(storage.join(checkpoint, CONFIG_PY)):
        storage.download_file(storage.join(checkpoint, CONFIG_PY), into / CONFIG_PY)
    return into, {"config": config, "running_states": read_running_states_uri(checkpoint)}


def _references(config: Mapping[str, Any]) -> dict[str, str]:
    """Ids of the frozen models the weights need (not part of the logged artifacts)."""

    def ref(section: str) -> str:
        value = config.get(section) or {}
        if not isinstance(value, Mapping):
            return str(value)
        return str(value.get("from_pretrained") or value.get("type"))

    return {"vae": ref("vae"), "text_encoder": ref("text_encoder")}


def _requirements() -> list[str]:
    """Pinned packages the pyfunc model needs (the versions of this environment)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in (
        "torch",
        "numpy",
        "pandas",
        "pydantic",
        "safetensors",
        "einops",
        "av",
        "transformers",
        "diffusers",
        "sentencepiece",
        "tqdm",
        "pillow",
    ):
        try:
            reqs.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return reqs


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "prompt")]),
        outputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "video")]),
        params=ParamSchema(
            [
                ParamSpec("num_sampling_steps", "long", 0),
                ParamSpec("cfg_scale", "double", 4.0),
                ParamSpec("seed", "long", 0),
                ParamSpec("batch_size", "long", 4),
                ParamSpec("save_dir", "string", ""),
            ]
        ),
    )


def _find_version(client: Any, name: str, sha: str) -> Any:
    try:
        client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001 - "not found" surfaces as different exception types
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
            or "not found" in str(exc).lower()
        ):
            return None
        raise
    found = client.search_model_versions(
        f"name = '{name}' and tags.`{TAG_PREFIX}checkpoint_sha256` = '{sha}'"
    )
    return min(found, key=lambda v: int(v.version)) if found else None


class ProvenanceError(RuntimeError):
    """A model version's tags or artifacts are not what the pipeline registered: it is not promoted."""


def check_provenance(
    client: Any,
    tracking_uri: str,
    name: str,
    version: str,
    sha: str,
    *,
    require_lineage: bool,
    verify_weights: bool = True,
) -> None:
    """Raise :class:`ProvenanceError` unless version ``version`` of ``name`` holds the checkpoint hashed ``sha``.

    Loading a registered model runs its Python code (MLflow pyfunc), so an alias is only moved to a version whose
    ``opensora.checkpoint_sha256`` tag is ``sha``, whose logged weights file hashes to ``sha`` (downloaded and
    checked here when ``verify_weights``; :func:`register_checkpoint` skips that for a version it has just
    logged from the checkpoint itself) and, with ``require_lineage``, which carries the
    ``opensora.pipeline_run_id`` lineage tag.
    """
    import mlflow

    tags = client.get_model_version(name, version).tags
    where = f"model {name} version {version}"
    if require_lineage and not tags.get(f"{TAG_PREFIX}pipeline_run_id"):
        raise ProvenanceError(
            f"{where} has no {TAG_PREFIX}pipeline_run_id tag: not registered by the pipeline"
        )
    if tags.get(f"{TAG_PREFIX}checkpoint_sha256") != sha:
        raise ProvenanceError(f"{where}: tag {TAG_PREFIX}checkpoint_sha256 is not the checkpoint's {sha}")
    if not verify_weights:
        return
    with tempfile.TemporaryDirectory(prefix="opensora-provenance-") as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=client.get_model_version_download_uri(name, version),
                dst_path=tmp,
                tracking_uri=tracking_uri,
            )
        )
        found = sorted(local.rglob(WEIGHTS_FILE))
        if len(found) != 1 or sha256_of(found[0]) != sha:
            raise ProvenanceError(
                f"{where}: its {WEIGHTS_FILE} artifact does not hash to the checkpoint's {sha}"
            )


def register_checkpoint(
    checkpoint: str,
    model_name: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = "opensora",
    run_id: str | None = None,
    metrics: Mapping[str, float] | None = None,
    gate: Mapping[str, float] | None = None,
    lineage: Mapping[str, Any] | None = None,
    weights: str = "ema",
    aliases: Sequence[str] = (CANDIDATE_ALIAS,),
    decision: Any = None,
    description: str | None = None,
    require_lineage: bool = False,
    run_name: str | None = None,
) -> RegistrationResult:
    """Log ``checkpoint`` as a pyfunc model and register it as a version of ``model_name`` (module docstring).

    ``run_id``: the MLflow run to log the model into (the evaluation run, so the version links to its
    metrics); None creates a run in ``experiment`` named ``run_name`` (default ``register-{model_name}``). ``metrics`` feed the gate and are recorded with the version;
    ``lineage`` keys: dataset_uri, dataset_sha256, git_commit (default: :func:`git_commit`), image,
    pipeline_run_id. ``aliases`` are always set; ``champion`` is added when the gate passes. ``decision``: a
    gate outcome decided elsewhere (``.passed``, ``.details``; e.g. ``opensora_core.eval.gate.GateDecision``
    against the champion), used instead of checking ``gate``. ``description``: the version's description
    (markdown; the model card). Before any alias moves, :func:`check_provenance` checks the version
    (``require_lineage``: it must carry the pipeline's lineage tag; the register step sets it), so a reused
    version someone else registered is never promoted.
    """
    import mlflow
    from mlflow import MlflowClient

    from opensora_core.io import storage

    if weights not in WEIGHT_FILES:
        raise ValueError(f"weights must be one of {list(WEIGHT_FILES)}, got {weights!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", model_name):
        raise ValueError(f"model_name {model_name!r}: use letters, digits, '.', '_' and '-'")
    unknown = set(lineage or {}) - set(_LINEAGE_KEYS)
    if unknown:
        raise ValueError(f"lineage keys {sorted(unknown)} unknown; use {list(_LINEAGE_KEYS)}")
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError("no MLflow tracking URI: pass tracking_uri or set MLFLOW_TRACKING_URI")
    client = MlflowClient(tracking_uri=uri)
    if decision is not None:
        gate_result = GateResult(bool(decision.passed), tuple(decision.details))
    else:
        gate_result = check_gate(metrics, gate)
    sha = sha256_of(storage.join(checkpoint, WEIGHT_FILES[weights]))

    existing = _find_version(client, model_name, sha)
    gate_tags = {
        f"{TAG_PREFIX}gate_passed": str(gate_result.passed).lower(),
        f"{TAG_PREFIX}gate": gate_result.summary(),
    }
    if existing is not None:
        version, version_run, reused = str(existing.version), existing.run_id, True
        tags = dict(existing.tags)
        logger.info("checkpoint already registered as %s version %s; reusing it", model_name, version)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="opensora-register-"))
        try:
            data, info = _stage(checkpoint, weights, tmp / "model")
            config, states = info["config"], info["running_states"]
            refs = _references(config)
            lineage_all = {"git_commit": git_commit(), **{k: v for k, v in (lineage or {}).items() if v}}
            tags = safe_tags(
                {
                    f"{TAG_PREFIX}checkpoint_uri": checkpoint,
                    f"{TAG_PREFIX}checkpoint_sha256": sha,
                    f"{TAG_PREFIX}weights": weights,
                    f"{TAG_PREFIX}config_sha256": config_hash(config),
                    f"{TAG_PREFIX}model_type": (config.get("model") or {}).get("type"),
                    f"{TAG_PREFIX}global_step": states.get("global_step"),
                    f"{TAG_PREFIX}train_run_id": states.get("mlflow_run_id"),
                    f"{TAG_PREFIX}vae": refs["vae"],
                    f"{TAG_PREFIX}text_encoder": refs["text_encoder"],
                    **{f"{TAG_PREFIX}{k}": v for k, v in lineage_all.items()},
                }
            )
            card = {
                "model_type": tags.get(f"{TAG_PREFIX}model_type"),
                "weights": weights,
                "checkpoint": scrub_uri(checkpoint),
                "checkpoint_sha256": sha,
                "global_step": states.get("global_step"),
                "references": refs,
                "metrics": metrics,
            }
            (data / CARD_FILE).write_text(json.dumps(card, indent=2))
            mlflow.set_tracking_uri(uri)
            if run_id is None:
                exp_id = ensure_experiment(uri, experiment)
                run_id = client.create_run(exp_id, run_name=run_name or f"register-{model_name}").info.run_id
            with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*input example was not provided.*")
                logged = mlflow.pyfunc.log_model(
                    name="model",
                    loader_module=__name__,
                    data_path=str(data),
                    code_paths=[str(Path(__file__).resolve().parent)],
                    pip_requirements=_requirements(),
                    signature=_signature(),
                    metadata={"opensora": card},
                )
                if metrics:
                    mlflow.log_metrics({f"registered/{k}": v for k, v in metrics.items() if math.isfinite(v)})
            version_info = mlflow.register_model(logged.model_uri, model_name, tags={**tags, **gate_tags})
            version, version_run, reused = str(version_info.version), run_id, False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    for key, value in gate_tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    if description is not None:
        client.update_model_version(model_name, version, description=description)
    for key, value in metrics.items():
        if math.isfinite(value) and not is_secret_key(key):
            client.set_model_version_tag(model_name, version, f"{TAG_PREFIX}metric.{key}", f"{value:.6g}")
    # a version reused by hash may hold anyone's weights: download and hash them; one just logged holds ours
    check_provenance(client, uri, model_name, version, sha, require_lineage=require_lineage, verify_weights=reused)
    set_aliases = list(dict.fromkeys(aliases))
    if gate_result.passed:
        set_aliases.append(CHAMPION_ALIAS)
    for alias in set_aliases:
        client.set_registered_model_alias(model_name, alias, version)
    logger.info(
        "%s version %s (%s) aliases %s; gate: %s",
        model_name,
        version,
        "reused" if reused else "new",
        set_aliases,
        gate_result.summary(),
    )
    return RegistrationResult(
        name=model_name,
        version=version,
        aliases=set_aliases,
        champion=gate_result.passed,
        gate=gate_result,
        reused=reused,
        model_uri=f"models:/{model_name}/{version}",
        run_id=version_run,
        checkpoint_sha256=sha,
        tags={**tags, **gate_tags},
    )
