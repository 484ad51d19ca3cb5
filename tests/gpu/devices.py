"""Device parameters for the GPU checks: every test runs on "cuda" (marked ``gpu``) and, where the logic is
device-independent, on "cpu" as well, so `make test` (``-m "not gpu"``) keeps the CUDA code path exercised.

``pytest -m gpu tests/gpu`` selects exactly the CUDA variants; without a GPU they skip with :data:`NO_CUDA`.
"""

from __future__ import annotations

import pytest
import torch

NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False); run `make gpu-check` on a GPU machine"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, requires_cuda], id="cuda")
CPU = pytest.param("cpu", id="cpu")
CPU_AND_CUDA = [CPU, CUDA]


def rel_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``||ours - reference|| / ||reference||`` in fp32 (Frobenius norms over the whole tensor)."""
    ours, reference = ours.float(), reference.float()
    return float((ours - reference).norm() / reference.norm().clamp_min(1e-12))
