"""The promotion gate: is a candidate good enough to become ``champion``?

    from opensora_core.eval.gate import GateConfig, decide
    decision = decide(candidate_report, champion_report, GateConfig())     # reports: report.json dicts
    decision.passed, decision.details

Two kinds of rule, both from :class:`GateConfig`:

- **absolute thresholds**, always checked: ``{"metric": minimum}`` / ``{"metric>=": minimum}`` /
  ``{"metric<=": maximum}``. The defaults need ``val_loss_improvement >= 0.1`` (the trained weights' validation
  loss at least 10% below the same architecture's untrained initialisation on the held-out clips; random
  weights score 0) and every sampled video valid. A missing or non-finite metric fails: no evidence, no
  promotion.
- **champion comparison**, when a champion exists: for each metric of ``margins`` that both reports have, the
  candidate may be worse than the champion by at most ``margin`` times the champion's value. Lower is better
  for :data:`LOWER_IS_BETTER` metrics (``val_loss``, ``fvd``), higher for the rest (``clip_score``). The
  comparison is paired: the per-clip-and-timestep losses (per-prompt scores) of the two reports are matched
  key by key and the mean paired difference is what is compared; the two reports must come from the same
  evaluation settings (equal ``eval_config_sha256``), otherwise ValueError (re-evaluate the champion first,
  as :mod:`opensora_core.champion` does).

A report is what :func:`opensora_core.eval.evaluate` writes to ``report.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from opensora_core.eval.val_loss import paired_difference

LOWER_IS_BETTER = frozenset({"val_loss", "fvd"})
DEFAULT_THRESHOLDS = {"val_loss_improvement": 0.1, "valid_fraction": 1.0}
DEFAULT_MARGINS = {"val_loss": 0.02, "clip_score": 0.01}


class GateConfig(BaseModel):
    """Thresholds and champion margins (module docstring); unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description="Absolute rules: {'metric': min, 'metric<=': max}; always checked.",
    )
    margins: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_MARGINS),
        description="Relative slack against the champion per metric (0.02 = at most 2% worse).",
    )


@dataclass(frozen=True)
class GateDecision:
    """Outcome of :func:`decide`: passed, one line per rule, the champion compared with (None: none)."""

    passed: bool
    details: tuple[str, ...]
    champion_version: str | None = None
    comparisons: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        """The rule lines joined with '; '."""
        return "; ".join(self.details)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the evaluate step's output, the register step's input; no None values, which KFP
        parameters cannot carry: no champion is ``""``)."""
        return {
            "passed": self.passed,
            "details": list(self.details),
            "champion_version": self.champion_version or "",
            "comparisons": self.comparisons,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """Inverse of :meth:`as_dict` (ValueError naming the missing key)."""
        missing = [k for k in ("passed", "details") if k not in data]
        if missing:
            raise ValueError(
                f"gate decision lacks {missing}; pass the evaluate step's 'gate_decision' output"
            )
        return cls(
            bool(data["passed"]),
            tuple(str(d) for d in data["details"]),
            data.get("champion_version") or None,
            dict(data.get("comparisons") or {}),
        )


def parse_gate(gate: GateConfig | Mapping[str, Any] | None) -> GateConfig:
    """A GateConfig from a dict (the pipeline parameter); None or {} -> the defaults."""
    if isinstance(gate, GateConfig):
        return gate
    try:
        return GateConfig.model_validate(dict(gate or {}))
    except Exception as exc:
        raise ValueError(
            f"gate {dict(gate or {})!r} is not {{'thresholds': {{...}}, 'margins': {{...}}}}: {exc}"
        ) from None


def check_thresholds(metrics: Mapping[str, float], thresholds: Mapping[str, float]) -> tuple[bool, list[str]]:
    """Absolute rules ``{"m": min}`` / ``{"m>=": min}`` / ``{"m<=": max}``; a missing metric fails."""
    passed, details = True, []
    for key, threshold in thresholds.items():
        name, op = (key[:-2], "<=") if key.endswith("<=") else (key.removesuffix(">="), ">=")
        name = name.strip()
        value = metrics.get(name)
        if value is None or not math.isfinite(float(value)):
            passed = False
            details.append(f"{name}: missing (the evaluation did not measure it)")
            continue
        ok = float(value) >= float(threshold) if op == ">=" else float(value) <= float(threshold)
        passed &= ok
        details.append(f"{name}={float(value):.4g} {op} {float(threshold):.4g}: {'pass' if ok else 'FAIL'}")
    return passed, details


def report_pairs(report: Mapping[str, Any], metric: str) -> dict[str, float] | None:
    """The per-key values of ``metric`` in a report's headline weights (None when it has none)."""
    headline = report.get("headline_weights", "ema")
    if metric == "val_loss":
        per_sample = (report.get("val_loss") or {}).get(headline, {}).get("per_sample")
        if not per_sample:
            return None
        timesteps = report["val_loss"][headline]["timesteps"]
        return {
            f"{k}|t{t}": v for k, values in per_sample.items() for t, v in zip(timesteps, values, strict=True)
        }
    rows = (report.get("per_prompt") or {}).get(headline) or []
    values = {f"{i}|{r['prompt']}": float(r[metric]) for i, r in enumerate(rows) if metric in r}
    return values or None


