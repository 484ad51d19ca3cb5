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

if TYPE_CHECKING:
    from torch import nn

    from opensora_core.parallel.backends import DDPBackend, TrainBackend, backend_names, build_backend
    from opensora_core.parallel.dist import DistEnv, init_distributed
    from opensora_core.parallel.mesh import Mesh, build_mesh, mesh_coords

# Public names -> defining module, imported on first access: `opensora_core.parallel.registry` (the plugin
# table the config package reads) must stay importable without torch.
_LAZY = {
    "DDPBackend": "backends",
    "TrainBackend": "backends",
    "backend_names": "backends",
    "build_backend": "backends",
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
