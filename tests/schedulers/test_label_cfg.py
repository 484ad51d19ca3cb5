"""CFG sampling of class-conditioned models (DiT/Latte with condition="label_N"): y is class ids [B]."""

import pytest
import torch

from opensora_core.models import build_model
from opensora_core.schedulers import build_scheduler


@pytest.mark.parametrize("name", ["iddpm", "dpm-solver"])
def test_label_conditioned_model_samples_with_cfg(name):
    torch.manual_seed(0)
    model = build_model(
        "DiT-XL/2", depth=1, hidden_size=32, num_heads=2, input_size=(2, 8, 8), condition="label_10"
    ).eval()
    seen = []
    orig = model.forward

    def spy(x, t, y, **kw):
        seen.append(y.clone())
        return orig(x, t, y, **kw)

    model.forward = spy
    z = torch.randn(2, 4, 2, 8, 8)
    out = build_scheduler(name, num_sampling_steps=3, cfg_scale=4.0).sample(model, z, y=torch.tensor([1, 3]))
    assert out.shape == z.shape and torch.isfinite(out).all()
    # each forward sees the conditions and the null class (= num_classes) in one 2B batch
    assert sorted(seen[0].tolist()) == [1, 3, 10, 10]


def test_float_1d_condition_is_rejected():
    model = build_model("DiT-XL/2", depth=1, hidden_size=32, num_heads=2, input_size=(2, 8, 8))
    with pytest.raises(ValueError, match="class ids"):
        build_scheduler("iddpm", num_sampling_steps=2).sample(
            model, torch.randn(3, 4, 2, 8, 8), y=torch.randn(3)
        )
