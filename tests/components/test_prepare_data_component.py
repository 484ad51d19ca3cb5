"""prepare_data component: its python function on local folders, and its compiled form."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from kfp.dsl import Dataset

from components.prepare_data.component import RUNTIME_IMAGE, prepare_data
from opensora_core.data.synthetic import generate


def test_prepare_data_counts_quarantine_and_hash(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, 6, size=16, num_frames=4, seed=0)
    curated = raw / "meta.csv"
    curated.write_text("path,text\nclip_00000.mp4,a caption someone wrote by hand\n")
    (raw / "broken.mp4").write_bytes(b"")
    (raw / "broken.txt").write_text("a red square moving left")
    (raw / "no_caption.mp4").write_bytes((raw / "clip_00000.mp4").read_bytes())
    artifact = Dataset(name="metadata", uri=str(tmp_path / "artifact.json"))

    out = prepare_data.python_func(
        raw_data_uri=str(raw),
        prepared_root_uri=str(tmp_path / "prepared"),
        run_id="run-1",
        metadata=artifact,
        workers=1,
    )

    table = tmp_path / "prepared" / "run-1" / "meta.csv"
    assert out.metadata_uri == str(table)  # run-scoped, never inside the raw input
    assert curated.read_text() == "path,text\nclip_00000.mp4,a caption someone wrote by hand\n"
    assert (out.num_kept, out.num_quarantined) == (6, 2)
    assert out.dataset_sha256 == hashlib.sha256(table.read_bytes()).hexdigest()
    summary = json.loads((tmp_path / "artifact.json").read_text())
    assert summary["quarantine_uri"] == out.quarantine_uri
    assert set(summary["quarantine_reasons"]) == {"zero-byte file", "missing caption"}
    assert artifact.metadata["num_kept"] == 6
    # the held-out clips (by a hash of the path) and the training clips partition the table
    train = pd.read_csv(out.train_metadata_uri)
    held = pd.read_csv(out.eval_metadata_uri)
    assert out.train_metadata_uri == str(table.with_name("meta.train.csv")) and len(held) >= 1
    assert sorted(set(train["path"]) | set(held["path"])) == sorted(pd.read_csv(out.metadata_uri)["path"])
    assert set(train["path"]).isdisjoint(held["path"])
    assert summary["num_eval"] == len(held)


def test_prepare_data_refuses_to_replace_a_hand_made_table(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, 2, size=16, num_frames=4, seed=0)
    curated = raw / "meta.csv"
    curated.write_text("path,text\nclip_00000.mp4,hand caption\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_data.python_func(
            raw_data_uri=str(raw), metadata_uri=str(curated), metadata=Dataset(uri=str(tmp_path / "a.json"))
        )
    assert curated.read_text() == "path,text\nclip_00000.mp4,hand caption\n"
    with pytest.raises(ValueError, match="prepared_root_uri and run_id"):
        prepare_data.python_func(raw_data_uri=str(raw), metadata=Dataset(uri=str(tmp_path / "b.json")))


def test_prepare_data_explicit_table_and_min_clips(tmp_path):
    raw = tmp_path / "raw"
    generate(raw, 2, size=16, num_frames=4, seed=1)
    table = tmp_path / "tables" / "prepared.csv"
    out = prepare_data.python_func(
        raw_data_uri=str(raw), metadata_uri=str(table), metadata=Dataset(uri=str(tmp_path / "a.json"))
    )
    assert out.metadata_uri == str(table) and table.is_file()
    with pytest.raises(RuntimeError, match="only 2 usable clips"):
        prepare_data.python_func(
            raw_data_uri=str(raw),
            metadata_uri=str(table),
            min_clips=3,
            metadata=Dataset(uri=str(tmp_path / "b.json")),
        )
    with pytest.raises(ValueError, match="raw_data_uri is empty"):
        prepare_data.python_func(raw_data_uri=" ", metadata=Dataset(uri=str(tmp_path / "c.json")))


def test_prepare_data_compiles_to_runtime_image_without_installs():
    container = prepare_data.component_spec.implementation.container
    assert container.image == RUNTIME_IMAGE
    assert RUNTIME_IMAGE.startswith("ghcr.io/opensora-platform/runtime:")
    assert "pip install" not in " ".join(container.command)
