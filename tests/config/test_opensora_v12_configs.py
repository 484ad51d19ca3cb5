"""configs/opensora-v1-2 (upstream's Open-Sora 1.2.0 configs, same keys and values) load and carry 1.2's values.

Until the 1.2 VAE (`OpenSoraVAE_V1_2`) is in the VAE table the only problem a 1.2 config may have is that VAE
type; the rest is checked with the VAE section replaced by the identity VAE. The configs of upstream tools this
platform does not have (batch-size search, feature extraction, training on precomputed features) are shipped
too: they fail with one error per tool key naming the tool, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_core.config import ConfigError, load_config
from opensora_core.config.sections import VAE_TYPES
from tests.conftest import REPO_ROOT

V12_DIR = REPO_ROOT / "configs" / "opensora-v1-2"
# upstream tool configs -> the keys that name their tool (misc/eval_loss.py is not shipped here)
TOOL_CONFIGS = {
    "misc/bs.py": {"base", "base_step_time"},
    "misc/extract.py": {"save_text_features", "save_compressed_text_features", "bin_size", "log_time"},
    "misc/feat.py": {"load_text_features", "model.skip_y_embedder", "dataset.dummy_text_feature"},
    "train/stage1_feat.py": {
        "vae_out_channels",
        "model_max_length",
        "text_encoder_output_dim",
        "load_video_features",
        "load_text_features",
        "model.skip_y_embedder",
        "dataset.type=BatchFeatureDataset",
    },
}
V12_CONFIGS = sorted(
    p for p in V12_DIR.rglob("*.py") if p.relative_to(V12_DIR).as_posix() not in TOOL_CONFIGS
)
V12_VAE_READY = "OpenSoraVAE_V1_2" in VAE_TYPES
IDENTITY_VAE = {"vae": {"_delete_": True, "type": "identity"}}


def _rel(p: Path) -> str:
    return p.relative_to(V12_DIR).as_posix()


def _load(path: Path, **overrides):
    """The config; without the 1.2 VAE: assert the VAE type is its only problem, then load with identity."""
    if V12_VAE_READY:
        return load_config(path, overrides=overrides or None)
    with pytest.raises(ConfigError) as err:
        load_config(path, overrides=overrides or None)
    assert err.value.problems and all(
        p.startswith("vae.type: unknown vae type 'OpenSoraVAE_V1_2'") for p in err.value.problems
    )
    return load_config(path, overrides={**IDENTITY_VAE, **overrides})


def test_the_upstream_files_are_shipped():
    assert {_rel(p) for p in V12_DIR.rglob("*.py")} - {_rel(p) for p in V12_CONFIGS} == set(TOOL_CONFIGS)
    assert {_rel(p) for p in V12_CONFIGS} >= {
        "inference/sample.py",
        "train/stage1.py",
        "train/stage2.py",
        "train/stage3.py",
        "train/adapt.py",
        "misc/eval_loss.py",
    }


@pytest.mark.parametrize("path", V12_CONFIGS, ids=_rel)
def test_v12_config_loads_and_round_trips(path: Path, tmp_path: Path):
    cfg = _load(path)
    assert cfg.model.type == "STDiT3-XL/2" and cfg.scheduler.type == "rflow"
    assert cfg.text_encoder.model_max_length == 300
    for suffix in (".py", ".json"):
        assert load_config(cfg.dump(tmp_path / f"resolved{suffix}")) == cfg
    if "/train/" in path.as_posix():
        ready = _load(path, **{"dataset.data_path": "data/meta.csv"})
        ready.check_ready(training=True)
        assert ready.adam_eps == 1e-15 and ready.ema_decay == 0.99
        assert ready.mask_ratios["mask_no"] == pytest.approx(
            1 - sum(v for k, v in ready.mask_ratios.items() if k != "mask_no")
        )
        assert list(ready.mask_ratios)[:2] == ["random", "intepolate"]


def test_sample_config_values():
    cfg = _load(V12_DIR / "inference" / "sample.py")
    assert (cfg.resolution, cfg.aspect_ratio, cfg.image_size) == ("240p", "9:16", (240, 426))
    assert (cfg.num_frames, cfg.fps, cfg.save_fps, cfg.aes, cfg.flow, cfg.align) == (51, 24, 24, 6.5, None, 5)
    assert cfg.condition_frame_length == 5 and cfg.multi_resolution == "STDiT2"
    assert cfg.scheduler.num_sampling_steps == 30 and cfg.scheduler.use_timestep_transform is True
    # the 1.2 flags' spellings as overrides: names resolve to sizes, frame names to counts
    other = _load(
        V12_DIR / "inference" / "sample.py", resolution="480p", aspect_ratio="16:9", num_frames="4s"
    )
    assert (other.image_size, other.num_frames) == ((854, 480), 102)


def test_stage_bucket_pairs_and_warmup():
    stage1 = _load(V12_DIR / "train" / "stage1.py")
    assert stage1.bucket_config["144p"][204] == ((1.0, 0.1), 13)
    assert stage1.bucket_config["2048"][1] == (0.1, 5)
    assert stage1.warmup_steps == 1000 and stage1.lr == 1e-4
    stage3 = _load(V12_DIR / "train" / "stage3.py")
    assert stage3.bucket_config["480p"][408] == (0.0, None)
    assert stage3.mask_ratios["mask_image_head"] == 0.22
    adapt = _load(V12_DIR / "train" / "adapt.py")
    assert adapt.grad_checkpoint is False and adapt.model.freeze_y_embedder is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"resolution": "480"}, "expected '144p', '256', '240p'"),
        ({"aspect_ratio": "9x16"}, "expected '3:8', '9:21'"),
        ({"num_frames": "3s"}, "1x, 2x, 4x, 8x, 16x, 2s, 4s"),
        ({"resolution": "512"}, "resolutions that have it: 144p, 240p"),
        ({"image_size": (256, 256)}, "contradicts resolution='240p'"),
        ({"aspect_ratio": None}, "resolution is set but aspect_ratio is not"),
        ({"bucket_config": {"240p": {1: ((1.0, 0.5), 4)}}}, "video frame keys"),
        ({"mask_ratios": {"random": 0.7, "intepolate": 0.7}}, "sum to 1.4"),
        ({"mask_ratios": {"interpolate": 0.1}}, "did you mean 'intepolate'"),
    ],
)
def test_bad_v12_values_name_the_valid_ones(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(V12_DIR / "inference" / "sample.py", overrides={**IDENTITY_VAE, **overrides})


@pytest.mark.parametrize(
    ("overrides", "wanted", "not_wanted"),
    [
        ({"model.type": "STDiT3-XL/3"}, "did you mean 'STDiT3-XL/2'", "'STDiT-XL/2'?"),
        ({"aspect_ratios": "9:16"}, "did you mean 'aspect_ratio'", "vae"),
        ({"flows": 4.0}, "did you mean 'flow'", "'fps'"),
        ({"scheduler.type": "rflw"}, "did you mean 'rflow'", "model"),
    ],
)
def test_hints_name_the_same_kind(overrides, wanted, not_wanted):
    with pytest.raises(ConfigError) as err:
        load_config(V12_DIR / "inference" / "sample.py", overrides={**IDENTITY_VAE, **overrides})
    text = str(err.value)
    assert wanted in text and not_wanted not in text.split("did you mean")[1].split("\n")[0]


@pytest.mark.parametrize("name", sorted(TOOL_CONFIGS))
def test_tool_configs_name_the_tool_and_key(name):
    with pytest.raises(ConfigError) as err:
        load_config(V12_DIR / name)
    keys = {p.split(":", 1)[0] for p in err.value.problems}
    assert keys == TOOL_CONFIGS[name]  # only the tool's keys: no noise from the rest of the file
    tool = "batch-size search" if "bs.py" in name else "feature"
    assert all("not supported: a key of Open-Sora 1.2's" in p and tool in p for p in err.value.problems)
