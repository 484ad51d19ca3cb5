"""The holdout stage (train / held-out split by a hash of the clip path): library, CLI, and in the merge."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from opensora_core.data.curate.holdout import holdout
from opensora_core.data.curate.merge import run_curation
from opensora_core.data.prepare import OutputExistsError, main
from opensora_core.data.split import split_table
from tests.data.curate.media import make_scene_video


def _table(tmp_path: Path, n: int = 200) -> Path:
    rows = [
        {"path": f"clips/c{i:04d}.mp4", "source_path": f"/raw/v{i // 4}.mp4", "text": "x"} for i in range(n)
    ]
    path = tmp_path / "deduped.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_holdout_writes_both_sides_and_matches_the_evaluation_rule(tmp_path: Path) -> None:
    table = _table(tmp_path)
    report = holdout(table, tmp_path / "train.csv", 0.2)
    train, held = pd.read_csv(tmp_path / "train.csv"), pd.read_csv(tmp_path / "train.eval.csv")
    assert report.details["eval_output"] == str(tmp_path / "train.eval.csv")
    assert (report.num_in, report.num_out, report.details["num_eval"]) == (200, len(train), len(held))
    assert len(train) + len(held) == 200 and set(train["path"]).isdisjoint(held["path"])
    assert 20 < len(held) < 60 and report.dropped == []
    # the same rule as opensora_core.data.split (keys relative to the input table's folder)
    _, expected = split_table(pd.read_csv(table), 0.2)
    assert sorted(Path(p).name for p in held["path"]) == sorted(Path(p).name for p in expected["path"])

    by_source = holdout(table, tmp_path / "t2.csv", 0.2, tmp_path / "e2.csv", by_source=True)
    held2 = pd.read_csv(tmp_path / "e2.csv")
    assert by_source.details["num_eval"] == len(held2) > 0
    train2 = pd.read_csv(tmp_path / "t2.csv")
    assert set(train2["source_path"]).isdisjoint(held2["source_path"])  # no clip's sibling on the other side
    assert len(held2) % 4 == 0  # whole source videos (4 clips each)


def test_holdout_refuses_foreign_tables_and_bad_fractions(tmp_path: Path) -> None:
    table = _table(tmp_path, 20)
    (tmp_path / "mine.csv").write_text("path,text\nkeep.mp4,hand written\n")
    with pytest.raises(OutputExistsError, match="--eval-output"):
        holdout(table, tmp_path / "train.csv", 0.2, tmp_path / "mine.csv")
    assert not (tmp_path / "train.csv").exists()  # nothing written when refused
    holdout(table, tmp_path / "train.csv", 0.2)
    holdout(table, tmp_path / "train.csv", 0.3)  # a re-run of the same stage replaces its own tables
    assert (tmp_path / "mine.csv").read_text().endswith("hand written\n")
    with pytest.raises(ValueError, match="eval_fraction"):
        holdout(table, tmp_path / "x.csv", 1.0)
    with pytest.raises(ValueError, match="training table"):
        holdout(table, tmp_path / "x.csv", 0.1, tmp_path / "x.csv")


def test_holdout_cli(tmp_path: Path) -> None:
    table = _table(tmp_path, 50)
    argv = ["holdout", str(table), "-o", str(tmp_path / "train.csv"), "--eval-fraction", "0.3"]
    assert main([*argv, "--eval-output", str(tmp_path / "eval.csv"), "--salt", "v2"]) == 0
    rep = json.loads((tmp_path / "train.report.json").read_text())
    assert rep["stage"] == "holdout" and rep["details"]["salt"] == "v2"
    assert rep["num_out"] + len(pd.read_csv(tmp_path / "eval.csv")) == 50


def test_curation_holds_out_whole_source_videos(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(4):
        make_scene_video(raw / f"v{k}.mp4", [12, 12], seed=k)
    config = {
        "scenes": {"min_clip_seconds": 0.5},
        "score": None,
        "filter": None,
        "caption": None,
        "holdout": {"eval_fraction": 0.3, "by_source": True},
    }
    report = run_curation(raw, tmp_path / "root", config, num_shards=2, progress=False)
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages)[-2:] == ["dedup", "holdout"]
    train, held = pd.read_csv(report["table"]), pd.read_csv(report["eval_table"])
    assert report["table"] == str(tmp_path / "root" / "train.csv") and report["rows"] == len(train)
    assert report["eval_table"] == str(tmp_path / "root" / "eval.csv")
    assert len(train) + len(held) == stages["dedup"]["num_out"] == 8
    assert len(held) >= 2 and set(train["source_path"]).isdisjoint(held["source_path"])
