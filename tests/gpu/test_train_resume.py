"""A bf16 train step through the zero2 and fsdp2 backends at world size 1, saved and resumed bitwise.

Each check runs in one spawned process that opens a process group of size 1 (nccl on CUDA, gloo on CPU;
``init_distributed`` alone opens none for one process, and ColossalAI's Booster needs one), so the backend
takes its distributed path. Three uninterrupted steps of a tiny
STDiT are compared with two steps, a save (consolidated fp32 weights + ``save_optimizer``), a fresh backend
loaded from them, and step three: every weight must be bitwise equal. Deterministic algorithms are on
(``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts), so a difference means state was lost in the round trip.

- zero2 on CUDA is ColossalAI's ``LowLevelZeroPlugin(stage=2, precision=bf16)`` (working weights in bf16, fp32
  master shards); it needs the ColossalAI extra and skips with the install line without it. On CPU zero2 is the
  Booster's TorchDDPPlugin, covered by tests/parallel/test_colossal_backend.py.
- fsdp2 runs on CPU too (one rank does not shard: the fused/foreach-free AdamW + autocast path of the backend).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from opensora_core.parallel.dist import init_distributed
from opensora_core.parallel.mesh import build_mesh
from tests.gpu.devices import CPU, CUDA
from tests.parallel.dist_harness import run_world
from tests.parallel.train_steps import resume_third_step, train

CLIP = 0.05  # small enough that the tiny model's gradients are clipped (the clip state must round-trip too)


def _worker(env, plugin: str, device: str, backend: str, tmp: str) -> dict[str, object]:
    torch.use_deterministic_algorithms(True)
    dist.init_process_group(backend, rank=0, world_size=1)  # MASTER_ADDR/PORT come from run_world
    try:
        return _train_and_resume(init_distributed(), plugin, device, tmp)  # reuses the open group
    finally:
        dist.destroy_process_group()


def _train_and_resume(env, plugin: str, device: str, tmp: str) -> dict[str, object]:
    mesh = build_mesh(env, 1)
    straight, history = train(plugin, mesh, steps=3, grad_clip=CLIP, device=device, dtype="bf16")
    resumed, files = resume_third_step(plugin, mesh, Path(tmp), grad_clip=CLIP, device=device, dtype="bf16")
    a, b = resumed.model_state_dict(), straight.model_state_dict()
    return {
        "backend": resumed.name,
        "group": dist.get_backend(),
        "finite": all(torch.isfinite(torch.tensor(h)).all().item() for h in history),
        "files": [Path(f).name for f in files],
        "differing": sorted(k for k in b if not torch.equal(a[k], b[k])),
        "max_abs": max(float((a[k].float() - b[k].float()).abs().max()) for k in b),
    }


def _run(plugin: str, device: str, tmp_path: Path, monkeypatch) -> dict[str, object]:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # inherited by the spawned rank
    backend = "nccl" if device == "cuda" else "gloo"
    (report,) = run_world(_worker, 1, plugin, device, backend, str(tmp_path), backend=backend)
    assert report["group"] == backend
    assert report["finite"], report
    assert report["files"], "save_optimizer wrote nothing"
    assert report["differing"] == [], f"resumed weights differ (max abs {report['max_abs']:.3e}): {report}"
    return report


@pytest.mark.timeout(300)
@pytest.mark.parametrize("device", [CUDA])
def test_zero2_low_level_zero_resumes_bitwise(device: str, tmp_path: Path, monkeypatch):
    from tests.parallel.test_colossal_backend import require_colossalai

    require_colossalai()
    report = _run("zero2", device, tmp_path, monkeypatch)
    assert report["backend"] == "colossalai-zero2", report  # LowLevelZero, not the TorchDDP/fsdp2 fallbacks


@pytest.mark.timeout(300)
@pytest.mark.parametrize("device", [CPU, CUDA])
def test_fsdp2_resumes_bitwise(device: str, tmp_path: Path, monkeypatch):
    report = _run("fsdp2", device, tmp_path, monkeypatch)
    assert report["backend"] == "fsdp2", report
    assert report["files"] == ["optimizer_rank00000.pt"], report
    assert os.path.isfile(tmp_path / "optimizer_rank00000.pt")
