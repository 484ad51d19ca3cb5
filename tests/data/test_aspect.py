"""Aspect-ratio tables equal the reference JSON; closest-ratio lookup."""

from __future__ import annotations

import json

import pytest

from opensora_core.data.aspect import (
    ASPECT_RATIO_NAMES,
    ASPECT_RATIOS,
    RESOLUTIONS_V1_1,
    get_closest_ratio,
    get_image_size,
    image_size_of,
    num_frames_of,
)
from tests.conftest import shared_path


def test_every_v11_table_equals_reference_json() -> None:
    ref = json.loads(shared_path("reference", "aspect_ratios.json").read_text())["ASPECT_RATIOS"]
    assert list(RESOLUTIONS_V1_1) == list(ref)
    assert [r for r in ASPECT_RATIOS if r in ref] == list(ref)  # 1.2's additions keep the 1.1 order
    for name, entry in ref.items():
        pixels, table = ASPECT_RATIOS[name]
        assert pixels == entry["pixels"], name
        assert list(table) == list(entry["ratios"]), name  # same keys in the same order
        assert {k: list(v) for k, v in table.items()} == entry["ratios"], name


def test_pixel_counts_and_table_sizes() -> None:
    assert {k: v[0] for k, v in ASPECT_RATIOS.items()} == {
        "144p": 36864,
        "256": 65536,
        "240p": 102240,
        "360p": 230400,
        "512": 262144,
        "480p": 409920,
        "720p": 921600,
        "1024": 1048576,
        "1080p": 2073600,
        "2k": 3686400,
        "2048": 4194304,
        "2880": 8294400,
        "4k": 8294400,
    }
    assert {k: len(v[1]) for k, v in ASPECT_RATIOS.items()} == {
        k: (40 if k in ("256", "512", "1024", "2048", "2880") else 17) for k in ASPECT_RATIOS
    }
    for key, (h, w) in ASPECT_RATIOS["1024"][1].items():  # the PixArt tables scale by 2
        assert ASPECT_RATIOS["2048"][1][key] == (2 * h, 2 * w)
    for key, (h, w) in ASPECT_RATIOS["512"][1].items():
        assert ASPECT_RATIOS["256"][1][key] == (h // 2, w // 2)


def test_closest_ratio() -> None:
    table = ASPECT_RATIOS["240p"][1]
    assert get_closest_ratio(720, 1280, table) == "0.56"
    assert get_closest_ratio(1080, 1920, table) == "0.56"
    assert get_closest_ratio(100, 100, table) == "1.00"
    assert get_closest_ratio(1280, 720, table) == "1.78"
    assert get_closest_ratio(10, 1000, table) == "0.38"  # beyond the table: the extreme key
    # ties go to the first key in table order (0.5 is as far from 0.40 as from 0.60)
    assert get_closest_ratio(1, 2, {"0.40": (0, 0), "0.60": (0, 0)}) == "0.40"
    assert get_closest_ratio(1, 2, {"0.60": (0, 0), "0.40": (0, 0)}) == "0.60"
    assert get_image_size("256", "1.0") == (256, 256)
    with pytest.raises(KeyError, match="unknown resolution"):
        get_image_size("999p", "1.0")
    with pytest.raises(ValueError):
        get_closest_ratio(0, 10, table)


def test_v12_sampling_names() -> None:
    assert image_size_of("240p", "9:16") == (240, 426)
    assert image_size_of("480p", "9:16") == (480, 854)
    assert image_size_of("720p", "16:9") == (1280, 720)
    assert image_size_of("2k", "9:16") == (1440, 2560)
    assert image_size_of("144p", "1:1") == (192, 192)
    for name, key in ASPECT_RATIO_NAMES.items():  # every H:W name is in every 17-ratio table
        assert key in ASPECT_RATIOS["720p"][1], name
        h, w = (int(x) for x in name.split(":"))
        if name != "50:27":  # the reference maps 50:27 (1.85) to the 2.08 entry; kept as released
            assert float(key) == pytest.approx(h / w, abs=0.006)
    assert [num_frames_of(x) for x in ("4s", "2x", "16s", 51, "68", 1)] == [102, 102, 408, 51, 68, 1]


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: image_size_of("480", "9:16"), "valid: 144p, 256, 240p"),
        (lambda: image_size_of("480p", "9x16"), "valid: 3:8, 9:21"),
        (lambda: image_size_of("512", "9:16"), "resolutions that have it: 144p, 240p"),
        (lambda: num_frames_of("4sec"), "1x, 2x, 4x"),
        (lambda: num_frames_of(0), "positive"),
    ],
)
def test_v12_sampling_names_errors_list_valid_values(call, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        call()
