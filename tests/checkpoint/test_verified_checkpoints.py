"""Verified checkpoints: the manifest lists every file (size, SHA-256); loading checks it and names the bad
file; ``latest`` skips a damaged checkpoint and falls back to the previous one; old markers load unverified."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from opensora_core import checkpoint as ckpt


class _OneRank:
    rank = local_rank = 0
    is_distributed = False

    def barrier(self) -> None:
        return None

    def all_reduce(self, tensor, op="sum", group=None):
        return tensor


WEIGHTS = b"0123456789" * 100


def _save(exp: str, step: int, **kw) -> str:
    def write(folder: Path) -> None:
        ckpt.write_json({"global_step": step}, folder / ckpt.RUNNING_STATES_FILE)
        ckpt.write_json({"model": {"type": "m"}}, folder / ckpt.CONFIG_JSON)
        (folder / ckpt.MODEL_FILE).write_bytes(WEIGHTS)
        (folder / "rng").mkdir(exist_ok=True)
        (folder / "rng" / "rank00000.pt").write_bytes(b"rng")

    marker = {"global_step": step, "world_size": 1}
    return ckpt.save_checkpoint(_OneRank(), exp, ckpt.checkpoint_name(0, step), write, marker=marker, **kw)


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path):
    uri = _save(str(tmp_path / "000-m"), 4)
    manifest = ckpt.read_manifest(uri)
    assert (manifest["global_step"], manifest["world_size"]) == (4, 1)
    on_disk = sorted(
        p.relative_to(uri).as_posix()
        for p in Path(uri).rglob("*")
        if p.is_file() and p.name != ckpt.COMPLETE_MARKER
    )
    assert sorted(manifest["files"]) == on_disk and "rng/rank00000.pt" in on_disk
    entry = manifest["files"][ckpt.MODEL_FILE]
    assert entry == {"size": len(WEIGHTS), "sha256": hashlib.sha256(WEIGHTS).hexdigest()}


def test_truncated_file_is_named_on_load_and_latest_falls_back(tmp_path: Path, caplog):
    exp = str(tmp_path / "000-m")
    good = _save(exp, 2)
    bad = _save(exp, 4)
    with open(Path(bad) / ckpt.MODEL_FILE, "r+b") as f:
        f.truncate(100)
    with pytest.raises(ckpt.CheckpointError, match=rf"{ckpt.MODEL_FILE} has 100 bytes"):
        ckpt.fetch_checkpoint(_OneRank(), bad)
    with caplog.at_level(logging.WARNING, logger="opensora_core.checkpoint"):
        latest = ckpt.find_latest_checkpoint(str(tmp_path), "m")
    assert latest is not None and latest.uri == good
    assert any("skipping checkpoint" in r.message and ckpt.MODEL_FILE in r.message for r in caplog.records)
    assert ckpt.resolve_load("latest", str(tmp_path), "m") == good


def test_altered_or_missing_file_is_named_on_load(tmp_path: Path):
    uri = _save(str(tmp_path / "000-m"), 2)
    (Path(uri) / ckpt.MODEL_FILE).write_bytes(WEIGHTS[::-1])  # same size, other content
    with pytest.raises(ckpt.CheckpointError, match=rf"{ckpt.MODEL_FILE} does not match the SHA-256"):
        ckpt.fetch_checkpoint(_OneRank(), uri)
    with pytest.raises(ckpt.CheckpointError, match=ckpt.MODEL_FILE):
        ckpt.fetch_files(uri, [ckpt.MODEL_FILE], tmp_path / "x")  # eval/registry reads are checked too
    (Path(uri) / "rng" / "rank00000.pt").unlink()
    with pytest.raises(ckpt.CheckpointError, match="rng/rank00000.pt is missing"):
        ckpt.verify_checkpoint(uri, content=False)


def test_old_marker_without_file_list_loads_unverified(tmp_path: Path, caplog):
    uri = _save(str(tmp_path / "000-m"), 2)
    (Path(uri) / ckpt.COMPLETE_MARKER).write_text(
        json.dumps({"checkpoint": "epoch0-global_step2", "global_step": 2})
    )
    with caplog.at_level(logging.WARNING, logger="opensora_core.checkpoint"):
        assert ckpt.fetch_checkpoint(_OneRank(), uri) == Path(uri)
    assert any("unverified" in r.message for r in caplog.records)
    assert ckpt.find_latest_checkpoint(str(tmp_path / "000-m")).uri == uri


@pytest.mark.integration
def test_s3_manifest_is_checked_on_download_and_latest_falls_back(
    s3_server, s3_bucket, tmp_path, monkeypatch
):
    from opensora_core.io import storage

    monkeypatch.setattr(storage.api, "_default_storage", storage.Storage(s3_server.storage_config()))
    exp = f"s3://{s3_bucket}/runs/000-m"
    good = _save(exp, 2, staging_root=tmp_path / "staging")
    bad = _save(exp, 4, staging_root=tmp_path / "staging")
    assert sorted(ckpt.read_manifest(bad)["files"]) == sorted(ckpt.read_manifest(good)["files"])
    folder = ckpt.fetch_checkpoint(_OneRank(), good, cache_root=tmp_path / "cache")
    assert (folder / ckpt.MODEL_FILE).read_bytes() == WEIGHTS

    storage.write_bytes(storage.join(bad, ckpt.MODEL_FILE), WEIGHTS[:10])  # truncated object
    assert ckpt.find_latest_checkpoint(f"s3://{s3_bucket}/runs", "m").uri == good
    with pytest.raises(ckpt.CheckpointError, match=rf"{ckpt.MODEL_FILE} has 10 bytes"):
        ckpt.fetch_checkpoint(_OneRank(), bad, cache_root=tmp_path / "cache")

    storage.write_bytes(storage.join(good, ckpt.MODEL_FILE), WEIGHTS[::-1])  # altered after it was cached
    with pytest.raises(ckpt.CheckpointError, match="does not match the SHA-256"):
        ckpt.fetch_checkpoint(_OneRank(), good, cache_root=tmp_path / "fresh-cache")
