"""Unit tests of opensora_core.checkpoint: layout names, finding the latest, completeness, reading files."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_core import checkpoint as ckpt
from opensora_core.checkpoint import layout


class _OneRank:
    rank = local_rank = 0
    is_distributed = False

    def barrier(self) -> None:
        return None

    def all_reduce(self, tensor, op="sum", group=None):
        return tensor


def _save(exp: Path, epoch: int, step: int, files: dict[str, bytes] | None = None) -> str:
    def write(folder: Path) -> None:
        ckpt.write_json({"global_step": step}, folder / ckpt.RUNNING_STATES_FILE)
        ckpt.write_json({"model": {"type": "m"}}, folder / ckpt.CONFIG_JSON)
        for name, data in (files or {}).items():
            (folder / name).write_bytes(data)

    return ckpt.save_checkpoint(_OneRank(), str(exp), ckpt.checkpoint_name(epoch, step), write)


def test_layout_names_parse_and_round_trip():
    assert layout.parse_checkpoint_name(layout.checkpoint_name(2, 300)) == (2, 300)
    for bad in (
        "epoch2-global_step",
        "epoch-1-global_step3",
        layout.partial_name("epoch0-global_step1"),
        "x",
    ):
        assert layout.parse_checkpoint_name(bad) is None
    assert layout.experiment_name(7, "STDiT-XL/2") == "007-STDiT-XL-2"
    assert layout.parse_experiment_name("1234-DiT-XL-2") == (1234, "DiT-XL-2")
    assert layout.parse_experiment_name("12-DiT") is None  # three digits at least
    assert layout.rng_file("/c", 3) == Path("/c/rng/rank00003.pt")
    files = layout.OptimizerFiles(Path("/c"))
    assert files.shard(1).name != files.shard(0).name and files.shard(0).parent == Path("/c")
    assert files.booster_unsharded.parent == files.booster_dir
    assert f"{layout.CONFIG_STEM}.json" == layout.CONFIG_JSON
    assert layout.SAMPLING_WEIGHT_FILES[0] == layout.EMA_FILE


def test_latest_takes_the_highest_complete_step_of_the_newest_experiment(tmp_path: Path):
    _save(tmp_path / "000-m", 0, 50)
    _save(tmp_path / "001-m", 0, 4)
    _save(tmp_path / "001-m", 1, 8)
    (tmp_path / "001-m" / ckpt.checkpoint_name(1, 12)).mkdir()  # no marker: not a checkpoint
    _save(tmp_path / "002-other", 0, 99)
    latest = ckpt.find_latest_checkpoint(str(tmp_path), "m")
    assert latest is not None and (latest.epoch, latest.global_step) == (1, 8)
    assert ckpt.find_latest_checkpoint(str(tmp_path)).global_step == 99  # any model
    assert ckpt.find_latest_checkpoint(str(tmp_path / "000-m")).global_step == 50  # an experiment folder
    assert [r.global_step for r in ckpt.list_checkpoints(str(tmp_path / "001-m"), complete_only=False)] == [
        4,
        8,
        12,
    ]
    assert ckpt.find_latest_checkpoint(str(tmp_path / "nothing-here")) is None
    assert ckpt.next_experiment_dir(str(tmp_path), "m").endswith("003-m")


def test_verify_completeness_by_the_marker(tmp_path: Path):
    uri = _save(tmp_path / "000-m", 0, 1)
    assert ckpt.is_complete(uri)
    (Path(uri) / ckpt.COMPLETE_MARKER).unlink()
    assert not ckpt.is_complete(uri)
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.resolve_load(uri, str(tmp_path))


def test_fetch_files_and_running_states(tmp_path: Path):
    uri = _save(tmp_path / "000-m", 0, 6, {ckpt.EMA_FILE: b"weights"})
    assert ckpt.fetch_files(uri, [ckpt.EMA_FILE], tmp_path / "unused") == Path(uri)  # local: in place
    assert ckpt.read_running_states(uri) == {"global_step": 6}
    assert ckpt.read_running_states_uri(uri) == {"global_step": 6}
    with pytest.raises(FileNotFoundError, match=ckpt.CONFIG_JSON):
        ckpt.fetch_files(str(tmp_path), [], tmp_path / "x")


def test_final_metrics_round_trip_and_missing_file(tmp_path: Path):
    summary = {"global_step": 3, "metrics": {"loss": 0.25}, "mlflow_run_id": "abc"}
    written = ckpt.write_final_metrics(str(tmp_path), summary)
    assert Path(written).name == ckpt.FINAL_METRICS_FILE
    assert ckpt.read_final_metrics(str(tmp_path)) == summary
    with pytest.raises(ckpt.CheckpointError, match=ckpt.FINAL_METRICS_FILE):
        ckpt.read_final_metrics(str(tmp_path / "elsewhere"))
