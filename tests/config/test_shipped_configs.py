"""Every config under configs/ loads, round-trips, and carries the Open-Sora values the reference describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opensora_core.config import ASPECT_TABLE_NAMES, ConfigError, RunConfig, load_config
from opensora_core.config.sections import VAE_TYPES
from tests.config.test_opensora_v12_configs import TOOL_CONFIGS
from tests.conftest import REPO_ROOT, shared_path

CONFIG_DIR = REPO_ROOT / "configs"
# Open-Sora 1.2 configs name the 1.2 VAE; until its type is in the VAE table they are tested (loading with the
# VAE section replaced) in test_opensora_v12_configs.py only.
V12_VAE_READY = "OpenSoraVAE_V1_2" in VAE_TYPES
SHIPPED = sorted(
    p
    for p in CONFIG_DIR.rglob("*.py")
    if (V12_VAE_READY or "opensora-v1-2" not in p.relative_to(CONFIG_DIR).parts)
    # upstream tool configs are refused with the tool named (test_opensora_v12_configs.py)
    and p.relative_to(CONFIG_DIR).as_posix() not in {f"opensora-v1-2/{name}" for name in TOOL_CONFIGS}
)
INFERENCE = [
    p
    for p in SHIPPED
    if "/inference/" in p.as_posix() or p.name.startswith("tiny_sample") or p.name.endswith("_sample.py")
]
EVAL = [p for p in SHIPPED if "/misc/" in p.as_posix()]  # validation loss (python -m opensora_core.eval.val_loss)
TRAIN = [p for p in SHIPPED if p not in INFERENCE and p not in EVAL]

REQUIRED = [
    "opensora/inference/16x256x256.py",
    "opensora/inference/16x512x512.py",
    "opensora/inference/64x512x512.py",
    "opensora/train/16x256x256.py",
    "opensora/train/16x512x512.py",
    "opensora/train/64x512x512.py",
    "opensora/train/64x512x512-sp.py",
    "opensora/train/360x512x512.py",
    "opensora-v1-1/inference/sample.py",
    "opensora-v1-1/inference/sample-ref.py",
    "opensora-v1-1/train/stage1.py",
    "opensora-v1-1/train/stage2.py",
    "opensora-v1-1/train/stage3.py",
    "opensora-v1-1/train/image.py",
    "opensora-v1-1/train/video.py",
    "dit/inference/1x256x256-class.py",
    "dit/inference/1x256x256.py",
    "dit/inference/16x256x256.py",
    "dit/train/1x256x256.py",
    "dit/train/16x256x256.py",
    "latte/inference/16x256x256.py",
    "latte/inference/16x256x256-class.py",
    "latte/train/16x256x256.py",
    "pixart/inference/1x256x256.py",
    "pixart/inference/1x512x512.py",
    "pixart/inference/16x256x256.py",
    "pixart/train/16x256x256.py",
    "pixart/train/64x512x512.py",
    "debug/tiny_sample.py",
    "debug/tiny_train.py",
    "debug/tiny_v1_2_sample.py",
    "debug/tiny_v1_2_train.py",
]


def _rel(p: Path) -> str:
    return p.relative_to(CONFIG_DIR).as_posix()


def test_all_required_configs_are_shipped():
    shipped = {_rel(p) for p in SHIPPED}
    assert not set(REQUIRED) - shipped


@pytest.mark.parametrize("path", SHIPPED, ids=_rel)
def test_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    for suffix in (".py", ".json"):
        dumped = cfg.dump(tmp_path / f"resolved{suffix}")
        assert load_config(dumped) == cfg
    json.dumps(cfg.to_dict())  # JSON-safe (tracking params, checkpoint metadata)
    assert "type" not in cfg.model.build_kwargs()


@pytest.mark.parametrize("path", INFERENCE, ids=_rel)
def test_inference_configs_are_ready_to_sample(path: Path):
    cfg = load_config(path)
    if cfg.prompt is None and cfg.prompt_path is None:  # upstream 1.2: prompts come from --prompt
        cfg = load_config(path, overrides={"prompt": ["a beach at dawn"]})
    cfg.check_ready(training=False)


@pytest.mark.parametrize("path", TRAIN, ids=_rel)
def test_train_configs_are_ready_once_data_is_given(path: Path):
    cfg = load_config(path, overrides={"dataset.data_path": "data/meta.csv"})
    cfg.check_ready(training=True)
    assert cfg.dataset is not None and cfg.dataset.data_path == "data/meta.csv"


def test_train_configs_without_data_path_are_not_ready():
    cfg = load_config(CONFIG_DIR / "opensora-v1-1/train/stage2.py")
    with pytest.raises(ConfigError, match="dataset.data_path"):
        cfg.check_ready(training=True)


def test_aspect_table_names_match_the_reference():
    tables = json.loads(shared_path("reference", "aspect_ratios.json").read_text())["ASPECT_RATIOS"]
    assert set(ASPECT_TABLE_NAMES) - set(tables) == {"2k", "2048", "2880"}  # Open-Sora 1.2's additions
    assert set(tables) <= set(ASPECT_TABLE_NAMES)


@pytest.mark.parametrize(("name", "expected"), [("stage2.py", 729), ("stage3.py", 848)])
def test_stage_bucket_configs_give_the_reference_bucket_counts(name: str, expected: int):
    # Bucket count = sum over the (resolution, num_frames) entries of the resolution's aspect-ratio keys
    # (reference section 5); computed from the table sizes, independent of the Bucket class.
    tables = json.loads(shared_path("reference", "aspect_ratios.json").read_text())["ASPECT_RATIOS"]
    cfg = load_config(CONFIG_DIR / "opensora-v1-1/train" / name)
    assert cfg.bucket_config is not None
    count = sum(len(tables[res]["ratios"]) * len(frames) for res, frames in cfg.bucket_config.items())
    assert count == expected


def test_stage2_values():
    cfg = load_config(CONFIG_DIR / "opensora-v1-1/train/stage2.py")
    assert cfg.model.type == "STDiT2-XL/2"
    assert cfg.model.enable_flash_attn is True  # written as the 1.1 spelling enable_flashattn
    assert cfg.model.build_kwargs() == {
        "input_sq_size": 512,
        "qk_norm": True,
        "enable_flash_attn": True,
        "enable_layernorm_kernel": True,
    }
    assert cfg.bucket_config["240p"][16] == (0.9, 17)
    assert cfg.bucket_config["512"][128] == (0.0, None)
    assert cfg.mask_ratios is not None and sum(cfg.mask_ratios.values()) == pytest.approx(1.0)
    assert cfg.mask_ratios["mask_no"] == 0.75
    assert cfg.dataset.type == "VariableVideoTextDataset" and cfg.dataset.transform_name == "resize_crop"
    assert cfg.text_encoder.model_max_length == 200
    assert (cfg.batch_size, cfg.lr, cfg.grad_clip, cfg.plugin, cfg.dtype) == (
        None,
        2e-5,
        1.0,
        "zero2",
        "bf16",
    )
    assert cfg.num_bucket_build_workers == 16


def test_v10_train_config_builds_a_csv_dataset_from_top_level_keys():
    cfg = load_config(CONFIG_DIR / "opensora/train/16x256x256.py", overrides={"dataset.data_path": "m.csv"})
    assert cfg.dataset.type == "DatasetFromCSV"
    assert (cfg.dataset.num_frames, cfg.dataset.frame_interval, cfg.dataset.image_size) == (16, 3, (256, 256))
    assert cfg.dataset.data_path == "m.csv" and cfg.dataset.use_image_transform is False
    assert cfg.model.space_scale == 0.5 and cfg.model.from_pretrained == "PixArt-XL-2-512x512.pth"
    assert cfg.text_encoder.shardformer is True and cfg.scheduler.timestep_respacing == ""


def test_sequence_parallel_configs():
    for name in ("64x512x512-sp.py", "360x512x512.py"):
        cfg = load_config(CONFIG_DIR / "opensora/train" / name)
        assert (cfg.plugin, cfg.sp_size, cfg.model.enable_sequence_parallelism) == ("zero2-seq", 2, True)


def test_v10_inference_values():
    cfg = load_config(CONFIG_DIR / "opensora/inference/64x512x512.py")
    assert (cfg.num_frames, cfg.fps, cfg.image_size) == (64, 12, (512, 512))
    assert cfg.model.time_scale == pytest.approx(2 / 3)
    assert (cfg.scheduler.num_sampling_steps, cfg.scheduler.cfg_scale, cfg.scheduler.cfg_channel) == (
        100,
        7.0,
        3,
    )


def test_sample_ref_config():
    cfg = load_config(CONFIG_DIR / "opensora-v1-1/inference/sample-ref.py")
    assert cfg.multi_resolution == "STDiT2" and cfg.image_size == (240, 426)
    assert (cfg.loop, cfg.condition_frame_length) == (2, 4)
    assert cfg.mask_strategy == ["0,0,0,0,8,0.3", None, "0"]
    assert cfg.reference_path[1] is None and len(cfg.prompt) == 3
    assert cfg.model.from_pretrained == "hpcai-tech/OpenSora-STDiT-v2-stage3"


def test_class_conditional_configs():
    dit = load_config(CONFIG_DIR / "dit/inference/1x256x256-class.py")
    assert dit.model.condition == "label_1000" and dit.text_encoder.num_classes == 1000
    assert dit.scheduler.type == "dpm-solver" and dit.scheduler.num_sampling_steps == 20
    latte = load_config(CONFIG_DIR / "latte/inference/16x256x256-class.py")
    assert latte.model.condition == "label_101" and latte.text_encoder.num_classes == 101


def test_tiny_debug_configs():
    sample = load_config(CONFIG_DIR / "debug/tiny_sample.py")
    train = load_config(CONFIG_DIR / "debug/tiny_train.py")
    for cfg in (sample, train):
        assert cfg.model.build_kwargs() == {
            "depth": 2,
            "hidden_size": 64,
            "num_heads": 4,
            "patch_size": (1, 4, 4),
        }
        assert cfg.vae.type == "identity" and cfg.vae.latent_channels == 3
        assert cfg.text_encoder.from_pretrained == "debug/tiny-t5" and cfg.text_encoder.model_max_length == 16
        assert cfg.dtype == "fp32"
    assert (sample.num_frames, sample.image_size, sample.scheduler.num_sampling_steps) == (8, (32, 32), 10)
    assert train.dataset.type == "VideoTextDataset"
    assert train.dataset.data_path == "outputs/debug/synthetic/meta.csv"
    assert (train.dataset.num_frames, train.dataset.image_size) == (8, (32, 32))
    assert (train.batch_size, train.max_steps, train.log_every, train.ckpt_every, train.lr) == (
        4,
        12,
        1,
        6,
        1e-3,
    )
    assert (train.plugin, train.outputs, train.tracking.backend) == ("ddp", "outputs/debug", "none")


def test_tiny_v1_2_debug_configs():
    sample = load_config(CONFIG_DIR / "debug/tiny_v1_2_sample.py")
    train = load_config(CONFIG_DIR / "debug/tiny_v1_2_train.py")
    for cfg in (sample, train):
        assert (cfg.model.type, cfg.scheduler.type, cfg.vae.type) == (
            "STDiT3-XL/2",
            "rflow",
            "OpenSoraVAE_V1_2",
        )
        assert cfg.vae.from_pretrained == "debug/tiny-vae-v1-2" and cfg.vae.latent_channels == 4
        assert (cfg.vae.micro_frame_size, cfg.vae.micro_batch_size) == (17, 4)
        assert cfg.scheduler.use_timestep_transform
    assert (sample.num_frames, sample.image_size) == (17, (32, 32))
    assert (train.dataset.num_frames, train.dataset.image_size) == (17, (32, 32))


@pytest.mark.parametrize("path", EVAL, ids=_rel)
def test_eval_configs_drive_the_validation_loss(path: Path):
    from opensora_core.eval.val_loss import check_scheduler

    cfg = load_config(path, overrides={"dataset.data_path": "data/meta.eval.csv"})
    check_scheduler(cfg, path)
    assert cfg.num_eval_timesteps >= 1 and cfg.dataset.type == "VariableVideoTextDataset" and cfg.bucket_config
