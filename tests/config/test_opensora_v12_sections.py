"""The model and scheduler sections of upstream's configs/opensora-v1-2 (Open-Sora 1.2.0) validate unchanged.

The dicts are those of inference/sample.py, train/stage1-3.py (stage1 also misc/bs.py), train/adapt.py and
misc/eval_loss.py; the rest of each config (the 1.2 VAE, aes/flow, 1.2 bucket and mask formats) is tested with
those features.
"""

from __future__ import annotations

import pytest

from opensora_core.config import ConfigError, config_from_dict
from opensora_core.models.registry import STDiT3Config
from opensora_core.schedulers.registry import RFlowConfig

V12_MODELS = [
    {  # inference/sample.py
        "type": "STDiT3-XL/2",
        "from_pretrained": "hpcai-tech/OpenSora-STDiT-v3",
        "qk_norm": True,
        "enable_flash_attn": True,
        "enable_layernorm_kernel": True,
    },
    {  # train/stage1.py, stage2.py, stage3.py
        "type": "STDiT3-XL/2",
        "from_pretrained": None,
        "qk_norm": True,
        "enable_flash_attn": True,
        "enable_layernorm_kernel": True,
        "freeze_y_embedder": True,
    },
    {  # train/adapt.py, misc/eval_loss.py, misc/bs.py
        "type": "STDiT3-XL/2",
        "from_pretrained": None,
        "qk_norm": True,
        "enable_flash_attn": True,
        "enable_layernorm_kernel": True,
    },
]
V12_SCHEDULERS = [
    {
        "type": "rflow",
        "use_timestep_transform": True,
        "num_sampling_steps": 30,
        "cfg_scale": 7.0,
    },  # inference
    {"type": "rflow", "use_timestep_transform": True, "sample_method": "logit-normal"},  # training stages
    {"type": "rflow"},  # misc/eval_loss.py
]
# the 1.1 pieces around them, with the 1.2 caption length
REST = {
    "vae": {"type": "identity"},
    "text_encoder": {"type": "t5", "from_pretrained": "debug/tiny-t5", "model_max_length": 300},
}


@pytest.mark.parametrize("model", V12_MODELS)
@pytest.mark.parametrize("scheduler", V12_SCHEDULERS)
def test_upstream_v12_model_and_scheduler_sections_validate(model, scheduler):
    cfg = config_from_dict({"model": model, "scheduler": scheduler, "multi_resolution": "STDiT2", **REST})
    assert isinstance(cfg.model, STDiT3Config) and isinstance(cfg.scheduler, RFlowConfig)
    assert cfg.model.effective("hidden_size") == 1152 and cfg.model.effective("num_heads") == 16
    assert cfg.scheduler.use_timestep_transform == scheduler.get("use_timestep_transform", False)
    kwargs = cfg.model.build_kwargs()
    assert kwargs["qk_norm"] is True and "from_pretrained" not in kwargs


def test_3b_and_tiny_sizes_validate_and_bad_values_are_named():
    cfg = config_from_dict({"model": {"type": "STDiT3-3B/2"}, "scheduler": {"type": "rflow"}, **REST})
    assert cfg.model.effective("hidden_size") == 1872 and cfg.model.effective("num_heads") == 26
    # no aspect-ratio embedder: the width need not be divisible by 3
    tiny = {"type": "STDiT3-XL/2", "depth": 1, "hidden_size": 32, "num_heads": 2}
    assert config_from_dict({"model": tiny, "scheduler": {"type": "rflow"}, **REST}).model.hidden_size == 32
    bad = [
        ({"type": "rflow", "sample_method": "beta"}, "sample_method"),
        ({"type": "rflow", "use_discrete_timesteps": True, "sample_method": "logit-normal"}, "discrete"),
        ({"type": "rflow", "timestep_respacing": "10"}, "timestep_respacing"),
    ]
    for scheduler, needle in bad:
        with pytest.raises(ConfigError, match=needle):
            config_from_dict({"model": V12_MODELS[0], "scheduler": scheduler, **REST})
    with pytest.raises(ConfigError, match="enable_sequence_parallelism"):
        config_from_dict({"model": {**V12_MODELS[0], "enable_sequence_parallelism": True}, **REST})
