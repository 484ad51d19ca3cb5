"""`python -m opensora_core.sample` as a subprocess: plain, --num-sample, long video, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from opensora_core.data.video_io import write_video
from opensora_core.sample.writer import read_sample

REPO = Path(__file__).resolve().parents[2]
TINY = "configs/debug/tiny_sample.py"


def run_cli(save_dir: Path, *args: str, config: str = TINY) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "opensora_core.sample", config, "--save-dir", str(save_dir)]
    cmd += ["--num-sampling-steps", "2", "--no-progress", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only contend on a busy machine
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def video_meta(path: Path) -> tuple[int, float, tuple[int, int]]:
    """(decoded frames, fps, (H, W)) of an mp4."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), float(stream.average_rate), frames[0].shape[:2]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    image = np.zeros((40, 48, 3), np.uint8)
    image[:, :24] = 255  # left half white
    Image.fromarray(image).save(root / "ref.png")
    clip = np.random.default_rng(0).integers(0, 255, (12, 36, 36, 3), dtype=np.uint8)
    write_video(root / "ref.mp4", clip, fps=8)
    return {"png": root / "ref.png", "mp4": root / "ref.mp4", "root": root}


def test_plain(tmp_path):
    res = ok(run_cli(tmp_path))
    for i in range(2):
        path = tmp_path / f"sample_{i}.mp4"
        assert f"saved {path}" in res.stdout
        assert video_meta(path) == (8, 8.0, (32, 32))  # tiny config: 8 frames at fps 8 // frame_interval 1
        assert (tmp_path / "preview" / f"sample_{i}.png").is_file()
    assert f"wrote 2 sample(s) to {tmp_path}" in res.stdout
    assert (tmp_path / "sample_config.py").is_file()


def test_num_sample_and_prompt_file(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# eval prompts\n\nzero\none\n\n# two is next\ntwo\n")
    out = tmp_path / "out"
    ok(
        run_cli(
            out, "--prompt-path", str(prompts), "--num-sample", "2", "--start-index", "1", "--batch-size", "3"
        )
    )
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["sample_1-0.mp4", "sample_1-1.mp4", "sample_2-0.mp4", "sample_2-1.mp4"]
    for name in names:
        assert video_meta(out / name)[0] == 8
    grid = Image.open(out / "preview" / "sample_1.png")
    assert grid.size == (8 * 32 + 7 * 2, 2 * 32 + 2)  # one row per sample, 8 frames each


def test_long_video_with_image_reference_and_mask_strategy(tmp_path, media):
    json_ref = f'{{"reference_path": "{media["mp4"]}", "mask_strategy": "0,0,-4,-4,4,0.5"}}'
    res = ok(
        run_cli(
            tmp_path,
            "--loop", "2",
            "--condition-frame-length", "4",
            "--prompt", "|0|a red ball|1|a blue ball", "a cube" + json_ref,
            "--reference-path", str(media["png"]), "None",
            "--mask-strategy", "0,0,0,0,1,0", "None",
        )
    )  # fmt: skip
    expected = 2 * (8 - 4) + 4
    for i in range(2):
        frames, fps, size = video_meta(tmp_path / f"sample_{i}.mp4")
        assert (frames, fps, size) == (expected, 8.0, (32, 32)), res.stdout
    first = read_sample(tmp_path / "sample_0.mp4")[0].astype(float)
    assert first[:, :12].mean() > 200 and first[:, 20:].mean() < 60  # frame 0 is the reference image


BAD_INPUTS = {
    "malformed mask strategy": (
        ["--prompt", "x", "--reference-path", "{png}", "--mask-strategy", "0,x"],
        "'0,x'",
    ),
    "reference index out of range": (
        ["--prompt", "x", "--reference-path", "{png}", "--mask-strategy", "0,1"],
        "ref_id 1",
    ),
    "reference index out of range in a JSON suffix": (
        ["--prompt", 'x{{"reference_path": "{png}", "mask_strategy": "0,3"}}'],
        "reference index 3",
    ),
    "missing reference file": (
        ["--prompt", "x", "--reference-path", "{root}/nope.png", "--mask-strategy", "0"],
        "nope.png' does not exist",
    ),
    "malformed file:// reference": (
        ["--prompt", "x", "--reference-path", "file://host/a.png", "--mask-strategy", "0"],
        "file:// URIs must be absolute",
    ),
    "empty prompt file": (["--prompt-path", "{root}/empty.txt"], "empty.txt' has no prompts"),
    "mask strategy loop never reached": (
        ["--prompt", "x", "--reference-path", "{png}", "--mask-strategy", "3"],
        "loop_id 3",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_nonzero_naming_the_value_and_keeps_videos(tmp_path, media, case):
    (media["root"] / "empty.txt").write_text("\n# nothing here\n\n")
    args, needle = BAD_INPUTS[case]
    args = [a.format(png=media["png"], root=media["root"]) for a in args]
    kept = tmp_path / "sample_0.mp4"
    kept.write_bytes(b"an earlier video")
    res = run_cli(tmp_path, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error:" in res.stderr and needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert kept.read_bytes() == b"an earlier video"


def test_checkpoint_mismatch_exits_nonzero(tmp_path):
    import torch
    from safetensors.torch import save_file

    from opensora_core.models import build_model

    model = build_model(
        "STDiT-XL/2", depth=2, hidden_size=64, num_heads=4, patch_size=(1, 4, 4), input_size=(8, 32, 32),
        in_channels=3, caption_channels=32, model_max_length=16,
    )  # fmt: skip
    ckpt = tmp_path / "run" / "epoch0-global_step4"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "ema.safetensors"))
    with torch.no_grad():
        res = run_cli(
            tmp_path / "out", "--ckpt-path", str(tmp_path / "run"), "--cfg-options", "model.depth=1"
        )
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ema.safetensors does not fit" in res.stderr and "model.depth=1" in res.stderr, res.stderr


def test_failure_mid_run_keeps_the_videos_already_written(tmp_path):
    bad = 'b{"reference_path": "http://127.0.0.1:9/ref.png", "mask_strategy": "0"}'
    res = run_cli(tmp_path, "--batch-size", "1", "--prompt", "a", bad)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "http://127.0.0.1:9/ref.png" in res.stderr and "could not be downloaded" in res.stderr
    assert video_meta(tmp_path / "sample_0.mp4")[0] == 8
    assert not (tmp_path / "sample_1.mp4").exists()
