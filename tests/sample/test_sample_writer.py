"""Sample files: names, uint8 conversion, mp4/png writing, preview grids, loop stitching and masks."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

from opensora_core.sample.long import apply_mask_tuples, parse_mask_strategy, stitch_loops
from opensora_core.sample.writer import (
    output_stem,
    preview_grid,
    read_sample,
    safe_filename,
    sample_path,
    save_fps,
    save_sample,
    to_uint8_frames,
    write_preview_grid,
)


def test_names_follow_open_sora():
    stem = output_stem("out", 7, "a cat", sample_name=None)
    assert sample_path(stem, 0, 1, 16) == Path("out/sample_7.mp4")
    assert sample_path(stem, 1, 2, 16) == Path("out/sample_7-1.mp4")
    assert sample_path(output_stem("out", 7, "a cat", "run"), 0, 1, 1) == Path("out/run_7.png")
    assert output_stem("out", 7, "a/cat\n", prompt_as_path=True) == Path("out/a_cat_")
    assert safe_filename("..hidden") == "hidden" and len(safe_filename("é" * 300).encode()) <= 200
    assert save_fps(24, 3) == 8 and save_fps(2, 3) == 1


def test_to_uint8_frames_maps_minus_one_one_to_bytes():
    video = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 5, 1, 1).expand(3, 5, 1, 1)
    frames = to_uint8_frames(video)
    assert frames.shape == (5, 1, 1, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 0, 128, 255, 255]


def test_mp4_h264_with_odd_size_and_png(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 17, 23, 3), dtype=np.uint8)
    path = save_sample(frames, tmp_path / "v.mp4", fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 8
    back = read_sample(path)
    assert back.shape == (5, 18, 24, 3)  # padded to even sizes for yuv420p
    png = save_sample(frames[:1], tmp_path / "i.png", fps=8)
    assert np.array_equal(read_sample(png)[0], frames[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "v.mp4"]  # no temp files left


def test_preview_grid_layout(tmp_path):
    a = np.zeros((20, 4, 6, 3), np.uint8)
    b = np.full((3, 4, 6, 3), 9, np.uint8)
    grid = preview_grid([a, b], max_frames=8, pad=2)
    assert grid.shape == (2 * 4 + 2, 8 * 6 + 7 * 2, 3)
    assert grid[:4, :6].max() == 0 and grid[6:, :6].min() == 9 and grid[4:6].min() == 255
    assert grid[6:, 3 * 8 :].min() == 255  # row b has 3 frames; the rest stays white
    path = write_preview_grid([a], tmp_path / "preview" / "g.png")
    assert path.is_file()


def test_stitch_and_masks():
    clip0 = torch.zeros(1, 3, 8, 2, 2)
    clip1 = torch.ones(1, 3, 8, 2, 2)
    out = stitch_loops([clip0, clip1], 4)
    assert out.shape[2] == 12 and out[:, :, 8:].eq(1).all() and out[:, :, :8].eq(0).all()

    z = torch.zeros(3, 8, 2, 2)
    mask = torch.ones(8)
    ref = torch.arange(5.0).view(1, 5, 1, 1).expand(3, 5, 2, 2)
    apply_mask_tuples(z, mask, parse_mask_strategy("0,0,-2,-3,2,0.25;0"), [ref])
    assert z[0, :, 0, 0].tolist() == [0, 0, 0, 0, 0, 3, 4, 0]
    assert mask.tolist() == [0, 1, 1, 1, 1, 0.25, 0.25, 1]
