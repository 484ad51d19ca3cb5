"""Chaos: the training pod's own command (supervisor -> torchrun -> 2 gloo ranks) preempted and relaunched.

The command is the one the launcher puts into the PyTorchJob (``TrainingJobSpec.container_command`` with the
train step's arguments, ``--load latest`` included); torchrun reads its layout from the ``PET_*`` variables the
Training Operator sets. SIGTERM goes to the top process only, as the kubelet sends it to the container's PID 1.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from launchers.spec import TrainingJobSpec
from launchers.train import training_args
from opensora_core.train import checkpoint as ckpt
from opensora_core.train.preemption import PREEMPTED_EXIT_CODE
from tests.train.conftest import TINY_OVERRIDES, TINY_TRAIN, free_port, kill_tree, train_env

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 300
REPO = TINY_TRAIN.parents[2]


def _pod_command(data_path: str, outputs: Path, **options: object) -> list[str]:
    values = {**TINY_OVERRIDES, **options}
    cfg_options = [f"{k}={v}" for k, v in values.items()]
    args = training_args(str(TINY_TRAIN), data_path, str(outputs), cfg_options)
    spec = TrainingJobSpec(
        name="chaos", image="img", config=args[0], args=args[1:], gpus_per_node=0, procs_per_node=2
    )
    command = spec.container_command()
    assert command[:4] == ["python", "-m", "opensora_core.train.supervise", "torchrun"]
    assert "--load" in command and command[command.index("--load") + 1] == "latest"
    return command


def _pod_env(**extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `python` and `torchrun` of this environment
    return train_env(
        PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
        PET_NNODES="1",
        PET_NPROC_PER_NODE="2",
        PET_NODE_RANK="0",
        PET_MASTER_ADDR="127.0.0.1",
        PET_MASTER_PORT=str(free_port()),
        **extra,
    )


def _start(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            command, env=_pod_env(**env), stdout=f, stderr=subprocess.STDOUT, cwd=str(REPO)
        )


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, count: int = 1) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if len(re.findall(pattern, text)) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {pattern!r}:\n{text[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {pattern!r} in {log}")


def _finish(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        print(log.read_text()[-1500:])


def _final(outputs: Path) -> Path:
    exps = sorted(outputs.glob("*-STDiT-XL-2"))
    assert [p.name for p in exps] == ["000-STDiT-XL-2"]  # every launch wrote into the one experiment folder
    return Path(ckpt.list_checkpoints(str(exps[0]))[-1].uri)


def _assert_bitwise_equal(a: Path, b: Path) -> None:
    assert a.name == b.name
    for name in ("model.safetensors", "ema.safetensors"):
        ta, tb = ckpt.load_safetensors(a / name), ckpt.load_safetensors(b / name)
        assert ta.keys() == tb.keys()
        assert [k for k in ta if not torch.equal(ta[k], tb[k])] == [], name
    opt_a = torch.load(a / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    opt_b = torch.load(b / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(opt_a[k]["exp_avg_sq"], opt_b[k]["exp_avg_sq"]) for k in opt_a)


def _resumed_step(log: Path) -> int:
    text = log.read_text()
    m = re.search(r"resumed at epoch \d+, step \d+, global step (\d+)", text)
    assert m, text[-3000:]
    return int(m.group(1))


def test_sigterm_saves_exits_resumable_and_resume_is_bitwise_equal(tiny_dataset: str, tmp_path: Path):
    # 8 steps per epoch (16 clips, batch 1 x 2 ranks); 40 steps leave time to signal mid-run
    opts = {"max_steps": 40, "ckpt_every": 16, "batch_size": 1}
    ref = _start(_pod_command(tiny_dataset, tmp_path / "a", **opts), tmp_path / "a.log")
    cmd = _pod_command(tiny_dataset, tmp_path / "b", **opts)
    first = _start(cmd, tmp_path / "b1.log")
    _wait_for(tmp_path / "b1.log", r"step=3 ", first)
    t_signal = time.monotonic()
    first.send_signal(signal.SIGTERM)  # the kubelet's SIGTERM to PID 1
    code = _finish(first, tmp_path / "b1.log")
    stop_s = time.monotonic() - t_signal
    log1 = (tmp_path / "b1.log").read_text()
    assert code == PREEMPTED_EXIT_CODE, log1[-3000:]
    m = re.search(r"preempted after global step (\d+), resumable from (\S+) \(saved now\)", log1)
    assert m, log1[-3000:]
    stopped_at = int(m.group(1))
    assert 3 <= stopped_at < 40 and m.group(2).endswith(f"global_step{stopped_at}")
    last_logged = max(int(s) for s in re.findall(r"step=(\d+) ", log1))
    assert last_logged == stopped_at  # no step ran after the agreed stop: nothing lost

    t_start = time.monotonic()
    second = _start(cmd, tmp_path / "b2.log")  # the same command, as a restarted pod runs it
    _wait_for(tmp_path / "b2.log", rf"step={stopped_at + 1} ", second)
    resume_s = time.monotonic() - t_start
    assert _finish(second, tmp_path / "b2.log") == 0
    assert _resumed_step(tmp_path / "b2.log") == stopped_at
    assert _finish(ref, tmp_path / "a.log") == 0
    _assert_bitwise_equal(_final(tmp_path / "a"), _final(tmp_path / "b"))
    print(
        f"MEASURED sigterm: stopped at step {stopped_at}, lost 0 steps, exit after {stop_s:.1f}s, "
        f"relaunch to first new step {resume_s:.1f}s"
    )


@pytest.mark.slow  # ~45 s; tests/train/test_train_distributed.py covers SIGKILL + --load latest in `make test`
def test_sigkill_resumes_from_last_periodic_checkpoint_bitwise_equal(tiny_dataset: str, tmp_path: Path):
    opts = {"max_steps": 8, "ckpt_every": 4, "batch_size": 1}
    ref = _start(_pod_command(tiny_dataset, tmp_path / "a", **opts), tmp_path / "a.log")
    cmd = _pod_command(tiny_dataset, tmp_path / "b", **opts)
    first = _start(cmd, tmp_path / "b1.log", OPENSORA_DEBUG_PAUSE_AFTER_STEP="6")
    try:
        _wait_for(tmp_path / "b1.log", "PAUSED after step 6", first, count=2)
    finally:
        kill_tree(first)  # SIGKILL: no handler runs, as on a node loss
    assert [r.global_step for r in ckpt.list_checkpoints(str(tmp_path / "b" / "000-STDiT-XL-2"))] == [4]
    second = _start(cmd, tmp_path / "b2.log")
    assert _finish(second, tmp_path / "b2.log") == 0
    assert _resumed_step(tmp_path / "b2.log") == 4  # work lost: steps 5 and 6
    assert _finish(ref, tmp_path / "a.log") == 0
    _assert_bitwise_equal(_final(tmp_path / "a"), _final(tmp_path / "b"))
