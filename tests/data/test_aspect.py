"""Aspect-ratio tables equal the reference JSON; closest-ratio lookup."""

from __future__ import annotations

import json

import pytest

from opensora_core.data.aspect import ASPECT_RATIOS, get_closest_ratio, get_image_size
from tests.conftest import shared_path


def test_every_table_equals_reference_json() -> None:
    ref = json.loads(shared_path("reference", "aspect_ratios.json").read_text())["ASPECT_RATIOS"]
    assert list(ASPECT_RATIOS) == list(ref)
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
        "4k": 8294400,
    }
    assert {k: len(v[1]) for k, v in ASPECT_RATIOS.items()} == {
        k: (40 if k in ("256", "512", "1024") else 17) for k in ASPECT_RATIOS
    }
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
