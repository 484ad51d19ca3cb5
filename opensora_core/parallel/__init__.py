"""Parallel training: process groups, the dp x sp mesh and training backends.

    from opensora_core.parallel import init_distributed, build_mesh, apply_sequence_parallel, build_backend
    env = init_distributed()                        # torchrun env; single process when absent
    mesh = build_mesh(env, sp_size)                 # Mesh(dp_size, dp_rank, dp_group, sp_size, sp_rank, sp_group)
    apply_sequence_parallel(model, mesh.sp_group)   # no-op without sequence parallelism
    backend = build_backend("ddp", model, mesh, lr=1e-4, dtype="bf16", grad_clip=1.0)

Process groups are passed explicitly; nothing here keeps module-level parallel state. Importing this package
is cheap: the torch-backed modules load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opensora_core.parallel.registry import BACKENDS

if TYPE_CHECKING:
    from torch import nn

    from opensora_core.parallel.backends import DDPBackend, TrainBackend
    from opensora_core.parallel.dist import DistEnv, init_distributed
    from opensora_core.parallel.mesh import Mesh, build_mesh, mesh_coords

# Public names -> defining module, imported on first access: `opensora_core.parallel.registry` (the plugin
# table the config package reads) must stay importable without torch.
_LAZY = {
    "DDPBackend": "backends",
    "TrainBackend": "backends",
    "DistEnv": "dist",
    "init_distributed": "dist",
    "Mesh": "mesh",
    "build_mesh": "mesh",
    "mesh_coords": "mesh",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def apply_sequence_parallel(model: nn.Module, sp_group: Any) -> nn.Module:
    """Split the model's attention over the ranks of ``sp_group`` (Ulysses all-to-all); returns the model.

    A no-op when ``sp_group`` is None or has one rank (see ``opensora_core.parallel.sequence``).
    """
    if sp_group is None:
        return model
    from opensora_core.parallel import sequence

    return sequence.apply_sequence_parallel(model, sp_group)


def backend_names() -> list[str]:
    """Plugins :func:`build_backend` accepts (the keys of ``opensora_core.parallel.registry.BACKENDS``)."""
    return sorted(BACKENDS)


def build_backend(
    plugin: str,
    model: nn.Module,
    mesh: Mesh,
    *,
    lr: float,
    weight_decay: float = 0.0,
    dtype: str = "fp32",
    grad_clip: float | None = 1.0,
    adam_eps: float = 1e-8,
) -> TrainBackend:
    """Wrap ``model`` (on its device, fp32) for training with ``plugin`` (see ``parallel.backends``).

    Dispatches through the plugin table here, not in ``backends``, so the plugin modules can import the
    base class from ``backends`` without a circle.
    """
    if plugin not in BACKENDS:
        raise ValueError(
            f"plugin {plugin!r} is not available in this build; choose one of {sorted(BACKENDS)} "
            "(set plugin in the config)"
        )
    return BACKENDS[plugin].load_builder()(
        model,
        mesh,
        lr=lr,
        weight_decay=weight_decay,
        dtype=dtype,
        grad_clip=grad_clip,
        adam_eps=adam_eps,
    )


__all__ = [
    "DDPBackend",
    "DistEnv",
    "Mesh",
    "TrainBackend",
    "apply_sequence_parallel",
    "backend_names",
    "build_backend",
    "build_mesh",
    "init_distributed",
    "mesh_coords",
]
