"""A few diffusion training steps of a tiny STDiT through a training backend (used by the parallel tests).

The global batch of every step is fixed by (seed, step); data-parallel rank ``d`` of ``dp`` takes rows
``d::dp`` of it, and the ranks of one sequence-parallel group take the same rows, noise and timesteps, so any
dp x sp layout trains on exactly the same samples as one process with the whole batch. ``device`` ("cpu" or
"cuda") is where the model and the batch live (the batch is drawn on the CPU and moved, so it does not depend on
the device).
"""

from __future__ import annotations

from typing import Any

import torch

from opensora_core.parallel import build_backend
from opensora_core.parallel.mesh import Mesh
from opensora_core.parallel.sequence import apply_sequence_parallel
from opensora_core.schedulers import build_scheduler
from tests.parallel.tiny_models import build_tiny, tiny_batch

GLOBAL_BATCH = 4


def global_batch(
    step: int, kind: str = "stdit"
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(model inputs, timesteps, noise) of the whole global batch at ``step``."""
    inputs = tiny_batch(kind, batch=GLOBAL_BATCH, seed=100 + step)
    g = torch.Generator().manual_seed(200 + step)
    t = torch.randint(0, 1000, (GLOBAL_BATCH,), generator=g)
    noise = torch.randn(inputs["x"].shape, generator=g)
    return inputs, t, noise


def local_rows(
    mesh: Mesh, step: int, kind: str = "stdit", device: str = "cpu"
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """This data-parallel rank's share of the global batch (the same on every rank of an sp group)."""
    inputs, t, noise = global_batch(step, kind)
    rows = slice(mesh.dp_rank, None, mesh.dp_size)
    return {k: v[rows].to(device) for k, v in inputs.items()}, t[rows].to(device), noise[rows].to(device)


def diffusion_step(
    backend: Any, mesh: Mesh, step: int, kind: str = "stdit", device: str = "cpu"
) -> tuple[float, float]:
    """One IDDPM training step; returns (this rank's loss, pre-clip grad norm)."""
    scheduler = build_scheduler("iddpm", timestep_respacing="")
    inputs, t, noise = local_rows(mesh, step, kind, device)
    x = inputs.pop("x")
    inputs.pop("timestep")  # the diffusion timesteps t replace the batch's own
    with backend.autocast():
        loss = scheduler.training_losses(backend.model, x, t, model_kwargs=inputs, noise=noise)["loss"].mean()
    backend.backward(loss)
    return float(loss.detach()), backend.step()


def train(
    plugin: str,
    mesh: Mesh,
    steps: int = 3,
    kind: str = "stdit",
    grad_clip: float | None = 1.0,
    device: str = "cpu",
    dtype: str = "fp32",
    **model_kw: Any,
) -> tuple[Any, list[tuple[float, float]]]:
    """Build a tiny model (+ sequence parallelism when ``mesh.sp_size > 1``) on ``device`` and train ``steps``
    steps in compute precision ``dtype``."""
    model = build_tiny(kind, **model_kw).to(device)
    apply_sequence_parallel(model, mesh.sp_group)
    backend = build_backend(plugin, model, mesh, lr=1e-3, grad_clip=grad_clip, dtype=dtype)
    history = [diffusion_step(backend, mesh, s, kind, device) for s in range(steps)]
    return backend, history


def resume_third_step(
    plugin: str,
    mesh: Mesh,
    directory: Any,
    grad_clip: float | None = 1.0,
    device: str = "cpu",
    dtype: str = "fp32",
) -> tuple[Any, list[Any]]:
    """Train 2 steps, save the weights and ``save_optimizer(directory)``, rebuild a fresh backend from them,
    ``load_optimizer`` and take step 3; returns (the resumed backend, the files ``save_optimizer`` returned)."""
    two, _ = train(plugin, mesh, steps=2, grad_clip=grad_clip, device=device, dtype=dtype)
    weights = two.model_state_dict()
    files = two.save_optimizer(directory)
    model = build_tiny("stdit")
    model.load_state_dict(weights)
    resumed = build_backend(plugin, model.to(device), mesh, lr=1e-3, grad_clip=grad_clip, dtype=dtype)
    resumed.load_optimizer(directory)
    diffusion_step(resumed, mesh, 2, device=device)
    return resumed, files


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """max over tensors of ||a - b||_inf / ||b||_inf (keys must match)."""
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    worst = 0.0
    for key, ref in b.items():
        if not ref.is_floating_point():
            assert torch.equal(a[key], ref), key
            continue
        scale = ref.abs().max().clamp_min(1e-12)
        worst = max(worst, float((a[key] - ref).abs().max() / scale))
    return worst
