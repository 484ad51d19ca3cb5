"""``compile_sampler``: the sampler's model call compiled once, the same graph for every step."""

from __future__ import annotations

import torch

from opensora_core.config import load_config
from opensora_core.models import build_model
from opensora_core.sample import load_sampling_models
from opensora_core.sample.pipeline import compile_sampling_model
from opensora_core.schedulers import build_scheduler

TINY = "configs/debug/tiny_sample.py"


def test_compile_sampler_config_compiles_the_model_call(tmp_path):
    plain = load_sampling_models(load_config(TINY, overrides={"save_dir": str(tmp_path)}), device="cpu")
    cfg = load_config(TINY, overrides={"save_dir": str(tmp_path), "compile_sampler": True})
    compiled = load_sampling_models(cfg, device="cpu")  # compiling itself waits for the first call
    assert not isinstance(plain.model, torch._dynamo.eval_frame.OptimizedModule)
    assert isinstance(compiled.model, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.model.null_caption(1).shape == plain.model.null_caption(1).shape


def test_every_sampling_step_reuses_the_first_compiled_graph():
    torch.manual_seed(0)
    model = build_model(
        "STDiT-XL/2",
        depth=2,
        hidden_size=32,
        num_heads=4,
        input_size=(2, 8, 8),
        caption_channels=16,
        model_max_length=6,
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    z, y = torch.randn(1, 4, 2, 8, 8), torch.randn(1, 1, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])  # padded caption: the packed cross-attention path
    sampler = build_scheduler("dpm-solver", num_sampling_steps=4, cfg_scale=4.0)
    eager = sampler.sample(model, z, y, mask=mask)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = compile_sampling_model(model, backend="eager")  # graph capture without code generation
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile at a later step would raise
        out = sampler.sample(compiled, z, y, mask=mask)
        again = sampler.sample(compiled, z, y, mask=mask)  # a second video: still the same graph
    assert sampler.last_num_model_evals == 4
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one graph, no graph break
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    assert torch.equal(out, again)
