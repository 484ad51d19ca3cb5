"""Mask strategies, per-loop prompts, JSON suffixes, prompt files and run plans (no models)."""

from __future__ import annotations

import pytest

from opensora_core.config import load_config
from opensora_core.sample.long import (
    MaskTuple,
    SampleInputError,
    build_prompt_specs,
    parse_loop_prompt,
    parse_mask_strategy,
    split_json_suffix,
    total_frames,
)
from opensora_core.sample.prompts import plan_run, read_prompt_file

TINY = "configs/debug/tiny_sample.py"


def _fields(t: MaskTuple) -> tuple:
    return (t.loop_id, t.ref_id, t.ref_start, t.target_start, t.length, t.edit_ratio)


# ---------------------------------------------------------------------------------------- mask strategy
def test_mask_strategy_six_numbers():
    (t,) = parse_mask_strategy("0,0,0,0,8,0.3")
    assert _fields(t) == (0, 0, 0, 0, 8, 0.3)
    assert t.text == "0,0,0,0,8,0.3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", (2, 0, 0, 0, 1, 0.0)),
        ("1,3", (1, 3, 0, 0, 1, 0.0)),
        ("1,3,5", (1, 3, 5, 0, 1, 0.0)),
        ("1,3,5,7", (1, 3, 5, 7, 1, 0.0)),
        ("1,3,5,7,4", (1, 3, 5, 7, 4, 0.0)),
    ],
)
def test_mask_strategy_short_forms_are_padded_as_the_reference(text, expected):
    (t,) = parse_mask_strategy(text)
    assert _fields(t) == expected


def test_mask_strategy_several_tuples_spaces_and_negative_starts():
    tuples = parse_mask_strategy(" 0 ; 1,0,-4,-2,2,0.5 ;")
    assert [_fields(t) for t in tuples] == [(0, 0, 0, 0, 1, 0.0), (1, 0, -4, -2, 2, 0.5)]
    assert parse_mask_strategy(None) == [] and parse_mask_strategy("") == []


def test_negative_starts_count_from_the_end():
    (t,) = parse_mask_strategy("0,0,-4,-3,2")
    assert t.resolve(ref_frames=10, target_frames=8) == (6, 5, 2)
    (img,) = parse_mask_strategy("0,0,-1,-1")
    assert img.resolve(ref_frames=1, target_frames=8) == (0, 7, 1)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0,0,0,0,1,0,9", "1 to 6"),
        ("x", "loop_id must be an integer, got 'x'"),
        ("0,a", "ref_id must be an integer"),
        ("0,0,0,0,2.5", "length must be an integer"),
        ("0,,1", "1 to 6"),
        ("0,0,0,0,0", "length must be >= 1"),
        ("0,0,0,0,1,1.5", "edit_ratio must be in [0, 1]"),
        ("0,0,0,0,1,half", "edit_ratio must be a number"),
        ("-1", "loop_id and ref_id must be >= 0"),
    ],
)
def test_malformed_mask_strategy_names_the_tuple(text, needle):
    with pytest.raises(SampleInputError) as err:
        parse_mask_strategy(f"0;{text}")
    assert needle in str(err.value) and repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("text", "ref_frames", "needle"),
    [
        ("0,0,5", 5, "ref_start 5 is outside the reference's 5 frame(s)"),
        ("0,0,-6", 5, "ref_start -6"),
        ("0,0,0,8", 5, "target_start 8 is outside the clip's 8"),
        ("0,0,0,0,4", 1, "needs 4 frames but the reference has 1"),
        ("0,0,0,6,4", 9, "runs past the clip's 8 frames"),
    ],
)
def test_tuple_ranges_are_checked(text, ref_frames, needle):
    (t,) = parse_mask_strategy(text)
    with pytest.raises(ValueError) as err:
        t.resolve(ref_frames, 8)
    assert needle in str(err.value)


# ------------------------------------------------------------------------------------ per-loop prompts
def test_per_loop_prompts():
    assert parse_loop_prompt("|0|a cat|2|a dog", 4) == ["a cat", "a cat", "a dog", "a dog"]
    assert parse_loop_prompt("|0|only", 3) == ["only"] * 3
    assert parse_loop_prompt("a plain prompt | with a bar", 2) == ["a plain prompt | with a bar"] * 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("|1|a", "must start with loop 0"),
        ("|0|a|0|b", "must increase"),
        ("|0|a|3|b", "loop id 3 is never reached with loop=3"),
        ("|0|a|1", "must alternate"),
        ("|0|a|x|b", "'x' is not a loop id"),
        ("|0|a|1| ", "loop 1 has an empty text"),
    ],
)
def test_malformed_per_loop_prompt(text, needle):
    with pytest.raises(SampleInputError) as err:
        parse_loop_prompt(text, 3)
    assert needle in str(err.value)


