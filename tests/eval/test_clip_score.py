"""CLIPScore (opensora_core.eval.clip_score) on the tiny CLIP, and CLIPScore + FVD through evaluate and the gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from opensora_core.eval.clip_score import clip_scores
from opensora_core.models.clip import load_clip

PROMPTS = ["a red square moving left", "a blue circle moving up"]


def test_clip_score_is_the_clamped_cosine_by_hand():
    from transformers.models.clip import CLIPImageProcessorPil

    from opensora_core.models.tiny import build_tiny_clip_model

    noise = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    square = np.zeros((4, 16, 16, 3), np.uint8)
    square[:, 4:10, 4:10, 0] = 255
    videos, prompts = [noise, square], ["a cat sleeps in the sun", "a red square moving left"]
    got = clip_scores(load_clip("debug/tiny-clip", "cpu"), videos, prompts)
    model, _, tokenizer = build_tiny_clip_model()  # the same weights, used through transformers directly
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    cosines = []
    with torch.no_grad():
        for video, prompt in zip(videos, prompts, strict=True):
            pixels = processor(images=list(video), return_tensors="pt")["pixel_values"]
            img = model.get_image_features(pixel_values=pixels).pooler_output  # [T, D]
            tokens = tokenizer([prompt], padding=True, return_tensors="pt")
            txt = model.get_text_features(**tokens).pooler_output[0]  # [D]
            cosines.append((img @ txt / (img.norm(dim=-1) * txt.norm())).tolist())
    expected = [float(np.mean([100 * max(c, 0.0) for c in cos])) for cos in cosines]
    assert got == pytest.approx(expected, rel=1e-5)
    assert min(cosines[0]) < 0 < max(cosines[0])  # both sides of the clamp within one video
    assert got == clip_scores(load_clip("debug/tiny-clip", "cpu"), videos, prompts)  # deterministic
    with pytest.raises(ValueError, match="one prompt per video"):
        clip_scores(load_clip("debug/tiny-clip", "cpu"), videos, prompts[:1])


def test_evaluate_reports_clip_score_and_fvd_and_the_gate_pairs_them(tmp_path):
    from opensora_core.data.synthetic import generate
    from opensora_core.eval import evaluate
    from opensora_core.eval.gate import decide, report_pairs
    from opensora_core.sample.writer import read_sample
    from tests.eval.test_fvd import scripted_extractor
    from tests.eval.tiny_checkpoint import make_tiny_checkpoint

    generate(tmp_path / "held", 3, size=16, num_frames=8, seed=0)
    extractor = str(scripted_extractor(tmp_path))
    reports = {}
    for seed in (3, 4):
        ckpt = make_tiny_checkpoint(tmp_path / f"ckpt{seed}", seed=seed)
        result = evaluate(
            str(ckpt),
            str(tmp_path / f"eval{seed}"),
            PROMPTS,
            weights=("ema",),
            num_sampling_steps=2,
            val_table=str(tmp_path / "held" / "meta.csv"),
            num_eval_timesteps=1,
            clip_model="debug/tiny-clip",
            fvd_extractor=extractor,
            device="cpu",
        )
        reports[seed] = json.loads((tmp_path / f"eval{seed}" / "report.json").read_text())
    report = reports[3]
    rows = report["per_prompt"]["ema"]
    videos = [read_sample(r["video"]) for r in rows]
    per_prompt = clip_scores(load_clip("debug/tiny-clip", "cpu"), videos, PROMPTS)
    assert [r["clip_score"] for r in rows] == pytest.approx(per_prompt, rel=1e-6)
    assert report["metrics"]["clip_score"] == pytest.approx(np.mean(per_prompt), rel=1e-9)
    assert report["metrics"]["fvd"] >= 0 and report["fvd"] == {"real_clips": 3, "skipped_clips": []}
    assert (
        report["settings"]["clip_model"] == "debug/tiny-clip"
        and report["settings"]["fvd_frame_interval"] == 2
    )
    assert (
        result.eval_config_sha256 == report["eval_config_sha256"]
    )  # the last run's; both share the settings
    assert reports[4]["eval_config_sha256"] == report["eval_config_sha256"]

    decision = decide(reports[4], report, {"thresholds": {}, "margins": {"clip_score": 0.01, "fvd": 0.5}})
    stats = decision.comparisons["clip_score"]
    pairs_c, pairs_r = report_pairs(reports[4], "clip_score"), report_pairs(report, "clip_score")
    assert stats["n"] == 2 and set(pairs_c) == set(pairs_r)  # paired per prompt
    assert stats["mean_diff"] == pytest.approx(np.mean([pairs_c[k] - pairs_r[k] for k in pairs_c]), abs=1e-9)
    fvd_stats = decision.comparisons["fvd"]
    assert fvd_stats["mean_diff"] == pytest.approx(reports[4]["metrics"]["fvd"] - report["metrics"]["fvd"])
    with pytest.raises(ValueError, match="fvd_extractor needs val_table"):
        evaluate(str(ckpt), str(tmp_path / "x"), PROMPTS, fvd_extractor=extractor)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_champion_is_reevaluated_with_the_candidates_clip_model(tmp_path):
    from kfp.dsl import HTML, Artifact, Metrics

    from components.evaluate.component import evaluate
    from components.register.component import register
    from opensora_core.model_registry import ensure_experiment
    from tests.eval.tiny_checkpoint import make_tiny_checkpoint

    uri, name = f"sqlite:///{tmp_path / 'mlflow.db'}", "opensora-clip-test"
    ensure_experiment(uri, "clip", (tmp_path / "artifacts").as_uri())
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", seed=3)

    def run(tag: str, **kw):
        return evaluate.python_func(
            checkpoint_uri=str(ckpt),
            output_uri=str(tmp_path / "eval"),
            eval_metrics=Metrics(uri=str(tmp_path / f"{tag}-m.json")),
            report=Artifact(uri=str(tmp_path / f"{tag}-r.json")),
            comparison=HTML(uri=str(tmp_path / f"{tag}.html")),
            prompts=PROMPTS,
            weights=["ema"],
            num_sampling_steps=2,
            tracking_uri=uri,
            experiment="clip",
            run_id=tag,
            model_name=name,
            **kw,
        )

    first = run("first", gate={"thresholds": {}})  # no CLIP; no champion yet, nothing to fail
    reg = register.python_func(
        checkpoint_uri=str(ckpt),
        model_name=name,
        registration=Artifact(uri=str(tmp_path / "reg.json")),
        metrics=first.metrics,
        gate_decision=first.gate_decision,
        tracking_uri=uri,
        experiment="clip",
        eval_run_id=first.mlflow_run_id,
        pipeline_run_id="first",
    )
    assert reg.champion and "clip_score" not in first.metrics
    # the same weights evaluated with a CLIP: the champion's stored report has no clip_score and other settings,
    # so the champion is evaluated again with the candidate's CLIP and compared prompt by prompt
    second = run(
        "second", clip_model="debug/tiny-clip", gate={"thresholds": {}, "margins": {"clip_score": 0.01}}
    )
    champion = json.loads((tmp_path / "eval" / "second" / "champion" / "report.json").read_text())
    assert champion["settings"]["clip_model"] == "debug/tiny-clip"
    stats = second.gate_decision["comparisons"]["clip_score"]
    assert stats["n"] == 2 and stats["mean_diff"] == pytest.approx(0.0, abs=1e-9)  # same weights, same videos
    assert second.gate_decision["passed"] and "clip_score" in (tmp_path / "second.html").read_text()