def _compare(candidate: Mapping[str, Any], champion: Mapping[str, Any], metric: str, margin: float) -> dict:
    """Paired (or, without per-key values, plain) comparison of one metric."""
    pairs_c, pairs_r = report_pairs(candidate, metric), report_pairs(champion, metric)
    if pairs_c is not None and pairs_r is not None:
        stats = paired_difference(pairs_c, pairs_r)
    else:
        c, r = float(candidate["metrics"][metric]), float(champion["metrics"][metric])
        stats = {"n": 1.0, "mean_diff": c - r, "reference_mean": r, "candidate_lower": float(c < r)}
    worse = stats["mean_diff"] if metric in LOWER_IS_BETTER else -stats["mean_diff"]
    stats["allowed"] = margin * abs(stats["reference_mean"])
    stats["passed"] = float(worse <= stats["allowed"])
    return stats


def decide(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    gate: GateConfig | Mapping[str, Any] | None = None,
    champion_version: str | None = None,
) -> GateDecision:
    """Gate ``candidate`` (a report) against ``champion`` (its report, or None: no champion yet)."""
    config = parse_gate(gate)
    passed, details = check_thresholds(candidate.get("metrics", {}), config.thresholds)
    comparisons: dict[str, dict[str, float]] = {}
    if champion is None:
        details.append("no champion yet: absolute thresholds only")
        return GateDecision(passed, tuple(details), None, comparisons)
    if candidate.get("eval_config_sha256") != champion.get("eval_config_sha256"):
        raise ValueError(
            "candidate and champion were evaluated with different settings (eval_config_sha256 differs): "
            "evaluate the champion on the candidate's prompts, seeds and held-out table first"
        )
    for metric, margin in config.margins.items():
        if metric not in candidate.get("metrics", {}) or metric not in champion.get("metrics", {}):
            continue
        stats = _compare(candidate, champion, metric, margin)
        comparisons[metric] = stats
        ok = bool(stats["passed"])
        passed &= ok
        details.append(
            f"{metric} vs champion v{champion_version}: paired mean diff {stats['mean_diff']:+.4g} over "
            f"{int(stats['n'])} pairs (allowed {'+' if metric in LOWER_IS_BETTER else '-'}{stats['allowed']:.4g}, "
            f"candidate lower on {100 * stats['candidate_lower']:.0f}%): {'pass' if ok else 'FAIL'}"
        )
    if not comparisons:
        passed = False
        details.append(
            f"no metric of {sorted(config.margins)} in both reports: cannot compare with the champion"
        )
    return GateDecision(passed, tuple(details), champion_version, comparisons)
