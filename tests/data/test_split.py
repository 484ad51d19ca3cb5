"""opensora_core.data.split: deterministic held-out split by a hash of the path."""

from __future__ import annotations

import pandas as pd
import pytest

from opensora_core.data.split import held_out_score, split_key, split_metadata, split_table


def _table(n: int, folder: str = "/data/raw") -> pd.DataFrame:
    return pd.DataFrame({"path": [f"{folder}/clip_{i:05d}.mp4" for i in range(n)], "text": ["x"] * n})


def test_split_is_disjoint_complete_and_near_the_fraction():
    train, held = split_table(_table(2000), 0.1, "/data/raw")
    assert set(train["path"]).isdisjoint(held["path"]) and len(train) + len(held) == 2000
    assert 150 < len(held) < 250


def test_split_depends_on_the_relative_path_only_and_rows_never_move():
    _, held_a = split_table(_table(300, "/data/raw"), 0.2, "/data/raw")
    _, held_b = split_table(_table(300, "s3://bucket/raw"), 0.2, "s3://bucket/raw")
    assert [p.rsplit("/", 1)[1] for p in held_a["path"]] == [p.rsplit("/", 1)[1] for p in held_b["path"]]
    _, held_more = split_table(_table(600, "/data/raw"), 0.2, "/data/raw")  # rows added
    assert set(held_a["path"]) == set(held_more["path"]) & set(_table(300)["path"])
    assert split_key("/elsewhere/a.mp4", "/data/raw") == "/elsewhere/a.mp4"
    assert held_out_score("a", "s1") != held_out_score("a", "s2")


def test_small_tables_hold_out_one_row_and_keep_training_rows():
    train, held = split_table(_table(3), 0.01)
    assert (len(train), len(held)) == (2, 1)
    assert len(split_table(_table(3), 0.0)[1]) == 0
    with pytest.raises(ValueError, match="holds out all"):
        split_table(_table(1), 0.5)
    # every row scoring under the fraction: the highest-scoring one still trains (was an error for 2 rows)
    train, held = split_table(_table(2), 0.999)
    assert (len(train), len(held)) == (1, 1)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_table(_table(3), 1.0)


def test_split_metadata_writes_both_tables_next_to_the_input(tmp_path):
    table = tmp_path / "meta.csv"
    _table(50, str(tmp_path)).to_csv(table, index=False)
    report = split_metadata(str(table), 0.2)
    assert report.train_uri == str(tmp_path / "meta.train.csv")
    assert report.eval_uri == str(tmp_path / "meta.eval.csv")
    train, held = pd.read_csv(report.train_uri), pd.read_csv(report.eval_uri)
    assert (len(train), len(held)) == (report.num_train, report.num_eval) and report.num_eval > 0
    assert set(train["path"]) | set(held["path"]) == set(pd.read_csv(table)["path"])
