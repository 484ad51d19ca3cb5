"""The candidate-vs-champion page: one self-contained HTML file (images inlined) for KFP and MLflow.

Shows the gate decision with its rule lines, the headline metrics of both side by side, the preview grids
(one row per prompt, same prompts and seeds) and a link to the candidate's MLflow run.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HEADLINE = (  # the headline metrics, in display order (comparison page and model card)
    "val_loss",
    "val_loss_improvement",
    "clip_score",
    "fvd",
    "colour_accuracy",
    "direction_accuracy",
    "valid_fraction",
    "temporal_change",
)


def _image(path: Path) -> str:
    if not path.is_file():
        return "<p><i>no preview</i></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" style="image-rendering:pixelated;width:100%" src="data:image/png;base64,{data}">'


def _fmt(metrics: Mapping[str, Any] | None, key: str) -> str:
    if not metrics or key not in metrics:
        return "–"
    return f"{float(metrics[key]):.4g}"


def side_by_side(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    decision: Any,
    model_name: str,
    mlflow_run_url: str,
    folder: Path,
) -> str:
    """The page's HTML; ``folder`` holds the candidate's ``preview/`` (and ``champion/preview/`` when the
    champion was evaluated here)."""
    cand_m, champ_m = candidate.get("metrics", {}), (champion or {}).get("metrics")
    keys = [k for k in HEADLINE if k in cand_m or (champ_m and k in champ_m)]
    rows = "".join(
        f"<tr><td>{k}</td><td>{_fmt(cand_m, k)}</td><td>{_fmt(champ_m, k)}</td></tr>" for k in keys
    )
    verdict = "PASSED: promoted to champion" if decision.passed else "not promoted (candidate only)"
    rules = "".join(f"<li>{html.escape(d)}</li>" for d in decision.details)
    champ_title = f"champion v{decision.champion_version}" if decision.champion_version else "no champion yet"
    prompts = "".join(f"<li>{html.escape(p)}</li>" for p in candidate.get("settings", {}).get("prompts", []))
    link = f'<a href="{html.escape(mlflow_run_url)}">MLflow run</a>' if mlflow_run_url else "no MLflow run"
    head = candidate.get("headline_weights", "ema")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(model_name)}</title>
<style>body{{font-family:sans-serif}}td,th{{padding:2px 10px;text-align:right}}td:first-child{{text-align:left}}
.cols{{display:flex;gap:24px}}.cols>div{{flex:1}}</style></head><body>
<h2>{html.escape(model_name)}: candidate (step {candidate.get("global_step", "?")}) vs {champ_title}</h2>
<p><b>{verdict}</b> · {link}</p><ul>{rules}</ul>
<table><tr><th>metric</th><th>candidate</th><th>{champ_title}</th></tr>{rows}</table>
<div class="cols"><div><h3>candidate</h3>{_image(folder / "preview" / f"{head}.png")}</div>
<div><h3>{champ_title}</h3>{_image(folder / "champion" / "preview" / "ema.png")}</div></div>
<p>Rows of each grid, top to bottom (same seed for both):</p><ol>{prompts}</ol></body></html>
"""
