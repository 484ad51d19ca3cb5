"""Malformed configs fail with one ConfigError naming the file, the offending key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_core.config import ConfigError, load_config

# A valid tiny sampling config; each case appends lines that break it.
SAMPLE_BASE = """
num_frames = 8
fps = 8
image_size = (32, 32)
model = dict(type="STDiT-XL/2", depth=2, hidden_size=64, num_heads=4, patch_size=(1, 4, 4))
vae = dict(type="identity")
text_encoder = dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=16)
scheduler = dict(type="iddpm", num_sampling_steps=10, cfg_scale=7.0)
dtype = "fp32"
prompt = ["a red ball"]
batch_size = 1
"""

# A valid variable-resolution training config (Open-Sora 1.1 layout).
TRAIN_BASE = """
dataset = dict(type="VariableVideoTextDataset", data_path="meta.csv", frame_interval=3, transform_name="resize_crop")
bucket_config = {"144p": {1: (0.5, 48), 16: (1.0, 6)}, "240p": {16: (0.3, 2), 64: (0.0, None)}}
mask_ratios = {"mask_no": 0.75, "mask_quarter_random": 0.25}
model = dict(type="STDiT2-XL/2", input_sq_size=512, qk_norm=True)
vae = dict(type="VideoAutoencoderKL", from_pretrained="stabilityai/sd-vae-ft-ema", micro_batch_size=4)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=200)
scheduler = dict(type="iddpm", timestep_respacing="")
batch_size = None
plugin = "zero2"
"""

# (id, base, appended lines, substrings the message must contain)
CASES: list[tuple[str, str, str, list[str]]] = [
    ("unknown-top-level-key", SAMPLE_BASE, "batch_sise = 2", ["batch_sise", "did you mean 'batch_size'"]),
    (
        "key-of-a-section-at-top-level",
        SAMPLE_BASE,
        "num_sampling_steps = 20",
        ["num_sampling_steps", "did you mean 'scheduler.num_sampling_steps'"],
    ),
    ("unknown-model-key", SAMPLE_BASE, "model['depht'] = 3", ["model.depht", "did you mean 'model.depth'"]),
    (
        "unknown-vae-key",
        SAMPLE_BASE,
        "vae['scale'] = 1.0",
        ["vae.scale", "valid keys of vae type 'identity'"],
    ),
    (
        "unknown-tracking-key",
        SAMPLE_BASE,
        "tracking = dict(backend='mlflow', url='http://x')",
        ["tracking.url", "tracking.uri"],
    ),
    ("wrong-type-str-for-int", SAMPLE_BASE, "batch_size = 'four'", ["batch_size", "integer", "'four'"]),
    ("bool-for-int", SAMPLE_BASE, "model['depth'] = True", ["model.depth", "integer", "True"]),
    ("float-for-int", SAMPLE_BASE, "num_frames = 8.5", ["num_frames", "integer", "8.5"]),
    (
        "string-for-float",
        SAMPLE_BASE,
        "scheduler['cfg_scale'] = 'high'",
        ["scheduler.cfg_scale", "number", "'high'"],
    ),
    ("negative-image-size", SAMPLE_BASE, "image_size = (-32, 32)", ["image_size", "greater than 0"]),
    ("zero-batch-size", SAMPLE_BASE, "batch_size = 0", ["batch_size", "greater than 0"]),
    (
        "patch-needs-three-values",
        SAMPLE_BASE,
        "model['patch_size'] = (4, 4)",
        ["model.patch_size", "too few values"],
    ),
    (
        "image-size-too-many-values",
        SAMPLE_BASE,
        "image_size = (32, 32, 3)",
        ["image_size", "at most 2 items"],
    ),
    (
        "unknown-model-type",
        SAMPLE_BASE,
        "model['type'] = 'STDiT-XL'",
        ["model.type", "did you mean 'STDiT-XL/2'", "STDiT2-XL/2", "PixArtMS-XL/2"],
    ),
    ("missing-model-type", SAMPLE_BASE, "del model['type']", ["model.type", "missing", "STDiT-XL/2"]),
    (
        "unknown-vae-type",
        SAMPLE_BASE,
        "vae = dict(type='VideoAutoencoderKl')",
        ["vae.type", "'VideoAutoencoderKL'"],
    ),
    (
        "unknown-scheduler-type",
        SAMPLE_BASE,
        "scheduler = dict(type='dpm_solver')",
        ["scheduler.type", "'dpm-solver'"],
    ),
    ("missing-section", SAMPLE_BASE, "del vae", ["vae", "required"]),
    ("bad-dtype", SAMPLE_BASE, "dtype = 'fp8'", ["dtype", "'fp32'", "'bf16'"]),
    ("bad-plugin", SAMPLE_BASE, "plugin = 'zero3'", ["plugin", "'zero2-seq'"]),
    (
        "image-size-not-divisible-identity-vae",
        SAMPLE_BASE,
        "image_size = (30, 32)",
        ["image_size (30, 32)", "VAE stride 1", "patch (4, 4)", "model.patch_size"],
    ),
    (
        "image-size-not-divisible-sd-vae",
        SAMPLE_BASE,
        "vae = dict(type='VideoAutoencoderKL')\nmodel['in_channels'] = None\nimage_size = (48, 32)",
        ["image_size (48, 32)", "VAE stride 8", "'VideoAutoencoderKL'", "(32, 32)"],
    ),
    (
        "frames-not-divisible-by-temporal-patch",
        SAMPLE_BASE,
        "model['patch_size'] = (2, 4, 4)\nnum_frames = 7",
        ["num_frames (7)", "temporal patch 2"],
    ),
    (
        "hidden-not-divisible-by-heads",
        SAMPLE_BASE,
        "model['num_heads'] = 5",
        ["model.hidden_size (64)", "model.num_heads (5)"],
    ),
    (
        "in-channels-vs-vae",
        SAMPLE_BASE,
        "model['in_channels'] = 4",
        ["model.in_channels (4)", "3 latent channels"],
    ),
    ("stdit-needs-t5", SAMPLE_BASE, "text_encoder = dict(type='clip')", ["text_encoder.type 't5'", "'clip'"]),
    (
        "dit-labels-need-classes",
        SAMPLE_BASE,
        "model = dict(type='DiT-XL/2', condition='label_1000', depth=1, hidden_size=64, num_heads=4, patch_size=(1, 4, 4))",
        ["model.condition 'label_1000'", "num_classes=1000"],
    ),
    (
        "bad-dit-condition",
        SAMPLE_BASE,
        "model = dict(type='DiT-XL/2', condition='labels')",
        ["model.condition", "label_N"],
    ),
    (
        "model-max-length-mismatch",
        SAMPLE_BASE,
        "model['model_max_length'] = 120",
        ["model.model_max_length (120)", "text_encoder.model_max_length (16)"],
    ),
    (
        "flash-vs-backend",
        SAMPLE_BASE,
        "model['enable_flashattn'] = True\nmodel['attn_backend'] = 'math'",
        ["enable_flash_attn", "attn_backend"],
    ),
    (
        "legacy-and-new-spelling",
        SAMPLE_BASE,
        "model['enable_flashattn'] = True\nmodel['enable_flash_attn'] = False",
        ["enable_flash_attn", "enable_flashattn", "same setting"],
    ),
    ("sp-needs-zero2-seq", SAMPLE_BASE, "sp_size = 2", ["sp_size=2", "plugin='zero2-seq'"]),
    (
        "heads-not-divisible-by-sp",
        SAMPLE_BASE,
        "sp_size = 3\nplugin = 'zero2-seq'",
        ["model.num_heads (4)", "sp_size (3)"],
    ),
    (
        "seq-parallel-flag-without-sp",
        SAMPLE_BASE,
        "model['enable_sequence_parallelism'] = True",
        ["enable_sequence_parallelism", "sp_size > 1"],
    ),
    (
        "multi-resolution-mismatch",
        SAMPLE_BASE,
        "multi_resolution = 'STDiT2'",
        ["multi_resolution='STDiT2'", "STDiT2-XL/2"],
    ),
    (
        "steps-beyond-schedule",
        SAMPLE_BASE,
        "scheduler['num_sampling_steps'] = 2000",
        ["num_sampling_steps (2000)", "1000"],
    ),
    (
        "bad-respacing",
        SAMPLE_BASE,
        "scheduler['timestep_respacing'] = 'fast'",
        ["scheduler.timestep_respacing", "'fast'"],
    ),
    (
        "mask-strategy-syntax",
        SAMPLE_BASE,
        "reference_path = ['a.png']\nmask_strategy = ['0,x']",
        ["mask_strategy[0]", "'0,x'"],
    ),
    (
        "mask-strategy-loop-never-reached",
        SAMPLE_BASE,
        "reference_path = ['a.png']\nmask_strategy = ['1,0,0,0,1']",
        ["mask_strategy[0]", "loop_id 1", "loop=1"],
    ),
    (
        "mask-strategy-ref-out-of-range",
        SAMPLE_BASE,
        "reference_path = ['a.png']\nmask_strategy = ['0,1']",
        ["mask_strategy[0]", "ref_id 1", "1 reference"],
    ),
    (
        "mask-strategy-without-reference",
        SAMPLE_BASE,
        "mask_strategy = ['0']",
        ["mask_strategy", "reference_path"],
    ),
    (
        "reference-count-vs-prompts",
        SAMPLE_BASE,
        "reference_path = ['a.png', None]",
        ["reference_path has 2", "prompt has 1"],
    ),
    ("loop-needs-condition-frames", SAMPLE_BASE, "loop = 2", ["loop=2", "condition_frame_length"]),
    (
        "condition-frames-too-long",
        SAMPLE_BASE,
        "loop = 2\ncondition_frame_length = 8",
        ["condition_frame_length (8)", "num_frames (8)"],
    ),
    (
        "reference-with-dpm-solver",
        SAMPLE_BASE,
        "scheduler = dict(type='dpm-solver')\nreference_path = ['a.png']",
        ["dpm-solver", "reference_path"],
    ),
    ("end-before-start", SAMPLE_BASE, "start_index = 5\nend_index = 5", ["end_index (5)", "start_index (5)"]),
    ("ema-decay-above-one", SAMPLE_BASE, "ema_decay = 1.5", ["ema_decay", "less than or equal to 1"]),
    ("negative-grad-clip", SAMPLE_BASE, "grad_clip = -1.0", ["grad_clip", "greater than 0"]),
    (
        "secret-key",
        SAMPLE_BASE,
        "tracking = dict(backend='mlflow', password='hunter2')",
        ["tracking.password", "environment variables"],
    ),
    (
        "private-key",
        SAMPLE_BASE,
        "tracking = dict(backend='mlflow', private_key='-----BEGIN')",
        ["tracking.private_key", "environment variables"],
    ),
    (
        "secret-top-level",
        SAMPLE_BASE,
        "aws_secret_access_key = 'abc'",
        ["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"],
    ),
    (
        "password-in-url",
        SAMPLE_BASE,
        "tracking = dict(backend='mlflow', uri='http://u:pw@mlflow:5000')",
        ["tracking.uri", "password"],
    ),
    ("syntax-error", SAMPLE_BASE, "model = dict(type='STDiT-XL/2'", ["syntax error"]),
    ("exception-in-config", SAMPLE_BASE, "num_frames = 8 // 0", ["ZeroDivisionError"]),
    # training-layout cases
    (
        "bucket-unknown-resolution",
        TRAIN_BASE,
        "bucket_config['240P'] = {16: (1.0, 2)}",
        ["bucket_config['240P']", "did you mean '240p'"],
    ),
    (
        "bucket-keep-prob-above-one",
        TRAIN_BASE,
        "bucket_config['144p'][16] = (1.5, 6)",
        ["bucket_config['144p'][16]", "keep_prob", "1.5"],
    ),
    (
        "bucket-keep-prob-without-batch",
        TRAIN_BASE,
        "bucket_config['144p'][32] = (0.5, None)",
        ["bucket_config['144p'][32]", "keep_prob 0.5", "batch size"],
    ),
    (
        "bucket-bad-frame-key",
        TRAIN_BASE,
        "bucket_config['144p'][0] = (1.0, 2)",
        ["bucket_config['144p'][0]", "positive int"],
    ),
    (
        "bucket-bad-batch",
        TRAIN_BASE,
        "bucket_config['144p'][16] = (1.0, 0)",
        ["bucket_config['144p'][16]", "batch_size"],
    ),
    (
        "bucket-not-a-pair",
        TRAIN_BASE,
        "bucket_config['144p'][16] = 1.0",
        ["bucket_config['144p'][16]", "pair"],
    ),
    (
        "bucket-config-with-fixed-dataset",
        TRAIN_BASE,
        "dataset = dict(type='VideoTextDataset', data_path='m.csv')\nbatch_size = 2",
        ["bucket_config", "VariableVideoTextDataset", "'VideoTextDataset'"],
    ),
    (
        "variable-dataset-needs-buckets",
        TRAIN_BASE,
        "bucket_config = None",
        ["VariableVideoTextDataset", "bucket_config"],
    ),
    (
        "fixed-dataset-needs-batch-size",
        TRAIN_BASE,
        "bucket_config = None\ndataset = dict(type='VideoTextDataset', data_path='m.csv')",
        ["batch_size", "VideoTextDataset"],
    ),
    (
        "mask-ratios-sum",
        TRAIN_BASE,
        "mask_ratios['mask_no'] = 0.5",
        ["mask_ratios", "sum to 0.75", "must sum to 1"],
    ),
    (
        "mask-ratios-unknown-kind",
        TRAIN_BASE,
        "mask_ratios = {'mask_none': 1.0}",
        ["mask_ratios['mask_none']", "did you mean 'mask_no'"],
    ),
    (
        "mask-ratios-negative",
        TRAIN_BASE,
        "mask_ratios = {'mask_no': 1.2, 'mask_image_head': -0.2}",
        ["mask_ratios['mask_no']", "[0, 1]"],
    ),
    (
        "stdit2-hidden-size-not-divisible-by-3",
        TRAIN_BASE,
        "model['hidden_size'] = 64\nmodel['num_heads'] = 4",
        ["hidden_size (64)", "divisible by 3"],
    ),
    (
        "unknown-dataset-key",
        TRAIN_BASE,
        "dataset['datapath'] = 'x.csv'",
        ["dataset.datapath", "did you mean 'dataset.data_path'"],
    ),
    (
        "bad-transform",
        TRAIN_BASE,
        "dataset['transform_name'] = 'crop'",
        ["dataset.transform_name", "'resize_crop'"],
    ),
]


@pytest.mark.parametrize(("base", "extra", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_config_names_the_problem(tmp_path: Path, base: str, extra: str, needles: list[str]):
    path = tmp_path / "bad_config.py"
    path.write_text(base + extra + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from:\n{message}"


@pytest.mark.parametrize("base", [SAMPLE_BASE, TRAIN_BASE], ids=["sample", "train"])
def test_bases_are_valid(tmp_path: Path, base: str):
    path = tmp_path / "ok.py"
    path.write_text(base)
    load_config(path)


def test_all_problems_are_reported_at_once(tmp_path: Path):
    path = tmp_path / "many.py"
    path.write_text(SAMPLE_BASE + "batch_sise = 2\nmodel['depht'] = 3\nfps = 'fast'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 3
    assert isinstance(info.value, ValueError)


def test_missing_file_and_wrong_suffix(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.py")
    yaml = tmp_path / "cfg.yaml"
    yaml.write_text("a: 1\n")
    with pytest.raises(ConfigError, match=r"\.py"):
        load_config(yaml)


# A type that exists, but for another kind of component, is never suggested: hints come from one table per kind.
CROSS_KIND = [
    ("vae", "vae = dict(type='clip')", "clip", ["VideoAutoencoderKL", "identity"]),
    ("text_encoder", "text_encoder = dict(type='identity')", "identity", ["t5", "clip", "classes"]),
    ("scheduler", "scheduler = dict(type='DiT-XL/2')", "DiT-XL/2", ["iddpm", "dpm-solver"]),
    ("model", "model = dict(type='iddpm')", "iddpm", ["STDiT-XL/2", "PixArtMS-XL/2"]),
]


@pytest.mark.parametrize(
    ("section", "extra", "other_kind", "own"), CROSS_KIND, ids=[c[0] for c in CROSS_KIND]
)
def test_did_you_mean_suggests_only_names_of_the_same_kind(
    tmp_path: Path, section: str, extra: str, other_kind: str, own: list[str]
):
    path = tmp_path / "bad_type.py"
    path.write_text(SAMPLE_BASE + extra + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = [p for p in info.value.problems if p.startswith(f"{section}.type")]
    valid = problem.split("valid types: ", 1)[1]
    assert other_kind not in valid and "did you mean" not in problem
    assert all(name in valid for name in own), problem


def test_did_you_mean_picks_the_close_name_of_the_same_kind(tmp_path: Path):
    path = tmp_path / "typo.py"
    path.write_text(SAMPLE_BASE + "vae = dict(type='identiy')\nscheduler = dict(type='dpm_solver')\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "vae.type: unknown vae type 'identiy'; did you mean 'identity'?" in message
    assert "scheduler.type: unknown scheduler type 'dpm_solver'; did you mean 'dpm-solver'?" in message
