"""Integration: ``torchrun -m opensora_core.eval`` on 2 gloo ranks equals one process (metrics, video bytes,
validation loss), and the prompt split keeps every prompt's seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from opensora_core.eval.evaluate import prompt_shard
from tests.eval.tiny_checkpoint import REPO_ROOT, make_tiny_checkpoint
from tests.parallel.dist_harness import free_port


def test_prompt_shards_cover_the_prompts_in_order():
    for n, world in [(5, 2), (3, 4), (8, 3), (1, 1)]:
        shards = [prompt_shard(n, r, world) for r in range(world)]
        assert [i for a, b in shards for i in range(a, b)] == list(range(n))
        assert max(b - a for a, b in shards) - min(b - a for a, b in shards) <= 1


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, capsys):
    from opensora_core.eval.cli import main

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")
    assert main([str(tmp_path), str(tmp_path / "done")]) == 2
    assert "already holds an evaluation" in capsys.readouterr().err  # a finished evaluation is kept
    assert main([str(tmp_path), str(tmp_path / "out"), "--prompt-path", str(tmp_path / "none.txt")]) == 2
    assert "prompt file" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), str(tmp_path / "out"), "--prompt", "a cat"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main([str(tmp_path), str(tmp_path / "out"), "--tag", "no-equals-sign"]) == 2
    assert "--tag 'no-equals-sign' must look like KEY=VALUE" in capsys.readouterr().err


def test_cli_clip_model_scores_every_prompt(tmp_path: Path):
    from opensora_core.eval.cli import main

    ckpt = make_tiny_checkpoint(tmp_path / "run", seed=1)
    out = tmp_path / "out"
    argv = [str(ckpt), str(out), "--prompt", "a red circle moving left", "a blue square moving up"]
    argv += ["--weights", "ema", "--num-sampling-steps", "2", "--clip-model", "debug/tiny-clip"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["clip_model"] == "debug/tiny-clip"
    assert 0.0 <= report["metrics"]["clip_score"] <= 100.0


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return env


@pytest.mark.integration
@pytest.mark.slow
def test_torchrun_two_ranks_equals_one_process(tmp_path: Path):
    from opensora_core.data.synthetic import generate

    generate(tmp_path / "data", 3, size=16, num_frames=8, seed=0)
    ckpt = make_tiny_checkpoint(tmp_path / "run", seed=1)
    prompts = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]
    args = [
        str(ckpt),
        "OUT",
        "--prompt",
        *prompts,
        "--weights",
        "ema",
        "untrained",
        "--num-sampling-steps",
        "3",
        "--batch-size",
        "2",
        "--val-table",
        str(tmp_path / "data" / "meta.csv"),
        "--num-eval-timesteps",
        "2",
        "--val-batch-size",
        "2",  # 3 held-out clips: batches of 2 and 1, one per rank
        "--clip-model",
        "debug/tiny-clip",  # clip_score per prompt, split over the ranks like the videos
        "--device",
        "cpu",
        "--no-progress",
    ]
    one = tmp_path / "one"
    two = tmp_path / "two"
    plain = [sys.executable, "-m", "opensora_core.eval", *[str(one) if a == "OUT" else a for a in args]]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "opensora_core.eval",
        *[str(two) if a == "OUT" else a for a in args],
    ]
    for cmd in (plain, torchrun):
        proc = subprocess.run(cmd, env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((d / "report.json").read_text()) for d in (one, two)]
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["val_loss"] == reports[1]["val_loss"]  # per clip and timestep, same order
    assert reports[0]["eval_config_sha256"] == reports[1]["eval_config_sha256"]
    for variant in ("ema", "untrained"):
        files = sorted(p.name for p in (one / variant).glob("*.mp4"))
        assert files == [f"sample_{i}.mp4" for i in range(3)]
        assert sorted(p.name for p in (two / variant).glob("*.mp4")) == files
        for name in files:
            assert (one / variant / name).read_bytes() == (two / variant / name).read_bytes(), name
    assert (two / "preview" / "ema.png").is_file() and not (two / "rank1").exists()
