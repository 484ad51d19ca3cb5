"""Open-Sora 1.2 sampling flags and text conditioning: size names, frame names, save_fps, aes / flow /
camera-motion prompt suffixes, align and condition_frame_edit (issue 16)."""

from __future__ import annotations

import pytest
import torch

from opensora_core.config import ConfigError, parse_cli
from opensora_core.sample.cli import main
from opensora_core.sample.long import MaskTuple, append_scores, apply_mask_tuples, snap_to_multiple
from opensora_core.sample.prompts import plan_run
from tests.sample.test_sample_cli import ok, run_cli, video_meta

TINY = "configs/debug/tiny_sample.py"
TINY_V12 = "configs/debug/tiny_v1_2_sample.py"


def test_v12_flags_set_the_config():
    cfg = parse_cli(
        [TINY_V12, "--resolution", "480p", "--aspect-ratio", "9:16", "--num-frames", "4s", "--aes", "6.5"]
        + ["--flow", "4", "--camera-motion", "pan right", "--save-fps", "12", "--align", "5"]
        + ["--condition-frame-edit", "0.2"]
    )
    assert (cfg.image_size, cfg.num_frames, cfg.save_fps, cfg.align) == ((480, 854), 102, 12, 5)
    assert (cfg.aes, cfg.flow, cfg.camera_motion, cfg.condition_frame_edit) == (6.5, 4.0, "pan right", 0.2)
    assert parse_cli([TINY, "--num-frames", "51"]).num_frames == 51
    # an explicit --image-size replaces the file's names; names replace the file's image_size
    assert parse_cli([TINY_V12, "--image-size", "64", "96"]).image_size == (64, 96)
    assert parse_cli([TINY_V12, "--resolution", "240p", "--aspect-ratio", "1:1"]).image_size == (320, 320)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--resolution", "480"], "expected '144p', '256', '240p', '360p'"),
        (["--resolution", "480p", "--aspect-ratio", "9x16"], "expected '3:8', '9:21', '12:25'"),
        (["--num-frames", "4sec"], "1x, 2x, 4x, 8x, 16x, 2s, 4s, 8s, 16s, 32s"),
        (["--resolution", "1024", "--aspect-ratio", "9:16"], "resolutions that have it: 144p, 240p"),
        (["--aspect-ratio", "9:16"], "aspect_ratio is set but resolution is not"),
    ],
)
def test_unknown_values_list_the_valid_ones(flags, needle, capsys):
    with pytest.raises(ConfigError, match=needle):
        parse_cli([TINY, *flags])
    assert main([TINY, *flags]) == 2  # the CLI: exit 2 before any model loads, one error line
    assert needle in capsys.readouterr().err


def test_scores_are_appended_as_the_reference_formats_them(tmp_path):
    assert append_scores("a cat", 6.5) == "a cat aesthetic score: 6.5."
    assert append_scores("a cat.", 6.54, 4, "pan right") == (
        "a cat. aesthetic score: 6.5. motion score: 4.0. camera motion: pan right."
    )
    assert append_scores("a cat aesthetic score: 5.0.", 6.5) == "a cat aesthetic score: 5.0."
    assert append_scores("a cat") == "a cat"
    cfg = parse_cli(
        [TINY, "--prompt", "|0|a cat|1|a dog", "--loop", "2", "--condition-frame-length", "2"]
        + ["--aes", "6.5", "--flow", "3.25", "--save-dir", str(tmp_path), "--save-fps", "6"]
    )
    plan = plan_run(cfg)
    assert plan.specs[0].loop_texts == [
        "a cat aesthetic score: 6.5. motion score: 3.2.",
        "a dog aesthetic score: 6.5. motion score: 3.2.",
    ]
    assert plan.specs[0].text == "|0|a cat|1|a dog"  # file names keep the prompt as given
    assert plan.fps == 6


@pytest.mark.parametrize(
    ("value", "align", "limit", "expected"),
    [
        (0, 5, 15, 0),
        (7, 5, 15, 5),
        (8, 5, 15, 10),
        (13, 5, 15, 10),
        (10, 5, 15, 10),
        (4, 5, 30, 5),
        (2, 5, 30, 0),
    ],
)
def test_align_snaps_as_the_reference(value, align, limit, expected):
    assert snap_to_multiple(value, align, limit) == expected


def test_align_moves_the_conditioned_frames():
    z = torch.zeros(1, 15, 1, 1)
    ref = torch.arange(15.0).view(1, 15, 1, 1)
    mask = torch.ones(15)
    apply_mask_tuples(z, mask, [MaskTuple(0, 0, 8, 8, 2, 0.25)], [ref], align=5)
    assert z[0, :, 0, 0].tolist()[10:12] == [10.0, 11.0]  # 8 snapped to 10 in both reference and clip
    assert mask.tolist() == [1.0] * 10 + [0.25, 0.25] + [1.0] * 3
    unaligned = torch.ones(15)
    apply_mask_tuples(torch.zeros(1, 15, 1, 1), unaligned, [MaskTuple(0, 0, 8, 8, 2, 0.25)], [ref])
    assert unaligned[8:10].tolist() == [0.25, 0.25]


def test_condition_frame_edit_is_the_carried_frames_mask(tmp_path, monkeypatch):
    """The implicit tuple of loop 1 gives the carried frames condition_frame_edit as their mask value."""
    from opensora_core.sample import pipeline

    seen = []
    original = pipeline.apply_mask_tuples

    def spy(z, frame_mask, tuples, refs, where="", align=None):
        original(z, frame_mask, tuples, refs, where, align)
        seen.append(frame_mask.clone())

    monkeypatch.setattr(pipeline, "apply_mask_tuples", spy)
    args = [TINY, "--loop", "2", "--condition-frame-length", "2", "--condition-frame-edit", "0.3"]
    cfg = parse_cli(args + ["--prompt", "a cat", "--num-sampling-steps", "2", "--save-dir", str(tmp_path)])
    pipeline.sample(cfg, progress=False, device="cpu", previews=False)
    assert seen and seen[-1].tolist() == pytest.approx([0.3, 0.3] + [1.0] * 6)


def test_v12_debug_config_samples_on_cpu_with_the_v12_flags(tmp_path):
    res = ok(
        run_cli(
            tmp_path,
            "--prompt",
            "a red ball",
            "--resolution",
            "144p",
            "--aspect-ratio",
            "16:9",
            "--aes",
            "5.5",
            "--flow",
            "4",
            "--save-fps",
            "6",
            config=TINY_V12,
        )
    )
    path = tmp_path / "sample_0.mp4"
    assert f"saved {path}" in res.stdout
    assert video_meta(path) == (17, 6.0, (256, 144))  # 144p 16:9 is 256 x 144 (H x W) in 1.2's table
