"""The component tables are the one source of truth: every registered name and every shipped config
round-trips through them (name -> config class -> build -> an object of that entry's kind)."""

from __future__ import annotations

import typing

import pytest
import torch

from opensora_core.config import RunConfig, load_config
from opensora_core.config.sections import UNION_SECTIONS
from opensora_core.entry import Entry, lookup
from opensora_core.models import build_model
from opensora_core.models.registry import MODELS, family_of
from opensora_core.models.text_encoder_registry import TEXT_ENCODERS
from opensora_core.models.text_encoders import build_text_encoder
from opensora_core.models.vae import build_vae
from opensora_core.models.vae_registry import VAES
from opensora_core.parallel import backend_names, build_backend, build_mesh, init_distributed
from opensora_core.parallel.registry import BACKENDS
from opensora_core.schedulers import build_scheduler
from opensora_core.schedulers.registry import SCHEDULERS
from tests.config.test_opensora_v12_configs import TOOL_CONFIGS
from tests.conftest import REPO_ROOT

TABLES: dict[str, dict[str, Entry]] = {
    "model": MODELS,
    "vae": VAES,
    "text_encoder": TEXT_ENCODERS,
    "scheduler": SCHEDULERS,
}
# the upstream tool configs are refused by design (tests/config/test_opensora_v12_configs.py)
_TOOL_FILES = {REPO_ROOT / "configs" / "opensora-v1-2" / name for name in TOOL_CONFIGS}
SHIPPED = sorted(p for p in (REPO_ROOT / "configs").rglob("*.py") if p not in _TOOL_FILES)
# Small enough to build on CPU; hidden_size divisible by 3 for the size-conditioned families.
TINY_MODEL = {"depth": 1, "hidden_size": 48, "num_heads": 4, "input_size": (4, 8, 8), "caption_channels": 16}
BUILDABLE = {
    "VideoAutoencoderKL": {"from_pretrained": "debug/tiny-vae"},
    "VideoAutoencoderKLTemporalDecoder": {"from_pretrained": "debug/tiny-vae-temporal"},
    "identity": {},
    "OpenSoraVAE_V1_2": {"from_pretrained": "debug/tiny-vae-v1-2"},
    "VideoAutoencoderPipeline": {
        "vae_2d": {"type": "VideoAutoencoderKL", "from_pretrained": "debug/tiny-vae"},
        "vae_temporal": {"type": "VAE_Temporal", "filters": 8, "num_groups": 4},
    },
    "t5": {"from_pretrained": "debug/tiny-t5", "model_max_length": 8},
    "clip": {"from_pretrained": "debug/tiny-clip"},
    "classes": {"num_classes": 3},
}


def _returns(builder: typing.Callable[..., object]) -> type:
    """The class a builder function declares it returns (a class builder returns itself)."""
    return builder if isinstance(builder, type) else typing.get_type_hints(builder)["return"]


@pytest.mark.parametrize("section", list(TABLES))
def test_run_config_unions_are_the_tables(section: str):
    table = TABLES[section]
    assert UNION_SECTIONS[section] == {name: entry.config for name, entry in table.items()}
    for name, entry in table.items():
        # the config class's `type` literal lists exactly the names registered with it
        names = {n for n, e in table.items() if e.config is entry.config}
        assert set(typing.get_args(entry.config.model_fields["type"].annotation)) == names
        assert callable(entry.load_builder()), name


def test_plugins_and_multi_resolution_come_from_the_tables():
    plugin = RunConfig.model_fields["plugin"].annotation
    assert typing.get_args(plugin) == tuple(BACKENDS) and backend_names() == sorted(BACKENDS)
    assert all(callable(e.load_builder()) for e in BACKENDS.values())
    multi_resolution = typing.get_args(RunConfig.model_fields["multi_resolution"].annotation)
    spellings = {e.caps.multi_resolution for e in MODELS.values()} - {None}
    assert set(typing.get_args(multi_resolution[-1])) == spellings


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_name_round_trips(name: str):
    entry = MODELS[name]
    cfg = entry.config.model_validate({"type": name, **TINY_MODEL})
    model = build_model(cfg.type, **cfg.build_kwargs())
    assert type(model) is entry.load_builder()
    assert tuple(model.patch_size) == entry.defaults["patch_size"]
    found_name, found = family_of(model)
    assert found.config is entry.config and found.caps == entry.caps and found.builder == entry.builder
    assert found_name in MODELS


@pytest.mark.parametrize("name", list(VAES))
def test_every_vae_name_round_trips(name: str):
    cfg = VAES[name].config.model_validate({"type": name, **BUILDABLE[name]})
    assert isinstance(build_vae(cfg), _returns(VAES[name].load_builder()))


@pytest.mark.parametrize("name", list(TEXT_ENCODERS))
def test_every_text_encoder_name_round_trips(name: str):
    cfg = TEXT_ENCODERS[name].config.model_validate({"type": name, **BUILDABLE[name]})
    encoder = build_text_encoder(cfg)
    assert isinstance(encoder, _returns(TEXT_ENCODERS[name].load_builder()))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_name_round_trips(name: str):
    cfg = SCHEDULERS[name].config.model_validate({"type": name})
    assert type(build_scheduler(cfg.type, **cfg.build_kwargs())) is SCHEDULERS[name].load_builder()


def test_ddp_backend_builds_through_the_table():
    env = init_distributed()
    backend = build_backend("ddp", torch.nn.Linear(2, 2), build_mesh(env, 1), lr=1e-3)
    assert type(backend) is BACKENDS["ddp"].load_builder() and backend.name == "ddp"


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO_ROOT / "configs")) for p in SHIPPED])
def test_every_shipped_config_resolves_through_the_tables(path):
    cfg = load_config(path)
    for section, table in TABLES.items():
        value = getattr(cfg, section)
        entry = table[value.type]
        assert type(value) is entry.config
        assert entry.config.model_validate(value.as_dict()) == value  # name -> config is lossless
    assert cfg.plugin in BACKENDS
    # build the shipped model family (shrunk: XL weights are not the point) and get the same entry back
    shrunk = {
        **cfg.model.build_kwargs(),
        **TINY_MODEL,
        "patch_size": MODELS[cfg.model.type].defaults["patch_size"],
    }
    shrunk.pop("space_scale", None), shrunk.pop("time_scale", None)  # fixed-grid scales are size-free anyway
    model = build_model(cfg.model.type, **shrunk)
    assert family_of(model)[1].config is type(cfg.model)


def test_unknown_names_list_only_their_own_kind():
    with pytest.raises(ValueError, match=r"unknown scheduler type 'DiT-XL/2' \(valid types: \['dpm-solver'"):
        lookup(SCHEDULERS, "DiT-XL/2", "scheduler")
    with pytest.raises(
        ValueError, match=r"unknown model type 'Latte-XL2'; did you mean 'Latte-XL/2'\?"
    ) as info:
        build_model("Latte-XL2")
    assert "iddpm" not in str(info.value) and "identity" not in str(info.value)
