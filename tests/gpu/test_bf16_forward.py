"""bf16 vs fp32 forward agreement for every model family of ``MODELS`` (tiny sizes, random non-zero weights).

Two bf16 modes, both against the fp32 forward of the same weights and inputs:

- ``autocast``: fp32 weights, forward under ``torch.autocast(bf16)`` (training: the backends' mixed precision).
  Tolerance: relative L2 error of the output <= 2e-2.
- ``weights``: the model cast to bf16 (sampling: ``load_sampling_models`` with ``dtype="bf16"``).
  Tolerance: relative L2 error <= 4e-2 (layer norms and residual sums also round to 8 mantissa bits).

bf16 keeps 8 significant bits (unit roundoff 2**-8 ~ 3.9e-3); a depth-2 model stacks a few dozen roundings, so
errors of ~5e-3 to 1e-2 are expected and a wrong cast (fp16 overflow, a dropped mask, a bf16 softmax) shows up
as >= 1e-1. Each check also asserts the error is not zero, i.e. bf16 really ran.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from opensora_core.models import build_model
from opensora_core.models.registry import MODELS
from tests.gpu.devices import CPU_AND_CUDA, rel_error

TOLERANCE = {"autocast": 2e-2, "weights": 4e-2}
BATCH, CAPTION_LEN, CAPTION_DIM, CLASSES = 2, 6, 16, 10
LATENT = (4, 4, 8, 8)  # C, T, H, W (T divisible by the 2x2 patches' temporal 2)


def build_tiny_family(name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """``name`` at depth 2, hidden 48 (divisible by 3 for size embedders), 4 heads; zero-initialised
    projections (adaLN-Zero, final layers) get small random values so every branch shapes the output."""
    caps = MODELS[name].caps
    kwargs: dict[str, Any] = dict(
        input_size=LATENT[1:],
        in_channels=LATENT[0],
        hidden_size=48,
        depth=2,
        num_heads=4,
        class_dropout_prob=0.0,
    )
    if caps.conditioning == "caption":
        kwargs.update(caption_channels=CAPTION_DIM, model_max_length=CAPTION_LEN)
    else:
        kwargs.update(condition=f"label_{CLASSES}")
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = build_model(name, **kwargs).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def family_inputs(name: str, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Forward inputs of ``build_tiny_family(name)``: latents, timesteps, condition, text mask, video info."""
    caps = MODELS[name].caps
    g = torch.Generator().manual_seed(seed)
    inputs: dict[str, torch.Tensor] = {
        "x": torch.randn(BATCH, *LATENT, generator=g),
        # Multiples of 8 below 1024 are exact in bf16: STDiT2/STDiT3 cast the timestep to the model dtype before
        # embedding it, as the reference does (replicated), which would otherwise be measured as bf16 error.
        "timestep": torch.randint(0, 125, (BATCH,), generator=g) * 8,
    }
    if caps.conditioning == "caption":
        inputs["y"] = torch.randn(BATCH, 1, CAPTION_LEN, CAPTION_DIM, generator=g)
        mask = torch.ones(BATCH, CAPTION_LEN, dtype=torch.long)
        mask[0, 3:] = 0  # a padded caption: the masked cross-attention path
        inputs["mask"] = mask
    else:
        inputs["y"] = torch.randint(0, CLASSES, (BATCH,), generator=g)
    sizes = {"height": 64.0, "width": 64.0, "num_frames": float(LATENT[1]), "ar": 1.0, "fps": 24.0}
    for key in caps.video_info:
        inputs[key] = torch.full((BATCH,), sizes[key])
    return {k: v.to(device) for k, v in inputs.items()}


@pytest.mark.parametrize("mode", sorted(TOLERANCE))
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("device", CPU_AND_CUDA)
def test_bf16_forward_agrees_with_fp32(device: str, name: str, mode: str):
    model = build_tiny_family(name).to(device)
    inputs = family_inputs(name, device)
    hidden: dict[str, torch.Tensor] = {}  # the final linear's input: the hidden state all blocks produced

    def keep(tag: str):
        return lambda _mod, args: hidden.__setitem__(tag, args[0].detach().float())

    with torch.no_grad():
        hook = model.final_layer.linear.register_forward_pre_hook(keep("fp32"))
        reference = model(**inputs).float()
        hook.remove()
        if mode == "autocast":
            model.final_layer.linear.register_forward_pre_hook(keep("bf16"))
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                out = model(**inputs)
        else:  # as load_sampling_models: built with dtype="bf16" (its input cast), weights cast to bf16
            bf16 = build_tiny_family(name, dtype="bf16")
            bf16.load_state_dict(model.state_dict())
            bf16.final_layer.linear.register_forward_pre_hook(keep("bf16"))
            out = bf16.to(device=device, dtype=torch.bfloat16)(**inputs)
    assert rel_error(hidden["bf16"], hidden["fp32"]) <= TOLERANCE[mode], f"{name} {mode}: hidden state"
    assert out.shape == reference.shape
    assert torch.isfinite(out).all()
    error = rel_error(out, reference)
    assert 0.0 < error <= TOLERANCE[mode], f"{name} {mode} on {device}: relative error {error:.3e}"
