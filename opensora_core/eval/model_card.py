"""Registered model names per model family and the markdown model card of a version.

    default_model_name(config)            # "opensora-stdit-256", "opensora-stdit2-multires", ...
    model_card(checkpoint, config, metrics, lineage, decision)   # markdown: metrics table, gate, lineage

One registered model per family and clip geometry keeps ``@champion`` comparable: a 512 STDiT never competes
with a 256 one, nor STDiT2 with STDiT.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from opensora_core.eval.html import HEADLINE


def default_model_name(config: Mapping[str, Any]) -> str:
    """``opensora-{family}-{geometry}`` from a resolved config dict (``config.json`` of a checkpoint).

    family: the model type before its size suffix, lower-cased (``STDiT-XL/2`` -> ``stdit``); geometry: the
    dataset's square side (``256``), ``HxW`` for non-square, ``multires`` for bucketed datasets.
    """
    model_type = str((config.get("model") or {}).get("type") or "")
    if not model_type:
        raise ValueError("the config has no model.type: cannot name the registered model (pass model_name)")
    family = re.sub(r"[^a-z0-9]+", "-", model_type.split("-")[0].lower()).strip("-")
    dataset = config.get("dataset") or {}
    size = dataset.get("image_size") or config.get("image_size")
    if dataset.get("type") == "VariableVideoTextDataset" or not size or None in tuple(size):
        geometry = "multires"
    else:
        h, w = (int(v) for v in size)
        geometry = str(h) if h == w else f"{h}x{w}"
    return f"opensora-{family}-{geometry}"


def resolve_model_name(model_name: str, checkpoint: str) -> str:
    """``model_name`` when given, else :func:`default_model_name` of the checkpoint's ``config.json``."""
    if model_name.strip():
        return model_name.strip()
    import json

    from opensora_core.checkpoint import CONFIG_JSON
    from opensora_core.io import storage

    return default_model_name(json.loads(storage.read_bytes(storage.join(checkpoint, CONFIG_JSON))))


def _metric_rows(metrics: Mapping[str, float]) -> list[str]:
    first = [k for k in HEADLINE if k in metrics]
    rest = sorted(k for k in metrics if k not in first and "/t0" not in k)  # per-timestep values: in the run
    return [f"| {k} | {float(metrics[k]):.4g} |" for k in first + rest if math.isfinite(float(metrics[k]))]


def model_card(
    checkpoint: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, float],
    lineage: Mapping[str, Any],
    decision: Any = None,
) -> str:
    """The version description: what it is, the gate outcome, the metrics table and the lineage."""
    model = config.get("model") or {}
    lines = [
        f"# {model.get('type', '?')} checkpoint",
        "",
        f"- checkpoint: `{checkpoint}`",
        f"- VAE: `{(config.get('vae') or {}).get('from_pretrained') or (config.get('vae') or {}).get('type')}`",
        f"- text encoder: `{(config.get('text_encoder') or {}).get('from_pretrained')}`",
    ]
    if decision is not None:
        lines += ["", f"## Gate: {'passed (champion)' if decision.passed else 'not passed (candidate)'}", ""]
        lines += [f"- {d}" for d in decision.details]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|", *_metric_rows(metrics)]
    lines += ["", "## Lineage", ""]
    lines += [f"- {k}: `{v}`" for k, v in lineage.items() if v]
    return "\n".join(lines) + "\n"
