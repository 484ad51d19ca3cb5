"""opensora_core.eval.gate: absolute thresholds, paired champion comparison, decision round trip."""

from __future__ import annotations

import pytest

from opensora_core.eval.gate import GateConfig, GateDecision, decide, parse_gate


def _report(losses: dict[str, list[float]], sha: str = "h", **metrics: float) -> dict:
    values = [v for row in losses.values() for v in row]
    return {
        "headline_weights": "ema",
        "eval_config_sha256": sha,
        "metrics": {"val_loss": sum(values) / len(values), **metrics},
        "val_loss": {"ema": {"timesteps": [10, 20], "per_sample": losses}},
    }


GOOD = {"val_loss_improvement": 0.5, "valid_fraction": 1.0}
CHAMPION = _report({"a": [1.0, 0.5], "b": [0.8, 0.4]}, **GOOD)


def test_default_thresholds_reject_random_weights_and_missing_evidence():
    random = decide(_report({"a": [1.0, 1.0]}, val_loss_improvement=0.0, valid_fraction=1.0), None)
    assert not random.passed and "val_loss_improvement=0 >= 0.1: FAIL" in random.summary()
    no_val = decide({"metrics": {"valid_fraction": 1.0}}, None)
    assert not no_val.passed and "val_loss_improvement: missing" in no_val.summary()
    trained = decide(_report({"a": [0.3, 0.2]}, **GOOD), None)
    assert trained.passed and trained.champion_version is None and "no champion yet" in trained.summary()


def test_champion_comparison_is_paired_and_has_a_margin():
    slightly_worse = _report({"a": [1.01, 0.51], "b": [0.81, 0.41]}, **GOOD)  # +0.01 on 0.675: 1.5%
    ok = decide(slightly_worse, CHAMPION, champion_version="3")
    assert ok.passed and ok.champion_version == "3"
    assert ok.comparisons["val_loss"]["n"] == 4 and ok.comparisons["val_loss"]["mean_diff"] == pytest.approx(
        0.01
    )
    worse = _report({"a": [1.1, 0.6], "b": [0.9, 0.5]}, **GOOD)
    bad = decide(worse, CHAMPION, champion_version="3")
    assert not bad.passed and "val_loss vs champion v3" in bad.summary() and "FAIL" in bad.summary()
    assert decide(worse, CHAMPION, {"margins": {"val_loss": 0.2}}, "3").passed
    # higher-is-better metrics compare the other way; per-prompt values pair up by prompt
    clip = {"per_prompt": {"ema": [{"prompt": "p", "clip_score": 20.0}]}}
    cand = {**_report({"a": [1.0, 0.5], "b": [0.8, 0.4]}, clip_score=20.0, **GOOD), **clip}
    champ = {**CHAMPION, "metrics": {**CHAMPION["metrics"], "clip_score": 25.0}}
    champ["per_prompt"] = {"ema": [{"prompt": "p", "clip_score": 25.0}]}
    lower_clip = decide(cand, champ, champion_version="3")
    assert not lower_clip.passed and lower_clip.comparisons["clip_score"]["mean_diff"] == -5.0


def test_reports_from_other_settings_do_not_compare():
    with pytest.raises(ValueError, match="eval_config_sha256"):
        decide(_report({"a": [1.0, 0.5], "b": [0.8, 0.4]}, sha="other", **GOOD), CHAMPION)
    with pytest.raises(ValueError, match="same keys"):
        decide(_report({"a": [1.0, 0.5]}, **GOOD), CHAMPION)
    nothing = decide({"eval_config_sha256": "h", "metrics": GOOD}, CHAMPION, champion_version="1")
    assert not nothing.passed and "cannot compare" in nothing.summary()


def test_gate_config_rejects_unknown_keys_and_decisions_round_trip():
    assert parse_gate(None) == GateConfig() and parse_gate({}).margins["val_loss"] == 0.02
    with pytest.raises(ValueError, match="thresholds"):
        parse_gate({"colour_accuracy": 0.5})  # the old flat form: say what the new one looks like
    d = GateDecision(True, ("x",), "2", {"val_loss": {"n": 1.0}})
    assert GateDecision.from_dict(d.as_dict()) == d
    none = GateDecision(False, ("y",))
    assert none.as_dict()["champion_version"] == "" and GateDecision.from_dict(none.as_dict()) == none
    from kfp.compiler.pipeline_spec_builder import to_protobuf_value

    to_protobuf_value(none.as_dict())  # a KFP parameter value (None is not one)
    with pytest.raises(ValueError, match="passed"):
        GateDecision.from_dict({})
