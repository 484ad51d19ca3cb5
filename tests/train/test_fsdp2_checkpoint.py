"""Integration: fsdp2 (2 gloo ranks) checkpoints hold full tensors, load into build_model, and resume exactly.

Under fsdp2 the model's state dict holds ``DTensor`` shards; the EMA keeps its own shards and gathers full
tensors when saved (a collective on every rank) and keeps each rank's part when loaded.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from opensora_core import checkpoint as ckpt
from opensora_core.config import load_config
from opensora_core.models import build_model
from opensora_core.train.components import model_build_kwargs
from opensora_core.train.ema import EMA
from tests.parallel.dist_harness import run_world
from tests.train.conftest import (
    TINY_OVERRIDES,
    TINY_TRAIN,
    tiny_cli_overrides,
    torchrun_command,
    train_env,
)

pytestmark = pytest.mark.integration

RUN_TIMEOUT = 180


def _torchrun(outputs: Path, data: str, log: Path, *extra: str) -> None:
    options = tiny_cli_overrides(data, plugin="fsdp2", max_steps=4, ckpt_every=2)
    args = [str(TINY_TRAIN), "--outputs", str(outputs), *extra, "--cfg-options", *options]
    with open(log, "w") as f:
        proc = subprocess.run(
            torchrun_command(2, args),
            env=train_env(),
            stdout=f,
            stderr=subprocess.STDOUT,
            timeout=RUN_TIMEOUT,
            cwd=str(TINY_TRAIN.parents[2]),
        )
    assert proc.returncode == 0, f"fsdp2 run failed ({proc.returncode}):\n{log.read_text()[-4000:]}"


def _checkpoints(outputs: Path) -> dict[int, Path]:
    refs = ckpt.list_checkpoints(str(next(outputs.glob("*-STDiT-XL-2"))))
    return {ref.global_step: Path(ref.uri) for ref in refs}


def _build_tiny_model(data: str) -> nn.Module:
    from opensora_core.models.text_encoders import build_text_encoder
    from opensora_core.models.vae import build_vae

    cfg = load_config(TINY_TRAIN, overrides={**TINY_OVERRIDES, "dataset.data_path": data})
    vae = build_vae(cfg.vae.as_dict())
    te = build_text_encoder(cfg.text_encoder.as_dict())
    return build_model(cfg.model.type, **model_build_kwargs(cfg, vae, te))


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_fsdp2_checkpoints_load_and_resume_bitwise(tiny_dataset: str, tmp_path: Path):
    # A: 4 uninterrupted steps with checkpoints at steps 2 and 4
    _torchrun(tmp_path / "a", tiny_dataset, tmp_path / "a.log")
    runs_a = _checkpoints(tmp_path / "a")
    assert sorted(runs_a) == [2, 4]
    for step, folder in runs_a.items():
        optimizer = ckpt.OptimizerFiles(folder)
        assert optimizer.consolidated.is_file() and not optimizer.shard(0).exists(), step
        for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
            state = ckpt.load_safetensors(folder / name)
            assert all(type(v) is torch.Tensor and v.dtype == torch.float32 for v in state.values())
            model = _build_tiny_model(tiny_dataset)
            model.load_state_dict(state, strict=True)  # full shapes, every key
    model_2 = ckpt.load_safetensors(runs_a[2] / ckpt.MODEL_FILE)
    model_4 = ckpt.load_safetensors(runs_a[4] / ckpt.MODEL_FILE)
    ema_4 = ckpt.load_safetensors(runs_a[4] / ckpt.EMA_FILE)
    assert _differing(model_2, model_4), "training did not change the weights"
    assert _differing(ema_4, model_4), "the EMA is not separate from the model"

    # B: resume from A's step-2 checkpoint (model, EMA shards, consolidated optimizer, sampler) to step 4.
    # Same world size, same shard layout and gloo reduction order: bitwise equal, EMA included.
    _torchrun(tmp_path / "b", tiny_dataset, tmp_path / "b.log", "--load", str(runs_a[2]))
    assert "resumed at epoch 0, step 2, global step 2" in (tmp_path / "b.log").read_text()
    final_b = _checkpoints(tmp_path / "b")[4]
    for name in (ckpt.MODEL_FILE, ckpt.EMA_FILE):
        a, b = ckpt.load_safetensors(runs_a[4] / name), ckpt.load_safetensors(final_b / name)
        assert not _differing(a, b), f"{name} differs after resume: {_differing(a, b)[:5]}"


# ------------------------------------------------------------------------------ EMA of a sharded model
def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    # odd first dims: shards of unequal size (3 rows over 2 ranks: 2 + 1; 1 row: 1 + 0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5), nn.Linear(5, 1))
    net[2].weight.requires_grad_(False)  # frozen: copied, not averaged
    net.register_buffer("scale", torch.tensor([2.0, 3.0]))
    return net


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _sgd_step(model: nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()


def _sharded_ema_worker(env) -> dict[str, list[str]]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    plain = _tiny_net()
    sharded = copy.deepcopy(plain)
    mesh = init_device_mesh("cpu", (env.world_size,))
    fully_shard(sharded[0], mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    ema_plain, ema_sharded = EMA(plain, decay=0.5), EMA(sharded, decay=0.5)
    assert ema_sharded.sharded and not ema_plain.sharded
    x = torch.arange(8.0).reshape(2, 4) / 8  # the same batch on both ranks: averaged gradient == plain's
    for _ in range(2):
        _sgd_step(plain, x)
        _sgd_step(sharded, x)
        ema_plain.update(plain)
        ema_sharded.update(sharded)
    reference = ema_plain.state_dict()
    out = {"state_dict": _differing(ema_sharded.state_dict(), reference)}
    # load full tensors into a fresh sharded EMA: every rank keeps its part
    other = EMA(sharded, decay=0.5)
    other.load_state_dict(reference)
    out["load_state_dict"] = _differing(other.state_dict(), reference)
    # copy_to a sharded model and to an unsharded one
    other.copy_to(sharded)
    out["copy_to_sharded"] = _differing(_full_state(sharded), reference)
    unsharded = _tiny_net()
    other.copy_to(unsharded)
    out["copy_to_plain"] = _differing(_full_state(unsharded), reference)
    # a plain EMA copied into the sharded model
    ema_plain.copy_to(sharded)
    out["plain_to_sharded"] = _differing(_full_state(sharded), reference)
    return out


def test_sharded_ema_matches_the_unsharded_ema():
    for rank, result in enumerate(run_world(_sharded_ema_worker, 2)):
        assert result == {k: [] for k in result}, f"rank {rank}: entries differ {result}"
