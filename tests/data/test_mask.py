"""MaskGenerator: probabilities of mask_ratios, mask shapes per type."""

from __future__ import annotations

import random

import pytest
import torch

from opensora_core.data.mask import MASK_NAMES, MaskGenerator

STAGE_MASK_RATIOS = {
    "mask_no": 0.75,
    "mask_quarter_random": 0.025,
    "mask_quarter_head": 0.025,
    "mask_quarter_tail": 0.025,
    "mask_quarter_head_tail": 0.05,
    "mask_image_random": 0.025,
    "mask_image_head": 0.025,
    "mask_image_tail": 0.025,
    "mask_image_head_tail": 0.05,
}


V11_MASK_NAMES = [n for n in MASK_NAMES if n not in ("random", "intepolate")]
V12_STAGE1_MASK_RATIOS = {  # configs/opensora-v1-2/train/stage1.py: no identity, the rest (0.8) is mask_no
    "random": 0.05,
    "intepolate": 0.005,
    "quarter_random": 0.005,
    "quarter_head": 0.005,
    "quarter_tail": 0.005,
    "quarter_head_tail": 0.005,
    "image_random": 0.025,
    "image_head": 0.05,
    "image_tail": 0.025,
    "image_head_tail": 0.025,
}


@pytest.mark.parametrize("name", V11_MASK_NAMES)
def test_each_mask_type(name: str) -> None:
    gen = MaskGenerator({n: float(n == name) for n in MASK_NAMES}, rng=random.Random(0))
    for _ in range(50):
        m = gen.get_mask(16)
        cond = (~m).nonzero().flatten().tolist()
        if name == "mask_no":
            assert cond == []
            continue
        n_cond = len(cond)
        if name.startswith("mask_image"):
            assert n_cond == (2 if name.endswith("head_tail") else 1)
        else:
            assert 1 <= n_cond <= (8 if name.endswith("head_tail") else 4)
        if name.endswith("_head"):
            assert cond == list(range(n_cond))
        if name.endswith("_tail") and not name.endswith("head_tail"):
            assert cond == list(range(16 - n_cond, 16))
        if name.endswith("head_tail"):
            assert cond[0] == 0 and cond[-1] == 15
        if name.endswith("_random"):
            assert cond == list(range(cond[0], cond[0] + n_cond))
    assert gen.get_mask(1).tolist() == [True]  # single frames are never masked
    assert gen.get_mask(3).shape == (3,)  # T // 4 == 0 does not raise


def test_ratios_and_batch_masks() -> None:
    gen = MaskGenerator(STAGE_MASK_RATIOS, rng=random.Random(1))
    picks = [gen.pick() for _ in range(20000)]
    assert abs(picks.count("mask_no") / len(picks) - 0.75) < 0.02
    masks = gen.get_masks(torch.zeros(5, 4, 8, 2, 2))
    assert masks.shape == (5, 8) and masks.dtype == torch.bool
    legacy = MaskGenerator({"identity": 0.5, "quarter_head": 0.5})
    assert set(legacy.mask_ratios) == {"mask_no", "mask_quarter_head"}
    with pytest.raises(ValueError, match="sum to 1"):
        MaskGenerator({"mask_no": 0.5})
    with pytest.raises(ValueError, match="unknown mask"):
        MaskGenerator({"mask_everything": 1.0})


def test_v12_kinds_and_implicit_identity() -> None:
    gen = MaskGenerator(V12_STAGE1_MASK_RATIOS, rng=random.Random(2))
    assert list(gen.mask_ratios)[-1] == "mask_no"  # appended last, as the reference's identity
    assert gen.mask_ratios["mask_no"] == pytest.approx(0.8)
    assert gen.mask_ratios["mask_quarter_head"] == 0.005
    inter = MaskGenerator({"intepolate": 1.0}, rng=random.Random(0))
    seen = set()
    for _ in range(40):
        m = inter.get_mask(9).tolist()
        seen.add(m[0])
        start = 0 if not m[0] else 1
        assert m == [(i - start) % 2 == 1 for i in range(9)]  # every other frame conditions
    assert seen == {True, False}  # both phases occur
    rnd = MaskGenerator({"random": 1.0}, rng=random.Random(0))
    fractions = []
    for _ in range(300):
        m = rnd.get_mask(40)
        assert m.any()  # never all conditioning
        fractions.append(1 - m.float().mean().item())
    # conditioning fraction ~ U(0.1, 0.9): mean 0.5, spread over most of the range
    assert 0.45 < sum(fractions) / len(fractions) < 0.55
    assert min(fractions) < 0.2 and max(fractions) > 0.8
    # the same rng seed gives the same masks (a training step's masks depend on its key only)
    a = MaskGenerator({"random": 1.0}, rng=random.Random(5)).get_mask(16)
    b = MaskGenerator({"random": 1.0}, rng=random.Random(5)).get_mask(16)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="sum to 1"):
        MaskGenerator({"random": 0.9, "intepolate": 0.2})
