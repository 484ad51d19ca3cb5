"""Resume on a different world size (2 -> 1 and 1 -> 2 processes) for every backend that checkpoints optimizer
state: ddp (one replicated file), fsdp2 (consolidated file) and zero2 (ColossalAI Booster, TorchDDPPlugin on CPU,
on 2 processes; one process has no process group and runs zero2 as fsdp2, so 2 -> 1 and 1 -> 2 also cross the two
implementations, which share the consolidated file).

The saving world trains 2 steps, saves the weights and the optimizer, and takes a 3rd step as the uninterrupted
reference. The loading world rebuilds the model from the weights, loads the optimizer and takes the 3rd step.
Right after loading, the weights and the full optimizer state (gathered, keyed by parameter name) equal the
saved ones exactly. The 3rd step trains on the same global batch in both worlds (``train_steps`` fixes it per
step; with a different dp size each rank takes other rows of it), so the step only differs by the order of the
gradient reduction in fp32: the mean loss agrees to 1e-6, the weights to 1e-5 (relative).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from opensora_core.checkpoint import OptimizerFiles
from opensora_core.parallel import build_backend
from opensora_core.parallel.mesh import build_mesh
from tests.parallel.dist_harness import run_world
from tests.parallel.tiny_models import build_tiny
from tests.parallel.train_steps import diffusion_step, max_relative_difference, train

WEIGHTS = "weights.pt"  # the test's own copy of the weights (the trainer writes model.safetensors)


def full_optimizer_state(backend: Any) -> dict[str, Any]:
    """A copy of the whole optimizer state keyed by parameter name, on CPU (a collective; complete on rank 0).

    Copied: for unsharded CPU state ``get_optimizer_state_dict`` returns the live tensors, which the next
    step updates in place."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    optimizer = getattr(backend.optimizer, "optim", backend.optimizer)  # a Booster wraps the torch optimizer
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_optimizer_state_dict(backend.module, optimizer, options=options)
    return torch.utils._pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, state)


def _save_worker(env, plugin: str, folder: str) -> dict[str, Any]:
    mesh = build_mesh(env, 1)
    backend, _ = train(plugin, mesh, steps=2)
    weights = backend.model_state_dict()
    written = backend.save_optimizer(OptimizerFiles(Path(folder)))
    if env.rank == 0:
        torch.save(weights, Path(folder) / WEIGHTS)
    saved = full_optimizer_state(backend)
    loss, _ = diffusion_step(backend, mesh, 2)  # the uninterrupted 3rd step
    return {"optimizer": saved, "loss": loss, "third": backend.model_state_dict(), "written": written}


def _resume_worker(env, plugin: str, folder: str) -> dict[str, Any]:
    mesh = build_mesh(env, 1)
    weights = torch.load(Path(folder) / WEIGHTS, weights_only=True)
    model = build_tiny("stdit")
    model.load_state_dict(weights)
    backend = build_backend(plugin, model, mesh, lr=1e-3)
    backend.load_optimizer(OptimizerFiles(Path(folder)))
    loaded = full_optimizer_state(backend)
    weights_equal = all(torch.equal(v, weights[k]) for k, v in backend.model_state_dict().items())
    loss, norm = diffusion_step(backend, mesh, 2)
    return {
        "optimizer": loaded,
        "weights_equal": weights_equal,
        "loss": loss,
        "norm": norm,
        "third": backend.model_state_dict(),
    }


def _assert_same_state(loaded: Any, saved: Any, where: str = "optimizer") -> None:
    """Exact equality of nested optimizer state (tensors bitwise, everything else ==)."""
    if isinstance(saved, torch.Tensor):
        assert isinstance(loaded, torch.Tensor) and torch.equal(loaded, saved), where
    elif isinstance(saved, dict):
        assert loaded.keys() == saved.keys(), (where, sorted(set(loaded) ^ set(saved)))
        for key in saved:
            _assert_same_state(loaded[key], saved[key], f"{where}.{key}")
    elif isinstance(saved, (list, tuple)):
        assert len(loaded) == len(saved), where
        for i, (a, b) in enumerate(zip(loaded, saved, strict=True)):
            _assert_same_state(a, b, f"{where}[{i}]")
    else:
        assert loaded == saved, (where, loaded, saved)


