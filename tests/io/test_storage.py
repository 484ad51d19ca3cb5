"""Unit tests of opensora_core.io.storage: URI validation, config, retries, local I/O, and the S3 logic on an
in-memory fake backend (upload checksums, multipart abort, verification on read)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opensora_core.io import storage as st
from opensora_core.io.storage import (
    ChecksumMismatchError,
    InvalidURIError,
    ObjectInfo,
    ObjectNotFoundError,
    RetryPolicy,
    S3Config,
    Storage,
    StorageUnavailableError,
)

MiB = 1024 * 1024

# ----------------------------------------------------------------------------------------- parse_uri


def test_parse_uri_accepts_s3_file_and_local_forms(tmp_path):
    u = st.parse_uri("s3://my-bucket/runs/1/ckpt.safetensors")
    assert (u.scheme, u.bucket, u.key, u.is_s3) == ("s3", "my-bucket", "runs/1/ckpt.safetensors", True)
    assert str(u) == "s3://my-bucket/runs/1/ckpt.safetensors"
    assert st.parse_uri("s3://my-bucket").key == ""
    assert st.parse_uri("s3://my-bucket/prefix/").key == "prefix/"
    assert st.parse_uri("S3://my.bucket-1/k").bucket == "my.bucket-1"
    assert st.parse_uri("file:///data/x%20y.mp4").local_path == Path("/data/x y.mp4")
    assert st.parse_uri("file://localhost/data/x").local_path == Path("/data/x")
    assert st.parse_uri(tmp_path / "a.txt").local_path == tmp_path / "a.txt"
    assert st.parse_uri("../shared/reference").local_path == Path("../shared/reference")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://my-bucket/a/../b", "path traversal"),
        ("s3://my-bucket/../etc/passwd", "path traversal"),
        ("s3://my-bucket/a/./b", "'.' segments"),
        ("s3://my-bucket/a//b", "empty segment"),
        ("s3://my-bucket//a", "empty segment"),
        ("s3://my-bucket/a\\..\\b", "backslashes"),
        ("s3://my-bucket/a\x00b", "control character"),
        ("s3:///key", "bucket name is empty"),
        ("s3://", "bucket name is empty"),
        ("s3://My_Bucket/k", "not a valid S3 bucket name"),
        ("s3://ab/k", "not a valid S3 bucket name"),
        ("s3://bucket-/k", "not a valid S3 bucket name"),
        ("s3://a..b/k", "not a valid S3 bucket name"),
        ("s3://192.168.1.10/k", "not a valid S3 bucket name"),
        ("s3://xn--bucket/k", "reserved"),
        ("s3:my-bucket/key", "written s3://bucket/key"),
        ("http://example.com/x", "unsupported scheme 'http://'"),
        ("https://example.com/x", "unsupported scheme"),
        ("gs://bucket/key", "unsupported scheme 'gs://'"),
        ("s3a://bucket/key", "use s3://"),
        ("file://relative/path", "must be absolute"),
        ("file://../etc/passwd", "must be absolute"),
        ("file:///data/../etc/passwd", "path traversal"),
        ("file:///data?x=1", "no query"),
        ("", "empty storage URI"),
    ],
)
def test_parse_uri_rejects_bad_input_with_reason(uri, reason):
    with pytest.raises(InvalidURIError, match=None) as exc:
        st.parse_uri(uri)
    assert reason in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_parse_uri_rejects_overlong_keys_and_non_strings():
    with pytest.raises(InvalidURIError, match="1024 bytes"):
        st.parse_uri("s3://my-bucket/" + "k" * 1025)
    with pytest.raises(InvalidURIError, match="expected a str"):
        st.parse_uri(123)  # type: ignore[arg-type]


def test_join_appends_relative_parts_and_refuses_escapes(tmp_path):
    assert st.join("s3://my-bucket", "a", "b.txt") == "s3://my-bucket/a/b.txt"
    assert (
        st.join("s3://my-bucket/run/", "ckpt/model.safetensors")
        == "s3://my-bucket/run/ckpt/model.safetensors"
    )
    assert st.join("s3://my-bucket/run", "ckpt/") == "s3://my-bucket/run/ckpt/"
    assert st.join(tmp_path, "a/b", "c.bin") == str(tmp_path / "a" / "b" / "c.bin")
    assert st.join("file:///data", "x") == "/data/x"
    for bad in ("../x", "a/../../b", "/etc/passwd", "", "a//b", "a\\b"):
        with pytest.raises(InvalidURIError):
            st.join("s3://my-bucket/run", bad)
        with pytest.raises(InvalidURIError):
            st.join(tmp_path, bad)


# ---------------------------------------------------------------------------------------------- config


def test_is_remote_and_local_path(monkeypatch, tmp_path):
    for uri in ("s3://b/k", "https://host/a.mp4", "HTTP://host/a", "gs://b/k"):
        assert st.is_remote(uri), uri
    for uri in ("a/b.mp4", "/abs/x", "file:///abs/x", "FILE:///abs/x", Path("rel")):
        assert not st.is_remote(uri), uri
    monkeypatch.setenv("HOME", str(tmp_path))
    assert st.local_path("file:///abs/a%20b.png") == Path("/abs/a b.png")
    assert st.local_path("~/x.png") == tmp_path / "x.png"
    assert st.local_path("rel/x.png") == Path("rel/x.png")
    with pytest.raises(InvalidURIError, match="not a local path"):
        st.local_path("s3://bucket/key")
    with pytest.raises(InvalidURIError, match="absolute"):
        st.local_path("file://relative/x.png")


def test_config_from_env_endpoint_precedence_tls_and_keys():
    env = {
        "AWS_ENDPOINT_URL": "https://aws.example.com",
        "MLFLOW_S3_ENDPOINT_URL": "http://seaweedfs.ns.svc:8333",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "AWS_REGION": "eu-west-1",
        "S3_MAX_ATTEMPTS": "7",
    }
    cfg = S3Config.from_env(env)
    assert cfg.endpoint_url == "http://seaweedfs.ns.svc:8333"
    assert (cfg.secure, cfg.host, cfg.region, cfg.max_attempts) == (
        False,
        "seaweedfs.ns.svc:8333",
        "eu-west-1",
        7,
    )
    assert cfg.access_key.get_secret_value() == "AKIDEXAMPLE"
    cfg = S3Config.from_env({**env, "S3_ENDPOINT_URL": "https://minio.local:9000/"})
    assert (cfg.endpoint_url, cfg.secure, cfg.verify_tls) == ("https://minio.local:9000", True, True)
    assert S3Config.from_env({"S3_VERIFY_TLS": "false"}).verify_tls is False
    assert S3Config.from_env({"MLFLOW_S3_IGNORE_TLS": "true"}).verify_tls is False
    assert S3Config.from_env({"S3_PART_SIZE_MB": "8"}).part_size == 8 * MiB
    assert (
        S3Config.from_env({}, endpoint_url="storage.example.com").endpoint_url
        == "https://storage.example.com"
    )


def test_config_rejects_bad_values_with_field_names(tmp_path):
    with pytest.raises(ValueError, match="S3_VERIFY_TLS"):
        S3Config.from_env({"S3_VERIFY_TLS": "maybe"})
    with pytest.raises(ValueError, match="S3_MAX_ATTEMPTS"):
        S3Config.from_env({"S3_MAX_ATTEMPTS": "many"})
    with pytest.raises(ValueError, match="given together"):
        S3Config(access_key="only-the-key")
    with pytest.raises(ValueError, match="http:// or https://"):
        S3Config(endpoint_url="ftp://host")
    with pytest.raises(ValueError, match="without a path"):
        S3Config(endpoint_url="http://host:9000/bucket")
    with pytest.raises(ValueError, match="ca_bundle"):
        S3Config(ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="part_size"):
        S3Config(part_size=1024)
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        Storage({"endpoint": "http://x:1"})


def test_config_never_shows_secrets():
    with pytest.raises(ValueError) as exc:
        S3Config(endpoint_url="http://user:hunter2-password@host:9000")
    assert "hunter2-password" not in str(exc.value)
    cfg = S3Config(
        endpoint_url="http://h:1",
        access_key="AKID-VISIBLE-NOT",
        secret_key="s3cr3t-value",
        session_token="tok-val",
    )
    for text in (repr(cfg), str(cfg), repr(Storage(cfg)), cfg.model_dump_json()):
        assert "s3cr3t-value" not in text and "AKID-VISIBLE-NOT" not in text and "tok-val" not in text
    assert "**********" in repr(cfg)


# --------------------------------------------------------------------------------------------- retries


def test_retry_policy_backoff_is_exponential_and_capped():
    p = RetryPolicy(attempts=6, initial_delay_s=0.5, max_delay_s=4.0, jitter=False)
    assert [p.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    pj = RetryPolicy(attempts=3, initial_delay_s=1.0, max_delay_s=1.0, jitter=True)
    assert all(0.5 <= pj.delay(3) <= 1.0 for _ in range(50))


def test_call_with_retries_retries_transient_errors_then_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("connection refused")
        return "ok"

    policy = RetryPolicy(attempts=5, initial_delay_s=0.1, max_delay_s=1.0, jitter=False)
    assert st.call_with_retries(flaky, policy=policy, what="op", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and sleeps == [0.1, 0.2]


def test_call_with_retries_gives_up_and_does_not_retry_permanent_errors():
    policy = RetryPolicy(attempts=3, initial_delay_s=0.0, max_delay_s=0.0, jitter=False)
    with pytest.raises(StorageUnavailableError, match="op failed after 3 attempt") as exc:
        st.call_with_retries(
            lambda: (_ for _ in ()).throw(TimeoutError("slow")),
            policy=policy,
            what="op",
            sleep=lambda s: None,
        )
    assert isinstance(exc.value.__cause__, TimeoutError)
    calls = []

    def permanent():
        calls.append(1)
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        st.call_with_retries(permanent, policy=policy, what="op", sleep=lambda s: None)
    assert len(calls) == 1


class _Resp:
    def __init__(self, status: int):
        self.status = status
        self.headers: dict[str, str] = {}
        self.data = b""


def test_is_transient_error_classification():
    import urllib3.exceptions as ue
    from minio.error import InvalidResponseError, S3Error, ServerError

    def s3err(code: str, status: int) -> S3Error:
        return S3Error(_Resp(status), code, "msg", "/r", "req", "host")

    assert st.is_transient_error(ConnectionRefusedError())
    assert st.is_transient_error(ue.NewConnectionError(None, "refused"))
    assert st.is_transient_error(ue.ProtocolError("connection aborted"))
    assert st.is_transient_error(ue.ReadTimeoutError(None, "/", "timed out"))
    assert not st.is_transient_error(ue.SSLError("certificate verify failed"))
    assert not st.is_transient_error(ue.MaxRetryError(None, "/", ue.SSLError("bad cert")))
    assert st.is_transient_error(ServerError("boom", 503))
    assert not st.is_transient_error(ServerError("nope", 404))
    assert st.is_transient_error(InvalidResponseError(502, "text/html", "bad gateway"))
    assert st.is_transient_error(s3err("SlowDown", 503))
    assert st.is_transient_error(s3err("InternalError", 500))
    assert not st.is_transient_error(s3err("NoSuchKey", 404))
    assert not st.is_transient_error(s3err("AccessDenied", 403))
    assert not st.is_transient_error(ValueError("bad"))
    assert not st.is_transient_error(ChecksumMismatchError("x"))


# ------------------------------------------------------------------------------------------ local I/O


def test_local_round_trip_ranged_reads_and_stat(tmp_path):
    s = Storage(S3Config())
    target = tmp_path / "sub" / "blob.bin"
    data = os.urandom(10_000)
    res = s.write_bytes(target, data)
    assert res.sha256 == hashlib.sha256(data).hexdigest() and res.size == len(data)
    assert s.read_bytes(target) == data
    assert s.read_bytes(target, offset=100, length=50) == data[100:150]
    assert s.read_bytes(f"file://{target}", offset=9_990) == data[9_990:]
    with s.open_read(target, offset=10, length=5) as f:
        assert f.read() == data[10:15]
    assert s.stat(target).size == len(data) and s.exists(target)
    with pytest.raises(ObjectNotFoundError):
        s.read_bytes(tmp_path / "missing")
    with pytest.raises(ValueError, match="offset and length"):
        s.read_bytes(target, offset=-1)


def test_local_atomic_write_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"), st.atomic_write_file(target) as f:
        f.write(b"half-written new cont")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temp file left
    with st.atomic_write_file(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "model.safetensors": os.urandom(3000),
        "optimizer/shard-0.bin": b"opt",
        "running_states.json": b"{}",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_local_dirs_listing_and_removal(tmp_path):
    s = Storage(S3Config())
    src = tmp_path / "ckpt"
    files = _make_tree(src)
    assert s.list_uri(src) == sorted(str(src / r) for r in files)
    assert s.list_uri(src, recursive=False) == sorted(
        [str(src / "model.safetensors"), str(src / "optimizer") + "/", str(src / "running_states.json")]
    )
    assert s.list_uri(tmp_path / "nothing") == []
    copied = tmp_path / "copies" / "ckpt"
    results = s.upload_dir(src, copied)
    assert len(results) == 3 and all((copied / r).read_bytes() == d for r, d in files.items())
    restored = s.download_dir(copied, tmp_path / "restored")
    assert all((restored / r).read_bytes() == d for r, d in files.items())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(st.StorageError, match="recursive=True"):
        s.remove(restored)
    assert s.remove(restored, recursive=True) == 3 and not restored.exists()
    assert s.remove(tmp_path / "gone") == 0
    with pytest.raises(ObjectNotFoundError):
        s.remove(tmp_path / "gone", missing_ok=False)
    out = s.download_file(src / "model.safetensors", tmp_path / "one" / "m.bin")
    assert out.read_bytes() == files["model.safetensors"]


# --------------------------------------------------------------------------------- S3 logic on a fake


class FakeNoSuchUpload(Exception):
    code = "NoSuchUpload"


class _FakeBody:
    def __init__(self, data: bytes, headers: dict[str, str]):
        self._buf = io.BytesIO(data)
        self.headers = headers
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        return self._buf.read(amt)

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """In-memory S3 with failure injection; ETags computed like S3 (MD5, multipart MD5-of-MD5s)."""

    def __init__(self):
        self.objects: dict[tuple[str, str], tuple[bytes, dict[str, str], str]] = {}
        self.uploads: dict[str, dict] = {}
        self.fail_part: dict[int, list[BaseException]] = {}
        self.wrong_etag = False
        self.complete_lost_response = False
        self.aborted: list[str] = []
        self.calls: list[str] = []

    def _etag(self, data: bytes) -> str:
        return "0" * 32 if self.wrong_etag else hashlib.md5(data).hexdigest()

    def put(self, bucket, key, data, headers):
        self.calls.append("put")
        assert headers["Content-MD5"]
        etag = self._etag(data)
        self.objects[(bucket, key)] = (data, dict(headers), etag)
        return etag

    def create_multipart(self, bucket, key, headers):
        uid = f"upload-{len(self.uploads)}"
        self.uploads[uid] = {"bucket": bucket, "key": key, "headers": dict(headers), "parts": {}}
        return uid

    def upload_part(self, bucket, key, upload_id, part_number, data, headers):
        self.calls.append(f"part{part_number}")
        pending = self.fail_part.get(part_number)
        if pending:
            raise pending.pop(0)
        self.uploads[upload_id]["parts"][part_number] = data
        return hashlib.md5(data).hexdigest()

    def complete_multipart(self, bucket, key, upload_id, parts):
        if upload_id not in self.uploads:
            raise FakeNoSuchUpload("NoSuchUpload")
        up = self.uploads.pop(upload_id)
        chunks = [up["parts"][n] for n, _ in parts]
        data = b"".join(chunks)
        etag = (
            "0" * 32 + "-1"
            if self.wrong_etag
            else (
                hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest() + f"-{len(chunks)}"
            )
        )
        self.objects[(bucket, key)] = (data, up["headers"], etag)
        if self.complete_lost_response:
            self.complete_lost_response = False
            raise ConnectionResetError("response lost after the server completed the upload")
        return etag

    def abort_multipart(self, bucket, key, upload_id):
        self.aborted.append(upload_id)
        self.uploads.pop(upload_id, None)

    def list_multipart(self, bucket, prefix):
        return [(u["key"], uid) for uid, u in self.uploads.items() if u["key"].startswith(prefix)]

    def get(self, bucket, key, offset, length):
        if (bucket, key) not in self.objects:
            raise ObjectNotFoundError(key)
        data, headers, etag = self.objects[(bucket, key)]
        end = len(data) if length is None else offset + length
        hdrs = {"etag": f'"{etag}"'}
        if "x-amz-meta-sha256" in headers:
            hdrs["x-amz-meta-sha256"] = headers["x-amz-meta-sha256"]
        return _FakeBody(data[offset:end], hdrs)

    def stat(self, bucket, key):
        if (bucket, key) not in self.objects:
            return None
        data, headers, etag = self.objects[(bucket, key)]
        return ObjectInfo(f"s3://{bucket}/{key}", len(data), etag, headers.get("x-amz-meta-sha256"))

    def list(self, bucket, prefix, recursive):
        keys = sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))
        if recursive:
            return [(k, len(self.objects[(bucket, k)][0]), False) for k in keys]
        out: dict[str, tuple[str, int, bool]] = {}
        for k in keys:
            rest = k[len(prefix) :]
            if "/" in rest:
                d = prefix + rest.split("/", 1)[0] + "/"
                out[d] = (d, 0, True)
            else:
                out[k] = (k, len(self.objects[(bucket, k)][0]), False)
        return list(out.values())

    def remove(self, bucket, key):
        self.objects.pop((bucket, key), None)

    def remove_many(self, bucket, keys):
        for k in keys:
            self.remove(bucket, k)

    def bucket_exists(self, bucket):
        return True

    def make_bucket(self, bucket):
        return None


def _fake_storage(**cfg) -> tuple[Storage, FakeBackend]:
    be = FakeBackend()
    config = S3Config(part_size=5 * MiB, max_attempts=3, backoff_initial_s=0.0, backoff_max_s=0.0, **cfg)
    return Storage(config, backend=be, sleep=lambda s: None), be


def test_fake_single_and_multipart_uploads_store_checksums(tmp_path):
    s, be = _fake_storage()
    small = b"hello"
    res = s.write_bytes("s3://my-bucket/a/small.txt", small)
    assert res.parts == 1 and res.etag == hashlib.md5(small).hexdigest()
    _, headers, _ = be.objects[("my-bucket", "a/small.txt")]
    assert headers["x-amz-meta-sha256"] == hashlib.sha256(small).hexdigest()
    assert headers["Content-Type"] == "text/plain"

    big = os.urandom(11 * MiB + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    seen = []
    res = s.upload_file(
        path, "s3://my-bucket/a/big.bin", progress=lambda done, total: seen.append((done, total))
    )
    assert res.parts == 3 and res.etag.endswith("-3") and res.sha256 == hashlib.sha256(big).hexdigest()
    assert seen[-1] == (len(big), len(big)) and len(seen) == 3
    assert s.read_bytes("s3://my-bucket/a/big.bin") == big
    assert (
        s.read_bytes("s3://my-bucket/a/big.bin", offset=5 * MiB - 2, length=4)
        == big[5 * MiB - 2 : 5 * MiB + 2]
    )
    assert s.list_uri("s3://my-bucket/a") == ["s3://my-bucket/a/big.bin", "s3://my-bucket/a/small.txt"]


def test_fake_upload_with_wrong_etag_fails_and_removes_object():
    s, be = _fake_storage()
    be.wrong_etag = True
    with pytest.raises(ChecksumMismatchError, match="was removed"):
        s.write_bytes("s3://my-bucket/x.bin", b"payload")
    assert ("my-bucket", "x.bin") not in be.objects
    with pytest.raises(ChecksumMismatchError):
        s.write_bytes("s3://my-bucket/y.bin", os.urandom(6 * MiB))
    assert ("my-bucket", "y.bin") not in be.objects


def test_fake_multipart_failure_aborts_and_leaves_no_object():
    s, be = _fake_storage()
    be.fail_part[2] = [PermissionError("AccessDenied")]
    with pytest.raises(PermissionError):
        s.write_bytes("s3://my-bucket/ckpt/model.bin", os.urandom(12 * MiB))
    assert be.aborted == ["upload-0"] and not be.uploads
    assert s.list_uri("s3://my-bucket/ckpt") == []
    # transient failures of a part are retried per part, the upload succeeds
    be.fail_part[2] = [ConnectionResetError("reset"), TimeoutError("slow")]
    res = s.write_bytes("s3://my-bucket/ckpt/model.bin", os.urandom(12 * MiB))
    assert res.parts == 3 and be.calls.count("part2") == 4  # 1 failed + (2 failed + 1 ok)
    # a transient failure that outlasts the retries aborts too
    be.fail_part[1] = [ConnectionResetError("down")] * 3
    with pytest.raises(StorageUnavailableError, match="part 1/3"):
        s.write_bytes("s3://my-bucket/ckpt/other.bin", os.urandom(12 * MiB))
    assert len(be.aborted) == 2 and ("my-bucket", "ckpt/other.bin") not in be.objects


def test_fake_complete_with_lost_response_is_accepted_after_verifying_etag():
    s, be = _fake_storage()
    be.complete_lost_response = True
    data = os.urandom(6 * MiB)
    res = s.write_bytes("s3://my-bucket/lost.bin", data)
    assert res.parts == 2 and s.read_bytes("s3://my-bucket/lost.bin") == data and not be.aborted


def test_fake_reads_detect_checksum_mismatch(tmp_path):
    s, be = _fake_storage()
    s.write_bytes("s3://my-bucket/v.bin", b"original")
    data, headers, etag = be.objects[("my-bucket", "v.bin")]
    be.objects[("my-bucket", "v.bin")] = (b"tampered", headers, etag)  # content changed, metadata kept
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        s.read_bytes("s3://my-bucket/v.bin")
    with pytest.raises(ChecksumMismatchError), s.open_read("s3://my-bucket/v.bin") as f:
        f.read()
    with pytest.raises(ChecksumMismatchError):
        s.download_file("s3://my-bucket/v.bin", tmp_path / "v.bin")
    assert not list(tmp_path.iterdir())  # nothing written, no temp file left
    assert s.read_bytes("s3://my-bucket/v.bin", offset=0, length=3) == b"tam"  # ranged reads are not verified


def test_fake_download_dir_refuses_keys_escaping_the_target(tmp_path):
    s, be = _fake_storage()
    be.objects[("my-bucket", "ckpt/ok.bin")] = (b"ok", {}, hashlib.md5(b"ok").hexdigest())
    be.objects[("my-bucket", "ckpt/../../evil.sh")] = (b"x", {}, hashlib.md5(b"x").hexdigest())
    with pytest.raises(InvalidURIError, match="path traversal"):
        s.download_dir("s3://my-bucket/ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.sh").exists()
    assert s.remove("s3://my-bucket/ckpt", recursive=True) == 2  # odd keys can still be cleaned up
    assert be.objects == {}


def test_fake_object_operations_need_a_key_and_report_missing_objects(tmp_path):
    s, _ = _fake_storage()
    with pytest.raises(InvalidURIError, match="needs an object key"):
        s.write_bytes("s3://my-bucket/prefix/", b"x")
    with pytest.raises(ObjectNotFoundError):
        s.read_bytes("s3://my-bucket/missing")
    with pytest.raises(ObjectNotFoundError, match="nothing below"):
        s.download_dir("s3://my-bucket/none", tmp_path / "d")
    assert not s.exists("s3://my-bucket/missing")
    s.write_bytes("s3://my-bucket/dir/f", b"1")
    assert s.exists("s3://my-bucket/dir") and s.exists("s3://my-bucket/dir/f")
    with pytest.raises(st.StorageError, match="recursive=True"):
        s.remove("s3://my-bucket/dir")
    assert s.remove("s3://my-bucket/dir", recursive=True) == 1 and not s.exists("s3://my-bucket/dir")


def test_importing_storage_does_not_import_minio_or_kubernetes():
    code = (
        "import sys, opensora_core.io.storage as s; s.parse_uri('s3://my-bucket/k');"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('minio','urllib3','kfp','kubernetes','mlflow')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_closed_port_exhausts_retries_with_a_clear_error():
    from tests.servers import _free_ports

    port = _free_ports(1)[0]  # nothing listens here
    s = Storage(
        {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "access_key": "k",
            "secret_key": "s",
            "max_attempts": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.02,
        }
    )
    with pytest.raises(StorageUnavailableError, match="failed after 3 attempt") as exc:
        s.write_bytes("s3://my-bucket/x", b"x")
    assert "NewConnectionError" in str(exc.value) or "Connection" in str(exc.value)
