"""Re-saving an ``s3://`` checkpoint of the same name never deletes the complete old copy first: the new one is
uploaded to a staging prefix and published only when complete (real SeaweedFS server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opensora_core import checkpoint as ckpt
from opensora_core.checkpoint import write as ckpt_write

OLD = b"old weights " * 50
NEW = b"new weights, longer " * 60
STALE = "extra.bin"  # only in the old copy: removed once the new copy is published


class _OneRank:
    rank = local_rank = 0
    is_distributed = False

    def barrier(self) -> None:
        return None

    def all_reduce(self, tensor, op="sum", group=None):
        return tensor


class _FailingStorage:
    """The storage module, except that ``method`` raises an outage when ``when(uri)`` holds."""

    def __init__(self, real: Any, method: str, when: Any) -> None:
        self._real, self._method, self._when = real, method, when

    def __getattr__(self, attr: str) -> Any:
        fn = getattr(self._real, attr)
        if attr != self._method:
            return fn

        def failing(*args: Any, **kw: Any) -> Any:
            if self._when(str(args[-1] if attr == "upload_dir" else args[0])):
                raise ConnectionError(f"injected outage in {attr}")
            return fn(*args, **kw)

        return failing


def _save(exp: str, step: int, weights: bytes, tmp: Path, extra: bool = False) -> str:
    def write(folder: Path) -> None:
        ckpt.write_json({"global_step": step}, folder / ckpt.RUNNING_STATES_FILE)
        (folder / ckpt.MODEL_FILE).write_bytes(weights)
        if extra:
            (folder / STALE).write_bytes(b"only in the old copy")

    name = ckpt.checkpoint_name(0, step)
    return ckpt.save_checkpoint(
        _OneRank(), exp, name, write, marker={"global_step": step}, staging_root=tmp / "staging"
    )


def _weights(uri: str, tmp: Path, cache: str) -> bytes:
    return (ckpt.fetch_checkpoint(_OneRank(), uri, cache_root=tmp / cache) / ckpt.MODEL_FILE).read_bytes()


def _staging_prefixes(exp: str) -> list[str]:
    """Staging prefixes holding objects (SeaweedFS lists emptied folders too)."""
    from opensora_core.io import storage

    children = storage.list_uri(exp, recursive=False)
    return [c for c in children if ".staging-" in c and storage.list_uri(c, recursive=True)]


@pytest.fixture
def s3_exp(s3_server, s3_bucket, monkeypatch) -> str:
    from opensora_core.io import storage

    monkeypatch.setattr(storage.api, "_default_storage", storage.Storage(s3_server.storage_config()))
    return f"s3://{s3_bucket}/runs/000-m"


@pytest.mark.integration
def test_failure_between_upload_and_publish_keeps_the_old_copy(s3_exp, tmp_path, monkeypatch):
    from opensora_core.io import storage

    first = _save(s3_exp, 4, OLD, tmp_path, extra=True)
    # the second save of step 4 uploads to its staging prefix, then the store fails before publishing
    failing = _FailingStorage(
        storage, "write_bytes", lambda uri: ".staging-" in uri and uri.endswith(ckpt.COMPLETE_MARKER)
    )
    monkeypatch.setattr(ckpt_write, "storage", failing)
    with pytest.raises(ckpt.CheckpointError, match="injected outage"):
        _save(s3_exp, 4, NEW, tmp_path)
    monkeypatch.setattr(ckpt_write, "storage", storage)

    assert ckpt.find_latest_checkpoint(s3_exp).uri == first
    assert _weights(first, tmp_path, "cache") == OLD
    assert ckpt.verify_checkpoint(first)["files"].keys() == {ckpt.RUNNING_STATES_FILE, ckpt.MODEL_FILE, STALE}
    assert _staging_prefixes(s3_exp) == []  # the failed attempt cleaned up after itself

    # saved again with the store up: published, the old copy's extra object gone, no staging prefix left
    assert _save(s3_exp, 4, NEW, tmp_path) == first
    assert ckpt.find_latest_checkpoint(s3_exp).uri == first
    assert _weights(first, tmp_path, "cache2") == NEW
    assert not storage.exists(storage.join(first, STALE))
    assert _staging_prefixes(s3_exp) == []


@pytest.mark.integration
def test_failure_while_publishing_never_exposes_a_partial_checkpoint(s3_exp, tmp_path, monkeypatch):
    from opensora_core.io import storage

    previous = _save(s3_exp, 2, OLD, tmp_path)
    target = _save(s3_exp, 4, OLD, tmp_path)
    # the outage hits the publish upload (the staged copy is complete by then)
    failing = _FailingStorage(storage, "upload_dir", lambda uri: uri.rstrip("/") == target)
    monkeypatch.setattr(ckpt_write, "storage", failing)
    with pytest.raises(ckpt.CheckpointError, match="the complete checkpoint is still in") as err:
        _save(s3_exp, 4, NEW, tmp_path)
    monkeypatch.setattr(ckpt_write, "storage", storage)

    # step 4 no longer counts (its manifest went first), latest falls back to step 2, never to a mix
    assert not ckpt.is_complete(target)
    assert ckpt.find_latest_checkpoint(s3_exp).uri == previous
    (staged,) = _staging_prefixes(s3_exp)
    assert staged.rstrip("/") in str(err.value)
    assert _weights(staged.rstrip("/"), tmp_path, "cache") == NEW  # the new copy is complete there

    # the next save of the name clears the leftover staging prefix and publishes
    assert _save(s3_exp, 4, NEW, tmp_path) == target
    assert _staging_prefixes(s3_exp) == []
    assert ckpt.find_latest_checkpoint(s3_exp).uri == target
    assert _weights(target, tmp_path, "cache2") == NEW
