"""Datasets: output format, transforms, bucket-shaped items, bad-file replacement, DataLoader with the sampler."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opensora_core.data.datasets import VariableVideoTextDataset, VideoTextDataset
from opensora_core.data.prepare import prepare
from opensora_core.data.sampler import VariableVideoBatchSampler
from opensora_core.data.transforms import get_transform, resize_crop, to_tensor_video
from opensora_core.data.video_io import read_video_full, temporal_random_crop_indices
from tests.data.media_factory import make_image, make_video


@pytest.fixture
def table(tmp_path: Path) -> Path:
    make_video(tmp_path / "a.mp4", num_frames=40, height=48, width=64, fps=8)
    make_video(tmp_path / "b.mp4", num_frames=30, height=64, width=48, fps=12)
    make_image(tmp_path / "c.png", height=40, width=60)
    rows = [("a.mp4", "clip a"), ("b.mp4", "clip b"), ("c.png", "image c")]
    meta = tmp_path / "meta.csv"
    pd.DataFrame(rows, columns=["path", "text"]).to_csv(tmp_path / "in.csv", index=False)
    prepare(tmp_path / "in.csv", meta, progress=False)
    return meta


def test_video_text_dataset_items(table: Path) -> None:
    ds = VideoTextDataset(table, num_frames=8, frame_interval=2, image_size=(32, 32), rng=random.Random(0))
    item = ds[0]
    assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1.0 and item["video"].max() <= 1.0
    assert (item["text"], item["num_frames"], item["height"], item["width"]) == ("clip a", 8, 32, 32)
    assert item["ar"] == 1.0 and item["fps"] == 8.0
    # the frames are the temporal crop of the reference rule, center-cropped
    full, _ = read_video_full(ds.data.loc[0, "path"])
    idx = temporal_random_crop_indices(40, 8, 2, random.Random(0))
    expected = get_transform("center", (32, 32))(full[idx])
    torch.testing.assert_close(item["video"], expected)
    image = ds[2]
    assert image["video"].shape == (3, 8, 32, 32) and image["fps"] == 120.0
    assert torch.equal(image["video"][:, 0], image["video"][:, 7])  # repeated frames
    single = VideoTextDataset(table, num_frames=8, image_size=(32, 32), image_frames="single")
    assert single[2]["video"].shape == (3, 1, 32, 32)
    wide = VideoTextDataset(table, num_frames=4, image_size=(24, 40), transform_name="resize_crop")
    assert wide[1]["video"].shape == (3, 4, 24, 40) and wide[1]["ar"] == pytest.approx(40 / 24)
    with pytest.raises(ValueError, match="use transform_name='resize_crop'"):
        VideoTextDataset(table, num_frames=4, image_size=(24, 40))


def test_variable_dataset_uses_bucket_shape(table: Path) -> None:
    ds = VariableVideoTextDataset(table, frame_interval=2)
    assert ds.data["id"].tolist() == [0, 1, 2]
    item = ds["1-6-20-30"]
    assert item["video"].shape == (3, 6, 20, 30)
    assert (item["num_frames"], item["height"], item["width"], item["fps"]) == (6, 20, 30, 12.0)
    assert item["ar"] == pytest.approx(30 / 20)  # width / height
    assert ds["2-1-16-24"]["video"].shape == (3, 1, 16, 24)
    with pytest.raises(ValueError, match="idx-T-H-W"):
        ds[1]


def test_bad_file_is_logged_replaced_and_counted(table: Path, tmp_path: Path, caplog) -> None:
    df = pd.read_csv(table)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 500)
    df = pd.concat([df, df.iloc[[0]].assign(path=str(broken), text="broken")], ignore_index=True)
    df.to_csv(tmp_path / "with_bad.csv", index=False)
    ds = VideoTextDataset(tmp_path / "with_bad.csv", num_frames=4, image_size=(16, 16))
    with caplog.at_level("WARNING"):
        item = ds[3]
    assert item["text"] != "broken" and item["video"].shape == (3, 4, 16, 16)
    assert ds.num_failed == 1 and ds.failed_paths == [str(broken)]
    assert "broken.mp4" in caplog.text
    # a variable bucket of 6 frames is refilled by a video, never by the image
    var = VariableVideoTextDataset(tmp_path / "with_bad.csv", frame_interval=2)
    for _ in range(5):
        assert var["3-6-16-16"]["video"].shape == (3, 6, 16, 16)
    assert var.num_failed == 5
    # the counter is shared with DataLoader worker processes
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, sampler=[3, 3, 3, 3])
    assert sum(len(b["text"]) for b in loader) == 4
    assert ds.num_failed == 1 + 4
    all_bad = tmp_path / "all_bad.csv"
    pd.DataFrame({"path": [str(broken)] * 3, "text": ["x"] * 3}).to_csv(all_bad, index=False)
    with pytest.raises(RuntimeError, match="consecutive samples failed"):
        VideoTextDataset(all_bad, num_frames=4, image_size=(16, 16), max_retries=3)[0]


def test_dataloader_with_bucket_sampler(table: Path) -> None:
    ds = VariableVideoTextDataset(table, frame_interval=2)
    config = {
        "144p": {1: (1.0, 2), 8: (1.0, 2)}
    }  # the tiny files are far below 144p: use a custom table size
    data = ds.data.copy()
    data[["height", "width"]] = [[144, 256], [256, 144], [144, 256]]
    ds.data = data
    sampler = VariableVideoBatchSampler(ds, config, num_replicas=1, rank=0, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=0)
    batches = list(loader)
    assert len(batches) == sampler.get_num_batch() == 3  # three buckets of one sample, each padded to 2
    shapes = sorted(tuple(b["video"].shape) for b in batches)
    assert shapes == [(2, 3, 1, 144, 256), (2, 3, 8, 144, 256), (2, 3, 8, 256, 144)]
    assert all(b["ar"].shape == (2,) and b["num_frames"].tolist() in ([1, 1], [8, 8]) for b in batches)


def test_transforms() -> None:
    frames = np.zeros((2, 30, 60, 3), dtype=np.uint8)
    frames[:, :, 20:40] = 255  # a white band in the middle
    out = get_transform("center", (30, 30))(frames)
    assert out.shape == (3, 2, 30, 30)
    assert out.max() == 1.0 and out.min() == -1.0
    assert (out[:, :, :, 10:20] > 0.99).all() and (out[:, :, :, :4] < -0.99).all()
    x = to_tensor_video(frames)
    assert resize_crop(x, (20, 20)).shape == (2, 3, 20, 20)
    assert resize_crop(x, (30, 90)).shape == (2, 3, 30, 90)
    with pytest.raises(ValueError, match="unknown transform_name"):
        get_transform("random", (8, 8))
