"""load_config mechanics: execution, _base_ inheritance, overrides, aliases, dumps, CLI flags, docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opensora_core.config import (
    ConfigError,
    RunConfig,
    build_parser,
    config_from_args,
    config_from_dict,
    load_config,
    parse_cli,
    parse_override_value,
)
from opensora_core.config.docs import BEGIN, END, render_reference
from opensora_core.config.hints import is_secret_key
from tests.conftest import REPO_ROOT

TINY_SAMPLE = REPO_ROOT / "configs/debug/tiny_sample.py"
TINY_TRAIN = REPO_ROOT / "configs/debug/tiny_train.py"
V10_TRAIN = REPO_ROOT / "configs/opensora/train/16x256x256.py"
STAGE2 = REPO_ROOT / "configs/opensora-v1-1/train/stage2.py"

MINIMAL = {
    "model": {"type": "STDiT-XL/2", "depth": 2, "hidden_size": 64, "num_heads": 4, "patch_size": (1, 4, 4)},
    "vae": {"type": "identity"},
    "text_encoder": {"type": "t5", "from_pretrained": "debug/tiny-t5", "model_max_length": 16},
    "scheduler": {"type": "iddpm"},
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ executing files


def test_config_file_keeps_only_public_values(tmp_path: Path):
    path = _write(
        tmp_path / "c.py",
        "import math\n"
        "from pathlib import Path\n"
        "_frames = 4 * 2\n"
        "def _double(x):\n    return 2 * x\n"
        "class Helper:\n    pass\n"
        "num_frames = _frames\n"
        "image_size = (_double(16), int(math.sqrt(1024)))\n"
        "model = dict(type='STDiT-XL/2', depth=2, hidden_size=64, num_heads=4, patch_size=(1, 4, 4))\n"
        "vae = dict(type='identity')\n"
        "text_encoder = dict(type='t5', from_pretrained='debug/tiny-t5', model_max_length=16)\n"
        "scheduler = dict(type='iddpm', num_sampling_steps=10)\n",
    )
    cfg = load_config(path)
    assert (cfg.num_frames, cfg.image_size) == (8, (32, 32))


def test_defaults_match_open_sora_parse_configs():
    cfg = config_from_dict(MINIMAL)
    assert (cfg.seed, cfg.loop, cfg.frame_interval, cfg.num_sample, cfg.num_bucket_build_workers) == (
        42,
        1,
        1,
        1,
        1,
    )
    assert cfg.reference_path is None and cfg.sample_name is None and cfg.mask_ratios is None
    assert cfg.prompt_as_path is False and cfg.start_from_scratch is False and cfg.multi_resolution is False
    assert cfg.bucket_config is None and cfg.tracking.backend == "none" and cfg.ema_decay == 0.9999


def test_base_inheritance_merges_dicts_and_supports_delete(tmp_path: Path):
    (tmp_path / "bases").mkdir()
    _write(
        tmp_path / "bases/base.py",
        "num_frames = 8\nimage_size = (32, 32)\n"
        "model = dict(type='STDiT-XL/2', depth=2, hidden_size=64, num_heads=4, patch_size=(1, 4, 4))\n"
        "vae = dict(type='identity')\n"
        "text_encoder = dict(type='t5', from_pretrained='debug/tiny-t5', model_max_length=16)\n"
        "scheduler = dict(type='iddpm', num_sampling_steps=10, cfg_scale=7.0)\n"
        "lr = 1e-3\n",
    )
    child = _write(
        tmp_path / "child.py",
        "_base_ = ['bases/base.py']\n"
        "model = dict(depth=1)\n"  # merged into the base model dict
        "scheduler = dict(_delete_=True, type='dpm-solver')\n"  # replaces the base scheduler
        "lr = 2e-4\n",
    )
    cfg = load_config(child)
    assert cfg.model.depth == 1 and cfg.model.hidden_size == 64
    assert cfg.scheduler.type == "dpm-solver" and cfg.scheduler.num_sampling_steps == 20
    assert cfg.lr == 2e-4 and cfg.num_frames == 8


def test_base_inheritance_loop_is_an_error(tmp_path: Path):
    _write(tmp_path / "a.py", "_base_ = 'b.py'\n")
    _write(tmp_path / "b.py", "_base_ = 'a.py'\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.py")


def test_json_dump_loads_back(tmp_path: Path):
    cfg = load_config(STAGE2)
    path = cfg.dump(tmp_path / "out/config.json")
    data = json.loads(path.read_text())
    assert data["bucket_config"]["240p"]["16"] == [0.9, 17]  # JSON: string keys, lists
    assert load_config(path) == cfg


def test_py_dump_is_open_sora_style_and_equal(tmp_path: Path):
    cfg = load_config(V10_TRAIN, overrides={"dataset.data_path": "m.csv"})
    text = cfg.dumps_py()
    assert 'model = dict(\n    type="STDiT-XL/2",' in text.replace("'", '"')
    assert "None," not in text.split("model = dict(")[1].split(")")[0]  # unset model fields left out
    path = cfg.dump(tmp_path / "config.py")
    assert load_config(path) == cfg
    with pytest.raises(ValueError, match=".py or .json"):
        cfg.dump(tmp_path / "config.yaml")


def test_save_writes_py_and_json(tmp_path: Path):
    cfg = load_config(TINY_TRAIN)
    py_path, json_path = cfg.save(tmp_path / "ckpt")
    assert (py_path.name, json_path.name) == ("config.py", "config.json")
    assert load_config(py_path) == cfg == load_config(json_path)
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("private_key", True),
        ("bypass_cache", False),
        ("password", True),
        ("tracking.password", True),
        ("db_pass", True),
        ("num_passes", False),
        ("aws_secret_access_key", True),
        ("api_token", True),
        ("access_key", True),
        ("model_max_length", False),
        (3, False),
    ],
)
def test_is_secret_key(key: object, secret: bool):
    assert is_secret_key(key) is secret


# ------------------------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("1e-4", 1e-4),
        ("(1, 4, 4)", (1, 4, 4)),
        ("None", None),
        ("null", None),
        ("true", True),
        ("False", False),
        ("DiT-XL/2", "DiT-XL/2"),
        ("'quoted'", "quoted"),
        ("[1, 2]", [1, 2]),
    ],
)
def test_parse_override_value(text: str, value: object):
    assert parse_override_value(text) == value


def test_overrides_as_strings_and_dict_map_to_fields():
    as_strings = load_config(
        TINY_TRAIN,
        [
            "model.depth=1",
            "lr=1e-4",
            "dataset.image_size=(64, 64)",
            "tracking.backend=mlflow",
            "grad_clip=None",
        ],
    )
    as_dict = load_config(
        TINY_TRAIN,
        {
            "model.depth": 1,
            "lr": 1e-4,
            "dataset.image_size": (64, 64),
            "tracking.backend": "mlflow",
            "grad_clip": None,
        },
    )
    assert as_strings == as_dict
    assert as_strings.model.depth == 1 and as_strings.lr == 1e-4 and as_strings.grad_clip is None
    assert as_strings.dataset.image_size == (64, 64) and as_strings.tracking.backend == "mlflow"


def test_override_dict_value_merges_and_delete_replaces():
    cfg = load_config(TINY_SAMPLE, {"model": {"depth": 1}})
    assert cfg.model.depth == 1 and cfg.model.hidden_size == 64
    cfg = load_config(
        TINY_SAMPLE, {"scheduler": {"_delete_": True, "type": "dpm-solver", "num_sampling_steps": 5}}
    )
    assert cfg.scheduler.type == "dpm-solver" and cfg.scheduler.num_sampling_steps == 5


def test_override_of_unknown_key_is_reported_as_override():
    with pytest.raises(ConfigError) as info:
        load_config(TINY_SAMPLE, ["model.dept=1"])
    assert "model.dept: unknown key (set by an override); did you mean 'model.depth'?" in str(info.value)


def test_malformed_override_string():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(TINY_SAMPLE, ["model.depth"])


def test_override_through_a_non_dict():
    with pytest.raises(ConfigError, match="not a dict"):
        load_config(TINY_SAMPLE, ["fps.x=1"])


def test_override_changing_the_model_type_revalidates():
    cfg = load_config(
        TINY_SAMPLE,
        {"model": {"_delete_": True, "type": "STDiT2-XL/2", "depth": 1, "hidden_size": 48, "num_heads": 4}},
    )
    assert cfg.model.type == "STDiT2-XL/2"
    with pytest.raises(ConfigError, match="model.space_scale"):
        load_config(TINY_SAMPLE, {"model.type": "STDiT2-XL/2", "model.space_scale": 0.5})


# ------------------------------------------------------------------------------ aliases and sections


def test_legacy_enable_flashattn_alias():
    raw = {**MINIMAL, "model": {**MINIMAL["model"], "enable_flashattn": True}}
    cfg = config_from_dict(raw)
    assert cfg.model.enable_flash_attn is True
    assert cfg.model.build_kwargs()["enable_flash_attn"] is True
    assert "enable_flashattn" not in cfg.model.build_kwargs()
    assert "enable_flashattn" not in cfg.dumps_py()


def test_dtype_spellings_are_normalised():
    cfg = config_from_dict(
        {**MINIMAL, "dtype": "bfloat16", "model": {**MINIMAL["model"], "dtype": "torch.float16"}}
    )
    assert cfg.dtype == "bf16" and cfg.model.dtype == "fp16"


def test_later_mask_names_map_to_the_v11_names():
    raw = {
        **MINIMAL,
        "dataset": {
            "type": "VideoTextDataset",
            "data_path": "m.csv",
            "num_frames": 8,
            "image_size": (32, 32),
        },
        "mask_ratios": {"identity": 0.5, "quarter_head": 0.25, "mask_image_tail": 0.25},
    }
    cfg = config_from_dict(raw)
    assert cfg.mask_ratios == {"mask_no": 0.5, "mask_quarter_head": 0.25, "mask_image_tail": 0.25}


def test_multi_resolution_true_means_pixartms():
    raw = {**MINIMAL, "model": {"type": "PixArtMS-XL/2"}, "multi_resolution": True}
    assert config_from_dict(raw).multi_resolution == "PixArtMS"


def test_model_build_kwargs():
    cfg = load_config(REPO_ROOT / "configs/opensora/inference/16x256x256.py")
    kwargs = cfg.model.build_kwargs()
    assert "type" not in kwargs and "from_pretrained" not in kwargs
    assert kwargs == {
        "space_scale": 0.5,
        "time_scale": 1.0,
        "enable_flash_attn": True,
        "enable_layernorm_kernel": True,
    }
    assert cfg.model.build_kwargs(with_pretrained=True)["from_pretrained"] == "OpenSora-v1-HQ-16x256x256.pth"
    assert cfg.model.effective("depth") == 28 and cfg.model.effective("patch_size") == (1, 2, 2)
    dit = config_from_dict(
        {**MINIMAL, "model": {"type": "DiT-XL/2x2"}, "text_encoder": {"type": "clip"}, "num_frames": 16}
    )
    assert dit.model.effective("patch_size") == (2, 2, 2)


def test_vae_and_text_encoder_dicts_for_builders():
    cfg = load_config(REPO_ROOT / "configs/opensora-v1-1/inference/sample.py")
    assert cfg.vae.as_dict()["type"] == "VideoAutoencoderKL" and cfg.vae.latent_channels == 4
    assert cfg.vae.as_dict()["micro_batch_size"] == 4 and "cache_dir" not in cfg.vae.as_dict()
    assert cfg.text_encoder.as_dict() == {
        "type": "t5",
        "from_pretrained": "DeepFloyd/t5-v1_1-xxl",
        "model_max_length": 200,
        "shardformer": False,
        "local_cache": False,
        "local_files_only": False,
        "offload": False,
    }
    assert cfg.scheduler.build_kwargs() == {"num_sampling_steps": 100, "cfg_scale": 7.0, "cfg_channel": 3}


def test_tiny_config_builds_with_the_model_zoo():
    torch = pytest.importorskip("torch")
    from opensora_core.models import build_model

    cfg = load_config(TINY_TRAIN)
    model = build_model(
        cfg.model.type,
        input_size=(cfg.dataset.num_frames, *cfg.dataset.image_size),
        in_channels=cfg.vae.latent_channels,
        caption_channels=32,
        model_max_length=cfg.text_encoder.model_max_length,
        **cfg.model.build_kwargs(),
    )
    assert len(model.blocks) == 2
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert isinstance(next(model.parameters()), torch.Tensor)


def test_direct_construction_raises_pydantic_error_and_config_from_dict_a_config_error():
    with pytest.raises(ValueError):
        RunConfig.model_validate({**MINIMAL, "batch_size": 0})
    with pytest.raises(ConfigError, match=r"invalid config <dict>:\n  - batch_size"):
        config_from_dict({**MINIMAL, "batch_size": 0})


def test_strict_numbers_accept_ints_for_floats():
    cfg = config_from_dict({**MINIMAL, "lr": 1, "scheduler": {"type": "iddpm", "cfg_scale": 7}})
    assert cfg.lr == 1.0 and isinstance(cfg.scheduler.cfg_scale, float)


# ---------------------------------------------------------------------------------------------- CLI


def test_sample_cli_flags_map_to_fields():
    cfg = parse_cli(
        [
            str(TINY_SAMPLE),
            "--num-sampling-steps", "5",
            "--cfg-scale", "3.5",
            "--prompt", "a cat", "a dog",
            "--prompt", "a bird",
            "--image-size", "64", "64",
            "--num-frames", "4",
            "--fps", "12",
            "--seed", "7",
            "--ckpt-path", "ckpt/model.safetensors",
            "--batch-size", "3",
            "--save-dir", "out/samples",
            "--sample-name", "demo",
            "--start-index", "1",
            "--end-index", "3",
            "--num-sample", "2",
            "--prompt-as-path",
            "--cfg-options", "model.depth=1", "dtype=bf16",
        ],
        training=False,
    )  # fmt: skip
    assert (cfg.scheduler.num_sampling_steps, cfg.scheduler.cfg_scale) == (5, 3.5)
    assert cfg.prompt == ["a cat", "a dog", "a bird"]
    assert (cfg.image_size, cfg.num_frames, cfg.fps, cfg.seed, cfg.batch_size) == ((64, 64), 4, 12, 7, 3)
    assert cfg.model.from_pretrained == "ckpt/model.safetensors"
    assert (cfg.save_dir, cfg.sample_name, cfg.start_index, cfg.end_index) == ("out/samples", "demo", 1, 3)
    assert (cfg.num_sample, cfg.prompt_as_path) == (2, True)
    assert cfg.model.depth == 1 and cfg.dtype == "bf16"


def test_sample_cli_reference_and_mask_flags():
    cfg = parse_cli(
        [
            str(REPO_ROOT / "configs/opensora-v1-1/inference/sample.py"),
            "--prompt", "p0", "p1",
            "--reference-path", "a.mp4", "None",
            "--mask-strategy", "0,0,0,0,8,0.3", "None",
            "--loop", "2",
            "--condition-frame-length", "4",
        ],
        training=False,
    )  # fmt: skip
    assert cfg.reference_path == ["a.mp4", None] and cfg.mask_strategy == ["0,0,0,0,8,0.3", None]
    assert (cfg.loop, cfg.condition_frame_length) == (2, 4)


def test_prompt_path_flag_clears_config_prompts():
    cfg = parse_cli([str(TINY_SAMPLE), "--prompt-path", "prompts.txt"], training=False)
    assert cfg.prompt_path == "prompts.txt" and cfg.prompt is None


def test_flags_not_given_keep_config_values():
    cfg = parse_cli([str(TINY_SAMPLE)], training=False)
    assert cfg == load_config(TINY_SAMPLE)


def test_train_cli_flags_map_to_fields():
    cfg = parse_cli(
        [
            str(V10_TRAIN),
            "--data-path", "data/meta.csv",
            "--load", "outputs/000/epoch0-global_step6",
            "--outputs", "s3://bucket/runs",
            "--batch-size", "2",
            "--start-from-scratch",
            "--seed", "1",
            "--cfg-options", "max_steps=3", "lr=1e-4",
        ],
        training=True,
    )  # fmt: skip
    assert cfg.dataset.type == "DatasetFromCSV" and cfg.dataset.data_path == "data/meta.csv"
    assert (cfg.load, cfg.outputs, cfg.batch_size, cfg.seed) == (
        "outputs/000/epoch0-global_step6",
        "s3://bucket/runs",
        2,
        1,
    )
    assert (cfg.start_from_scratch, cfg.wandb, cfg.max_steps, cfg.lr) == (True, False, 3, 1e-4)


def test_wandb_flag_is_removed_with_a_pointer_to_mlflow(capsys):
    for flag in (["--wandb"], ["--wandb", "false"]):
        with pytest.raises(SystemExit):
            parse_cli([str(V10_TRAIN), *flag], training=True)
        err = capsys.readouterr().err
        assert "--wandb was removed" in err and "tracking.backend=mlflow" in err


def test_wandb_key_false_loads_and_true_names_the_key_and_the_fix():
    assert load_config(V10_TRAIN).wandb is False  # upstream configs say `wandb = False`
    with pytest.raises(ConfigError) as info:
        load_config(V10_TRAIN, overrides={"wandb": True})
    assert "wandb" in str(info.value) and "tracking = dict(backend='mlflow'" in str(info.value)


def test_cfg_options_win_over_named_flags():
    cfg = parse_cli([str(TINY_SAMPLE), "--num-frames", "4", "--cfg-options", "num_frames=12"], training=False)
    assert cfg.num_frames == 12


def test_flag_of_the_other_mode_is_rejected(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        parse_cli([str(TINY_TRAIN), "--prompt", "x"], training=True)
    assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_cli([str(TINY_SAMPLE), "--data-path", "x.csv"], training=False)


def test_cli_mode_checks():
    with pytest.raises(ConfigError, match="dataset.data_path is not set"):
        parse_cli([str(STAGE2)], training=True)
    with pytest.raises(ConfigError, match="no prompts"):
        parse_cli([str(TINY_SAMPLE), "--cfg-options", "prompt=None"], training=False)
    with pytest.raises(ConfigError, match="sampling-only"):
        parse_cli(
            [str(TINY_TRAIN), "--cfg-options", "scheduler={'_delete_': True, 'type': 'dpm-solver'}"],
            training=True,
        )
    with pytest.raises(ConfigError, match="training-only"):
        parse_cli([str(TINY_SAMPLE), "--cfg-options", "scheduler.type=iddpm-speed"], training=False)


def test_callers_can_add_their_own_flags():
    parser = build_parser(training=False)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args([str(TINY_SAMPLE), "--device", "cuda", "--fps", "4"])
    cfg = config_from_args(args, training=False)
    assert args.device == "cuda" and cfg.fps == 4


# --------------------------------------------------------------------------------------------- docs


def test_docs_reference_is_up_to_date():
    text = (REPO_ROOT / "docs/config.md").read_text()
    generated = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert generated.strip() == render_reference().strip(), (
        "docs/config.md is stale: run `python -m opensora_core.config.docs --write docs/config.md`"
    )
    for name in RunConfig.model_fields:
        assert f"| `{name}` |" in generated


def test_importing_the_config_package_stays_cheap():
    """The component tables the config reads are light modules: no torch, no model code."""
    import subprocess
    import sys

    code = (
        "import sys, opensora_core.config;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'diffusers')"
        " or m in ('opensora_core.models.stdit', 'opensora_core.schedulers.iddpm', 'opensora_core.parallel.backends')];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
