"""fsdp2 backend (FSDP2, ZeRO-2-like): trains as ddp, resumes exactly from per-rank shards, works with SP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora_core.parallel import build_backend
from opensora_core.parallel.fsdp import FSDP2Backend, optimizer_file
from opensora_core.parallel.mesh import Mesh, build_mesh
from tests.parallel.dist_harness import run_world
from tests.parallel.tiny_models import build_tiny
from tests.parallel.train_steps import diffusion_step, max_relative_difference, resume_third_step, train

CLIP = 0.05  # below the tiny model's gradient norms: every step clips
SINGLE = Mesh(dp_size=1, dp_rank=0, dp_group=None, sp_size=1, sp_rank=0, sp_group=None)


def test_single_process_fsdp2_is_the_plain_module(tmp_path):
    mesh = SINGLE
    model = build_tiny("stdit")
    backend = build_backend("fsdp2", model, mesh, lr=1e-3)
    assert isinstance(backend, FSDP2Backend) and backend.model is model
    diffusion_step(backend, mesh, 0)
    assert backend.save_optimizer(tmp_path) == [tmp_path / optimizer_file(0)]
    backend.load_optimizer(tmp_path)
    assert set(backend.model_state_dict()) == set(model.state_dict())


def _fsdp_vs_ddp_worker(env, tmp: str) -> dict[str, float]:
    from torch.distributed.tensor import DTensor

    mesh = build_mesh(env, 1)
    ddp, ddp_hist = train("ddp", mesh, grad_clip=CLIP)
    fsdp, fsdp_hist = train("fsdp2", mesh, grad_clip=CLIP)
    sharded = [p for p in fsdp.module.parameters() if isinstance(p, DTensor)]
    report = {
        "weights": max_relative_difference(fsdp.model_state_dict(), ddp.model_state_dict()),
        "loss": max(abs(a[0] - b[0]) for a, b in zip(fsdp_hist, ddp_hist, strict=True)),
        "grad_norm": max(abs(a[1] - b[1]) / b[1] for a, b in zip(fsdp_hist, ddp_hist, strict=True)),
        "sharded_fraction": len(sharded) / len(list(fsdp.module.parameters())),
        "clipped": float(min(h[1] for h in ddp_hist) > CLIP),  # the clip path was exercised
    }

    # resume: 2 steps, save (per rank), fresh backend from the saved weights + optimizer, 1 more step
    resumed, files = resume_third_step("fsdp2", mesh, tmp, grad_clip=CLIP)
    report["resume"] = max_relative_difference(resumed.model_state_dict(), fsdp.model_state_dict())
    report["files"] = float(files == [Path(tmp) / optimizer_file(env.rank)])

    # fsdp2 under sequence parallelism (dp 1 x sp 2, STDiT2) == one process with the whole batch
    sp_backend, _ = train("fsdp2", build_mesh(env, 2), kind="stdit2", grad_clip=CLIP)
    single, _ = train("ddp", SINGLE, kind="stdit2", grad_clip=CLIP)
    report["sp"] = max_relative_difference(sp_backend.model_state_dict(), single.model_state_dict())
    return report


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_two_rank_fsdp2_trains_like_ddp_and_resumes_from_per_rank_shards(tmp_path):
    reports = run_world(_fsdp_vs_ddp_worker, 2, str(tmp_path))
    for report in reports:
        assert report["weights"] < 1e-5, report
        assert report["loss"] < 1e-6 and report["grad_norm"] < 1e-5, report
        assert report["sharded_fraction"] == 1.0, report
        assert report["clipped"] == 1.0, report
        assert report["resume"] < 1e-6, report
        assert report["files"] == 1.0, report
        assert report["sp"] < 1e-4, report
    assert sorted(p.name for p in tmp_path.iterdir()) == [optimizer_file(0), optimizer_file(1)]
    state = torch.load(tmp_path / optimizer_file(1), weights_only=True)
    assert state["world_size"] == 2
