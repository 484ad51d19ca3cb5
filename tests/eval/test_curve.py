"""The learning curve: one caption-agreement point per checkpoint, equal to evaluating that checkpoint alone."""

from __future__ import annotations

import math

import pytest

from opensora_core.eval.curve import CurvePoint, checkpoint_curve, format_curve, plot_curve
from opensora_core.eval.evaluate import evaluate
from tests.eval.tiny_checkpoint import make_tiny_checkpoint

PROMPTS = ["a red square moving left"]


def test_curve_points_match_single_evaluations(tmp_path):
    first = make_tiny_checkpoint(tmp_path / "run", seed=1, global_step=14)
    make_tiny_checkpoint(tmp_path / "run", seed=2, global_step=7)
    exp_dir = str(first.parent)

    points = checkpoint_curve(exp_dir, tmp_path / "curve", {7: 0.5}, PROMPTS, num_sampling_steps=2)

    assert [p.global_step for p in points] == [7, 14]  # oldest first, whatever the folder order
    assert points[0].minutes == 0.5 and math.isnan(points[1].minutes)
    alone = evaluate(
        str(first), str(tmp_path / "alone"), PROMPTS, weights=("ema",), num_sampling_steps=2
    ).metrics
    assert (points[1].colour_accuracy, points[1].direction_accuracy) == (
        alone["colour_accuracy"],
        alone["direction_accuracy"],
    )


def test_curve_rejects_a_folder_without_checkpoints_and_free_text_prompts(tmp_path):
    with pytest.raises(ValueError, match="no complete checkpoint"):
        checkpoint_curve(str(tmp_path), tmp_path / "curve")
    ckpt = make_tiny_checkpoint(tmp_path / "run")
    with pytest.raises(ValueError, match="synthetic captions"):
        checkpoint_curve(str(ckpt.parent), tmp_path / "curve", prompts=["a cat"], num_sampling_steps=2)


def test_plot_and_table(tmp_path):
    points = [CurvePoint(250, 1.25, 0.5, 0.25), CurvePoint(500, 2.5, 1.0, 0.75)]
    png = plot_curve(points, tmp_path / "sub" / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_curve(points).splitlines()
    assert len(table) == 3 and table[2].split() == ["500", "2.50", "100.0%", "75.0%"]
    with pytest.raises(ValueError, match="no curve points"):
        plot_curve([], tmp_path / "empty.png")
