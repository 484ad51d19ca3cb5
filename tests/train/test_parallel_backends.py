"""Process-group setup, the dp x sp mesh and the DDP backend (single process, plus a 2-rank gloo check)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from opensora_core.checkpoint import OptimizerFiles
from opensora_core.parallel import (
    DDPBackend,
    apply_sequence_parallel,
    backend_names,
    build_backend,
    build_mesh,
    init_distributed,
    mesh_coords,
)
from tests.train.conftest import free_port


def _single():
    env = init_distributed(env={})
    return env, build_mesh(env, 1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def test_single_process_environment():
    env = init_distributed(env={})
    assert (env.rank, env.world_size, env.is_distributed) == (0, 1, False)
    env.barrier()  # no-op
    assert env.broadcast_object({"a": 1}) == {"a": 1}
    t = torch.ones(2)
    assert torch.equal(env.all_reduce(t), torch.ones(2))
    env.close()


def test_bad_torchrun_environment_is_reported():
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        init_distributed(env={"RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed(env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="integer"):
        init_distributed(env={"WORLD_SIZE": "two"})


def test_mesh_coordinates_put_sp_groups_on_contiguous_ranks():
    assert [mesh_coords(r, 8, 2) for r in range(4)] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert mesh_coords(5, 8, 4) == (1, 1)
    with pytest.raises(ValueError, match="does not divide"):
        mesh_coords(0, 6, 4)
    env, mesh = _single()
    assert (mesh.dp_size, mesh.sp_size, mesh.dp_group, mesh.sp_group) == (1, 1, None, None)
    model = _model()
    assert apply_sequence_parallel(model, None) is model


def test_step_returns_pre_clip_norm_and_clips():
    env, mesh = _single()
    model = _model()
    backend = build_backend("ddp", model, mesh, lr=0.1, grad_clip=1e-3)
    assert backend.name == "ddp" and backend.model is model and backend.module is model
    loss = model(torch.randn(16, 4)).pow(2).sum() * 100
    backend.backward(loss)
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    norm = backend.step()
    assert norm == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())  # zeroed
    # clipped to 1e-3 before AdamW: Adam's first step moves each weight by ~lr regardless, so check the
    # optimizer saw clipped gradients through its first moment
    exp_avg = [backend.optimizer.state[p]["exp_avg"] for p in model.parameters()]
    clipped_norm = math.sqrt(sum(float((m / 0.1).pow(2).sum()) for m in exp_avg))
    assert clipped_norm == pytest.approx(1e-3, rel=1e-3)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_non_finite_gradients_skip_the_update():
    env, mesh = _single()
    model = _model()
    backend = build_backend("ddp", model, mesh, lr=0.1, grad_clip=None)
    before = [p.detach().clone() for p in model.parameters()]
    backend.backward(model(torch.randn(2, 4)).sum() * float("nan"))
    norm = backend.step()
    assert math.isnan(norm) and backend.last_step_skipped and not backend.last_step_overflow
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert backend.optimizer.state == {} or all(
        "step" not in s or float(s["step"]) == 0 for s in backend.optimizer.state.values()
    )


def test_optimizer_round_trip_and_lr(tmp_path: Path):
    env, mesh = _single()
    a = build_backend("ddp", _model(), mesh, lr=0.01, weight_decay=0.1)
    a.backward(a.model(torch.randn(4, 4)).sum())
    a.step()
    a.set_lr(0.5)
    assert a.lr == 0.5
    files = a.save_optimizer(OptimizerFiles(tmp_path))
    assert files == [tmp_path / "optimizer.pt"]
    b = build_backend("ddp", _model(), mesh, lr=0.01, weight_decay=0.1)
    b.load_optimizer(OptimizerFiles(tmp_path))
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sb["param_groups"][0]["lr"] == 0.5
    for k in sa["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(sa["state"][k][name]), torch.as_tensor(sb["state"][k][name]))
    with pytest.raises(FileNotFoundError, match="optimizer"):
        b.load_optimizer(OptimizerFiles(tmp_path / "missing"))


def test_model_state_dict_is_fp32_cpu_copy():
    env, mesh = _single()
    model = _model()
    backend = build_backend("ddp", model, mesh, lr=0.1)
    state = backend.model_state_dict()
    assert set(state) == set(model.state_dict())
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in state.values())
    state["0.weight"].add_(1.0)
    assert not torch.equal(state["0.weight"], model[0].weight)  # a copy


def test_precision_choices():
    env, mesh = _single()
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        build_backend("ddp", _model(), mesh, lr=0.1, dtype="fp16")
    with pytest.raises(ValueError, match="dtype"):
        build_backend("ddp", _model(), mesh, lr=0.1, dtype="int8")
    with pytest.raises(ValueError, match="fp32 master"):
        build_backend("ddp", _model().to(torch.bfloat16), mesh, lr=0.1)
    backend = build_backend("ddp", _model(), mesh, lr=0.1, dtype="bf16")
    with backend.autocast():
        out = backend.model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    backend.backward(out.float().sum())
    assert math.isfinite(backend.step())


def test_plugin_factory():
    env, mesh = _single()
    assert {"ddp", "fsdp2", "zero2", "zero2-seq"} <= set(backend_names())
    assert isinstance(build_backend("ddp", _model(), mesh, lr=0.1), DDPBackend)
    with pytest.raises(ValueError, match="not available"):
        build_backend("megatron", _model(), mesh, lr=0.1)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    env = init_distributed(
        env={
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    mesh = build_mesh(env, 1)
    torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
    backend = build_backend(
        "ddp",
        _model() if rank == 0 else nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)),
        mesh,
        lr=0.05,
    )
    torch.manual_seed(100)
    data = torch.randn(4, 4)
    x = data[rank * 2 : rank * 2 + 2]  # each rank half of the global batch
    loss = backend.model(x).pow(2).mean()
    backend.backward(loss)
    norm = backend.step()
    torch.save({"state": backend.model_state_dict(), "norm": norm}, os.path.join(out, f"rank{rank}.pt"))
    env.close()


@pytest.mark.integration
def test_two_rank_ddp_matches_single_process_on_the_global_batch(tmp_path: Path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    assert r0["norm"] == r1["norm"]
    # single process on the whole batch: mean over 4 samples = average of the two half-batch means
    env, mesh = _single()
    backend = build_backend("ddp", _model(), mesh, lr=0.05)
    torch.manual_seed(100)
    data = torch.randn(4, 4)
    losses = [backend.model(data[i * 2 : i * 2 + 2]).pow(2).mean() for i in range(2)]
    backend.backward((losses[0] + losses[1]) / 2)
    norm = backend.step()
    assert norm == pytest.approx(r0["norm"], rel=1e-5)
    for k, v in backend.model_state_dict().items():
        torch.testing.assert_close(v, r0["state"][k], rtol=1e-5, atol=1e-6)
