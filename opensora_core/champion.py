"""Gate a fresh evaluation against the registered ``champion`` of the same model name.

    from opensora_core.champion import gate_against_champion
    outcome = gate_against_champion("outputs/eval/run1", "opensora-stdit-256", tracking_uri="http://mlflow:5000",
                                    gate={"margins": {"val_loss": 0.02}}, run_id=eval_run_id)
    outcome.decision.passed, outcome.champion_report, outcome.html

The champion is the version with alias ``champion``. Its evaluation report (``report.json`` of the MLflow run
the version was logged into) is reused when its ``eval_config_sha256`` equals the candidate's (same prompts,
seeds, sampling settings and held-out table); otherwise the champion's registered weights are downloaded and
evaluated with the candidate's settings (``ema`` weights only) before :func:`~opensora_core.eval.gate.decide`
compares the two pair by pair. Without a champion only the absolute thresholds apply. The side-by-side HTML
(:mod:`opensora_core.eval.html`) is written next to the report.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensora_core.checkpoint import CONFIG_JSON, EMA_FILE
from opensora_core.eval.gate import GateDecision, decide
from opensora_core.model_registry import CARD_FILE, WEIGHTS_FILE

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
COMPARISON_FILE = "comparison.html"


@dataclass
class ChampionOutcome:
    """What :func:`gate_against_champion` decided and on which evidence."""

    decision: GateDecision
    champion_report: dict[str, Any] | None
    champion_reevaluated: bool
    html: str


def find_champion(tracking_uri: str, model_name: str) -> Any:
    """The ``champion`` ModelVersion of ``model_name`` (None when the model or the alias does not exist)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def stored_report(tracking_uri: str, version: Any) -> dict[str, Any] | None:
    """The evaluation report logged in the run of ``version`` (None when that run has none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not version.run_id:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="opensora-champion-"))
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=version.run_id, artifact_path="report.json", dst_path=str(tmp), tracking_uri=tracking_uri
        )
        return json.loads(Path(path).read_text())
    except (MlflowException, OSError) as exc:
        logger.info("champion version %s has no stored report (%s)", version.version, exc)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def champion_checkpoint(tracking_uri: str, model_name: str, version: str, into: Path) -> Path:
    """A checkpoint-shaped folder (``config.json`` + ``ema.safetensors``) of a registered version's weights."""
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_name}/{version}",
            dst_path=str(into / "model"),
            tracking_uri=tracking_uri,
        )
    )
    cards = sorted(local.rglob(CARD_FILE))
    if not cards:
        raise FileNotFoundError(f"models:/{model_name}/{version} holds no {CARD_FILE}: not an opensora model")
    data = cards[0].parent
    ckpt = into / "checkpoint"
    ckpt.mkdir(parents=True)
    shutil.copy2(data / CONFIG_JSON, ckpt / CONFIG_JSON)
    shutil.copy2(data / WEIGHTS_FILE, ckpt / EMA_FILE)
    return ckpt