_ZERO2 = pytest.param(
    "zero2",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("colossalai") is None, reason="zero2 resumes through ColossalAI's Booster"
    ),
)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("plugin", ["ddp", "fsdp2", _ZERO2])
@pytest.mark.parametrize(("save_world", "load_world"), [(2, 1), (1, 2)], ids=["2to1", "1to2"])
def test_resume_on_another_world_size(tmp_path, plugin, save_world, load_world):
    saving = run_world(_save_worker, save_world, plugin, str(tmp_path))
    saved = saving[0]
    assert saved["written"], "rank 0 wrote no optimizer file"
    resumed = run_world(_resume_worker, load_world, plugin, str(tmp_path))

    first = resumed[0]
    assert first["weights_equal"]
    assert first["optimizer"]["state"], "the loaded optimizer has no state"
    _assert_same_state(first["optimizer"], saved["optimizer"])
    for rank in resumed:
        assert rank["weights_equal"] and math.isfinite(rank["loss"]) and math.isfinite(rank["norm"])
        assert max_relative_difference(rank["third"], saved["third"]) < 1e-5
    # the loss curve continues: the mean of the ranks' losses is the loss of the whole global batch
    reference = sum(r["loss"] for r in saving) / len(saving)
    resumed_mean = sum(r["loss"] for r in resumed) / len(resumed)
    assert abs(resumed_mean - reference) < 1e-6, (resumed_mean, reference)


def _legacy_worker(env, folder: str) -> dict[str, bool]:
    """Checkpoints in the older layouts load on the world size that wrote them."""
    from torch.distributed.tensor import DTensor

    mesh = build_mesh(env, 1)
    files = OptimizerFiles(Path(folder))
    report: dict[str, bool] = {}

    # fsdp2 before consolidation: every rank saved its local shards (plain tensors) and the world size
    fsdp, _ = train("fsdp2", mesh, steps=2)
    opt = fsdp.optimizer.state_dict()
    opt["state"] = {
        i: {k: v.to_local().clone() if isinstance(v, DTensor) else v for k, v in entry.items()}
        for i, entry in opt["state"].items()
    }
    torch.save({"optimizer": opt, "world_size": env.world_size}, files.shard(env.rank))
    weights = fsdp.model_state_dict()
    saved = full_optimizer_state(fsdp)
    model = build_tiny("stdit")
    model.load_state_dict(weights)
    fresh = build_backend("fsdp2", model, mesh, lr=1e-3)
    fresh.load_optimizer(files)
    loaded = full_optimizer_state(fresh)
    if env.rank == 0:
        _assert_same_state(loaded, saved)
        report["fsdp2_shards"] = True

    # zero2 on CPU before consolidation: the Booster's unsharded optimizer.bin
    if importlib.util.find_spec("colossalai") is not None:
        boosted, _ = train("zero2", mesh, steps=2)
        files.booster_dir.mkdir(exist_ok=True)
        boosted.booster.save_optimizer(boosted.optimizer, str(files.booster_unsharded), shard=False)
        saved = full_optimizer_state(boosted)
        model = build_tiny("stdit")
        model.load_state_dict(boosted.model_state_dict())
        fresh = build_backend("zero2", model, mesh, lr=1e-3)
        fresh.load_optimizer(OptimizerFiles(Path(folder)))
        loaded = full_optimizer_state(fresh)
        if env.rank == 0:
            _assert_same_state(loaded, saved)
            report["booster_bin"] = True
    return report


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_older_layouts_load_on_the_same_world_size_and_refuse_another_clearly(tmp_path):
    from opensora_core.parallel.mesh import Mesh

    report = run_world(_legacy_worker, 2, str(tmp_path))[0]
    assert report["fsdp2_shards"]
    if importlib.util.find_spec("colossalai") is not None:
        assert report["booster_bin"]

    # per-rank shards of 2 processes on 1 process: an error naming the file and what to do
    single = Mesh(dp_size=1, dp_rank=0, dp_group=None, sp_size=1, sp_rank=0, sp_group=None)
    backend = build_backend("fsdp2", build_tiny("stdit"), single, lr=1e-3)
    shard = OptimizerFiles(tmp_path).shard(0)
    with pytest.raises(ValueError, match="written by 2 processes") as err:
        backend.load_optimizer(OptimizerFiles(tmp_path))
    assert str(shard) in str(err.value) and "--ckpt-path" in str(err.value)
