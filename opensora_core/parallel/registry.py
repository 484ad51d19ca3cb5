"""Training backends: each `plugin`'s builder and capabilities, declared once.

`BACKENDS` maps a `plugin` name to the backend constructor (imported on first build, called as
`builder(model, mesh, lr=..., weight_decay=..., dtype=..., grad_clip=..., adam_eps=...)`) and its
:class:`BackendCaps`. A backend has no config section of its own: its settings are top-level RunConfig keys
(`plugin`, `sp_size`, `lr`, ...). `opensora_core.config` takes the valid `plugin` values from this table and
`parallel.build_backend` dispatches through it. Imports nothing heavy.

Add a backend: write its module (say `parallel/foo.py` with `FooBackend(TrainBackend)`) and add one entry
`"foo": Entry(None, "opensora_core.parallel.foo:FooBackend", BackendCaps(sequence_parallel=False))`.
"""

from __future__ import annotations

from dataclasses import dataclass

from opensora_core.entry import Entry, lookup


@dataclass(frozen=True)
class BackendCaps:
    """sequence_parallel: reduces gradients over dp x sp ranks, so it may train with sp_size > 1."""

    sequence_parallel: bool


BACKENDS: dict[str, Entry[BackendCaps]] = {
    "zero2": Entry(
        None, "opensora_core.parallel.colossal:zero2_backend", BackendCaps(sequence_parallel=False)
    ),
    "zero2-seq": Entry(
        None, "opensora_core.parallel.colossal:zero2_backend", BackendCaps(sequence_parallel=True)
    ),
    "ddp": Entry(None, "opensora_core.parallel.backends:DDPBackend", BackendCaps(sequence_parallel=False)),
    "fsdp2": Entry(None, "opensora_core.parallel.fsdp:FSDP2Backend", BackendCaps(sequence_parallel=False)),
}


def backend_caps(plugin: str) -> BackendCaps:
    """Capabilities of training backend `plugin` (ValueError listing the plugins when unknown)."""
    return lookup(BACKENDS, plugin, "plugin").caps