def _reevaluate(
    candidate: Mapping[str, Any], checkpoint: Path, out: Path, device: str | None
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` with the candidate report's settings (prompts, seed, steps, table, CLIP model,
    FVD extractor)."""
    from opensora_core.eval.evaluate import REPORT_FILE, evaluate

    settings = candidate["settings"]
    evaluate(
        str(checkpoint),
        str(out),
        settings["prompts"],
        weights=("ema",),
        overrides={"num_frames": settings["num_frames"], "image_size": tuple(settings["image_size"])},
        num_sampling_steps=settings["num_sampling_steps"],
        cfg_scale=settings["cfg_scale"],
        seed=settings["seed"],
        val_table=candidate.get("val_table"),
        num_eval_timesteps=settings.get("num_eval_timesteps", 10),
        val_batch_size=settings.get("val_batch_size", 8),
        clip_model=settings.get("clip_model"),
        fvd_extractor=settings.get("fvd_extractor"),
        device=device,
    )
    return json.loads((out / REPORT_FILE).read_text())


def run_url(tracking_uri: str | None, run_id: str | None) -> str:
    """The MLflow UI address of a run (empty for non-HTTP tracking URIs such as sqlite)."""
    if not tracking_uri or not run_id or not tracking_uri.startswith(("http://", "https://")):
        return ""
    from mlflow import MlflowClient

    exp = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    return f"{tracking_uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def gate_against_champion(
    output_dir: str,
    model_name: str,
    *,
    tracking_uri: str | None,
    gate: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    device: str | None = None,
) -> ChampionOutcome:
    """Decide whether the evaluation in ``output_dir`` (what :func:`~opensora_core.eval.evaluate.evaluate`
    wrote, local or ``s3://``) may become champion (module docstring). Writes ``comparison.html`` there and,
    with ``run_id`` (the evaluation's MLflow run), logs it and the decision to that run. ``tracking_uri``
    None: no registry, no champion (absolute thresholds only)."""
    from opensora_core.io import storage

    if "://" not in output_dir or output_dir.startswith("file://"):
        return _gate_local(
            Path(output_dir.removeprefix("file://")), model_name, tracking_uri, gate, run_id, device
        )
    tmp = Path(tempfile.mkdtemp(prefix="opensora-gate-"))
    try:
        for name in ("report.json", "preview/ema.png", "preview/model.png"):
            if storage.exists(storage.join(output_dir, name)):
                storage.download_file(storage.join(output_dir, name), tmp / name)
        outcome = _gate_local(tmp, model_name, tracking_uri, gate, run_id, device)
        storage.upload_file(tmp / COMPARISON_FILE, storage.join(output_dir, COMPARISON_FILE))
        if (tmp / "champion").is_dir():
            storage.upload_dir(tmp / "champion", storage.join(output_dir, "champion"))
        outcome.html = storage.join(output_dir, COMPARISON_FILE)
        return outcome
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gate_local(
    folder: Path,
    model_name: str,
    tracking_uri: str | None,
    gate: Mapping[str, Any] | None,
    run_id: str | None,
    device: str | None,
) -> ChampionOutcome:
    from opensora_core.eval.html import side_by_side

    report_path = folder / "report.json"
    candidate = json.loads(report_path.read_text())
    champion_version = find_champion(tracking_uri, model_name) if tracking_uri else None
    champion, reevaluated = None, False
    if champion_version is not None:
        champion = stored_report(tracking_uri, champion_version)  # type: ignore[arg-type]
        if champion is None or champion.get("eval_config_sha256") != candidate.get("eval_config_sha256"):
            logger.info(
                "evaluating champion version %s with the candidate's settings", champion_version.version
            )
            work = Path(tempfile.mkdtemp(prefix="opensora-champion-"))
            try:
                ckpt = champion_checkpoint(tracking_uri, model_name, champion_version.version, work)  # type: ignore[arg-type]
                champion = _reevaluate(candidate, ckpt, report_path.parent / "champion", device)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            reevaluated = True
    version = None if champion_version is None else str(champion_version.version)
    try:
        decision = decide(candidate, champion, gate, champion_version=version)
    except ValueError as exc:  # e.g. different clip geometry: not comparable, so no promotion
        decision = GateDecision(False, (f"champion v{version} not comparable: {exc}",), version)
    html = folder / COMPARISON_FILE
    html.write_text(
        side_by_side(candidate, champion, decision, model_name, run_url(tracking_uri, run_id), folder)
    )
    if tracking_uri and run_id:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
        client.log_artifact(run_id, str(html))
        client.set_tag(run_id, "opensora.gate_passed", str(decision.passed).lower())
        client.set_tag(run_id, "opensora.gate", decision.summary()[:5000])
    return ChampionOutcome(decision, champion, reevaluated, str(html))


def still_champion(decision: GateDecision, tracking_uri: str, model_name: str) -> GateDecision:
    """``decision``, or a failing copy when the champion it was decided against is no longer the champion
    (another run promoted a version in between): promotion needs a comparison with the current champion."""
    if not decision.passed or not tracking_uri:
        return decision
    current = find_champion(tracking_uri, model_name)
    now = None if current is None else str(current.version)
    if now == decision.champion_version:
        return decision
    line = (
        f"champion moved from v{decision.champion_version} to v{now} since evaluation: re-run the evaluation"
    )
    return GateDecision(False, (*decision.details, line), decision.champion_version, decision.comparisons)