# ---------------------------------------------------------------------------------------- JSON suffix
def test_json_suffix():
    text, opts = split_json_suffix('a cliff.{"reference_path": "a.png;b.mp4", "mask_strategy": "0"}')
    assert text == "a cliff." and opts == {"reference_path": "a.png;b.mp4", "mask_strategy": "0"}
    assert split_json_suffix("  a {curly} word ") == ("a {curly} word", {})


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ('x{"reference": "a.png"}', "unknown key(s) ['reference']"),
        ('x{"mask_strategy": 0}', "mask_strategy must be a string"),
        ("x{not json}", "not a valid JSON object"),
    ],
)
def test_bad_json_suffix(prompt, needle):
    with pytest.raises(SampleInputError) as err:
        split_json_suffix(prompt)
    assert needle in str(err.value)


def test_prompt_specs_merge_json_and_check_reference_indices():
    specs = build_prompt_specs(
        ["plain", '|0|a|1|b{"reference_path": "r.png", "mask_strategy": "1,0"}'],
        reference_path=["x.png;y.png", None],
        mask_strategy=["0,1", None],
        loop=2,
        indices=[4, 5],
    )
    assert specs[0].reference_paths == ["x.png", "y.png"] and specs[0].index == 4
    assert specs[1].text == "|0|a|1|b" and specs[1].loop_texts == ["a", "b"]
    assert specs[1].reference_paths == ["r.png"] and _fields(specs[1].mask_tuples[0])[:2] == (1, 0)
    with pytest.raises(SampleInputError) as err:
        build_prompt_specs(["p"], ["x.png"], ["0,1"], loop=1)
    assert "reference index 1" in str(err.value) and "1 reference(s)" in str(err.value)
    with pytest.raises(SampleInputError, match="loop_id 2, never reached with loop=2"):
        build_prompt_specs(["p"], ["x.png"], ["2"], loop=2)
    with pytest.raises(SampleInputError, match="reference_path has 1 entries but there are 2 prompts"):
        build_prompt_specs(["p", "q"], ["x.png"], None, loop=1)


def test_total_frames():
    assert total_frames(16, 1, None) == 16
    assert total_frames(16, 3, 4) == 3 * 12 + 4


# ------------------------------------------------------------------------------------- prompt files
def test_prompt_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# header\n\n a red ball  \n   \n#skip me\nblue cube\n")
    assert read_prompt_file(path) == ["a red ball", "blue cube"]


def test_empty_or_missing_prompt_file_names_the_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n# only a comment\n")
    with pytest.raises(SampleInputError, match="empty.txt' has no prompts"):
        read_prompt_file(path)
    with pytest.raises(SampleInputError, match="nope.txt' does not exist"):
        read_prompt_file(tmp_path / "nope.txt")


def test_plan_slices_names_and_skips_existing(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("zero\none\ntwo\nthree\n")
    cfg = load_config(
        TINY,
        overrides={
            "prompt": None,
            "prompt_path": str(prompts),
            "start_index": 1,
            "end_index": 3,
            "num_sample": 2,
            "save_dir": str(tmp_path / "out"),
        },
    )
    plan = plan_run(cfg)
    assert [(it.spec.index, it.sample_index, it.path.name) for it in plan.items] == [
        (1, 0, "sample_1-0.mp4"),
        (1, 1, "sample_1-1.mp4"),
        (2, 0, "sample_2-0.mp4"),
        (2, 1, "sample_2-1.mp4"),
    ]
    assert plan.fps == 8 and plan.num_frames == 8
    assert plan.preview_paths[1] == tmp_path / "out" / "preview" / "sample_1.png"

    out = tmp_path / "out"
    out.mkdir()
    (out / "one-1.mp4").write_bytes(b"x")
    cfg = cfg.model_copy(update={"prompt_as_path": True})
    plan = plan_run(cfg)
    assert [(it.path.name, it.skip) for it in plan.items][:2] == [("one-0.mp4", False), ("one-1.mp4", True)]

    with pytest.raises(SampleInputError, match="start_index 9 is past the end of the 4 prompts"):
        plan_run(cfg.model_copy(update={"start_index": 9, "end_index": None}))


def test_plan_rejects_loops_without_masked_sampling(tmp_path):
    cfg = load_config(
        TINY,
        overrides={
            "loop": 2,
            "condition_frame_length": 2,
            "scheduler": {"type": "dpm-solver", "_delete_": True},
        },
    )
    with pytest.raises(SampleInputError, match="loop=2 need scheduler.type 'iddpm'"):
        plan_run(cfg)


def test_plan_checks_references_before_any_model(tmp_path):
    cfg = load_config(
        TINY,
        overrides={
            "prompt": ['a{"reference_path": "%s", "mask_strategy": "0"}' % (tmp_path / "missing.png"), "b"],
        },
    )
    with pytest.raises(SampleInputError) as err:
        plan_run(cfg)
    assert "missing.png' does not exist" in str(err.value) and "prompt 0" in str(err.value)
