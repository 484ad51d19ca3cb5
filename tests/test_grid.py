"""The labelled preview grid of opensora_core.utils.grid (trainer preview, evaluation, sampler previews)."""

from __future__ import annotations

import numpy as np
import pytest

from opensora_core.utils.grid import FONT_SIZE, labelled_grid, wrap_label, write_grid_png


def _video(value: int, frames: int = 4, size: int = 16) -> np.ndarray:
    return np.full((frames, size, size, 3), value, dtype=np.uint8)


def test_each_row_has_its_prompt_written_above_it():
    grid = labelled_grid([_video(100), _video(200)], ["a red square moving left", "a blue circle"])
    assert grid.dtype == np.uint8 and grid.shape[1] >= 384  # wide enough for a readable line
    # rows: [band][tiles][pad][band][tiles]; a band holds dark text pixels, the tiles keep their colour
    columns = grid[:, :16]  # the first frame of each row
    tile_rows = np.where((columns == 100).all(axis=(1, 2)))[0]
    first_tile_top = int(tile_rows.min())
    band = grid[:first_tile_top]
    assert first_tile_top >= FONT_SIZE and (band < 80).any(), "the label band holds no text"
    second_top = int(np.where((columns == 200).all(axis=(1, 2)))[0].min())
    assert (grid[int(tile_rows.max()) + 1 : second_top] < 80).any(), "the second row has no label"


def test_size_grows_with_prompts_and_long_prompts_wrap():
    one = labelled_grid([_video(50)], ["short"])
    three = labelled_grid([_video(50)] * 3, ["short"] * 3)
    assert three.shape[0] > 2 * one.shape[0] and three.shape[1] == one.shape[1]
    long = " ".join(["a yellow circle moving down"] * 20)
    lines = wrap_label(long, 384)
    assert 1 < len(lines) <= 4 and lines[-1].endswith("...")
    assert labelled_grid([_video(50)], [long]).shape[0] > one.shape[0]


def test_without_labels_the_layout_is_the_plain_tiling(tmp_path):
    grid = labelled_grid([_video(10, frames=8), _video(20, frames=8)], max_frames=4, pad=2, min_tile=1)
    assert grid.shape == (2 * 16 + 2, 4 * 16 + 3 * 2, 3)
    assert grid[0, 0, 0] == 10 and grid[18, 0, 0] == 20 and grid[16, 0, 0] == 255
    path = write_grid_png(grid, tmp_path / "g" / "grid.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), grid)


def test_tiny_frames_are_enlarged_to_the_minimum_tile():
    video = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    video[:, 0, 0] = 200  # one bright pixel -> a 4x4 block at min_tile 64
    grid = labelled_grid([video], max_frames=2, pad=2)
    assert grid.shape == (64, 2 * 64 + 2, 3)
    assert (grid[:4, :4] == 200).all() and (grid[4:8, 4:8] == 0).all()
    assert labelled_grid([_video(1, size=128)]).shape[0] == 128  # large frames keep their size


def test_label_count_must_match_rows():
    with pytest.raises(ValueError, match="one label per row"):
        labelled_grid([_video(1), _video(2)], ["only one"])
    with pytest.raises(ValueError, match="at least one"):
        labelled_grid([], [])
