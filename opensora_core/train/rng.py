"""Random state: derived per-step seeds and capture/restore of every generator a rank uses.

Training randomness is keyed, not streamed: the noise, timesteps, caption dropout, frame masks and VAE
posterior samples of a step come from generators seeded with ``derive_seed(seed, "step", dp_rank, step)``
(:func:`opensora_core.utils.seeding.derive_seed`), and
a sample's temporal crop from ``derive_seed(seed, "sample", epoch, index)``. A resumed run therefore draws
exactly what an uninterrupted run draws, whatever happened to the global generators in between, and all ranks
of one sequence-parallel group (same dp_rank) draw the same values.

The global generators (torch CPU and CUDA, numpy, Python ``random``) are still saved per rank in every
checkpoint and restored on resume (``capture_rng_state`` / ``restore_rng_state``), so any other consumer of them
continues where it stopped. The state is stored as tensors and plain Python values (loads with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and Python ``random`` from one integer."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / Python generator states as a ``weights_only``-loadable dict."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`capture_rng_state` (CUDA only when both sides have it)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            raise ValueError(
                f"RNG state holds {len(cuda)} CUDA generator(s) but {torch.cuda.device_count()} device(s) are "
                "visible; resume with the same CUDA_VISIBLE_DEVICES layout"
            )
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda])


def step_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
