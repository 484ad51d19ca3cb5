"""Import the Open-Sora reference (1.0 c861b98; 1.1 d599fd7 for STDiT2) from a checkout given on the command line, on a CPU.

No reference code lives in this repository: the benchmarks that measure the reference side by side call
:func:`load_opensora_v1` with the checkout and a ``pip --target`` folder holding timm 0.9.16:

    git -C <open-sora mirror> archive c861b98 | tar -x -C /tmp/ref10
    pip install --no-deps --target /tmp/refdeps timm==0.9.16

Modules the reference imports but that are absent or CUDA-only here are replaced before the import (the
pattern of ``tests/models/parity_data/generate_stdit2_mask.py``):

- ``xformers.ops.memory_efficient_attention`` with a ``BlockDiagonalMask``: what the kernel computes, one
  ``scaled_dot_product_attention`` per (query block, key block) pair of the packed sequence, so the stand-in
  does no more work than the kernel (a dense [sum(q), sum(kv)] mask would charge the reference for the
  off-diagonal blocks);
- timm by its own ``layers`` files (the package ``__init__`` pulls in torchvision);
- the mmengine registry by a no-op decorator, and the checkpoint helpers (ColossalAI, torchvision; never
  called here) by functions that raise when used.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

COMMIT = "c861b98"


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _package(name: str, path: Path) -> types.ModuleType:
    """An importable package whose ``__init__`` is not run (only its submodules are imported)."""
    return _module(name, __path__=[str(path)])


class _BlockDiagonalMask:
    """What ``xformers.ops.fmha.BlockDiagonalMask.from_seqlens(q_seqlen, kv_seqlen)`` describes."""

    def __init__(self, q_seqlen: list[int], kv_seqlen: list[int]) -> None:
        self.q_seqlen, self.kv_seqlen = [int(n) for n in q_seqlen], [int(n) for n in kv_seqlen]

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None):
        return cls(q_seqlen, q_seqlen if kv_seqlen is None else kv_seqlen)


def _memory_efficient_attention(q, k, v, p=0.0, attn_bias=None):
    """Softmax attention (scale 1/sqrt(D)) on [1, M, heads, D] tensors, block by block under ``attn_bias``."""
    if p != 0.0:
        raise ValueError("the xformers stand-in runs inference only (dropout p must be 0)")
    qh, kh, vh = (a.transpose(1, 2) for a in (q, k, v))  # [1, heads, M, D]
    if attn_bias is None:
        out = F.scaled_dot_product_attention(qh, kh, vh)
    else:
        out = torch.cat(
            [
                F.scaled_dot_product_attention(qb, kb, vb)
                for qb, kb, vb in zip(
                    qh.split(attn_bias.q_seqlen, dim=2),
                    kh.split(attn_bias.kv_seqlen, dim=2),
                    vh.split(attn_bias.kv_seqlen, dim=2),
                    strict=True,
                )
            ],
            dim=2,
        )
    return out.transpose(1, 2).contiguous()  # [1, M, heads, D], contiguous like the kernel's output


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{name} is not available with the CPU stand-ins of benchmarks/_reference.py")

    return fail


class _Registry:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def register_module(self, name=None, *args, **kwargs):
        if callable(name):
            return name
        return lambda obj: obj


def install_stand_ins(reference: Path, deps: Path) -> None:
    """Put ``reference`` (an Open-Sora 1.x checkout) and ``deps`` first on ``sys.path`` and install the CPU
    stand-ins of the module docstring, so the reference's ``opensora.models`` / ``opensora.schedulers`` modules
    import (1.0 STDiT and IDDPM, 1.1 STDiT2)."""
    reference, deps = Path(reference).resolve(), Path(deps).resolve()
    sys.path.insert(0, str(deps))
    sys.path.insert(0, str(reference))
    fmha = _module("xformers.ops.fmha", BlockDiagonalMask=_BlockDiagonalMask)
    ops = _module("xformers.ops", fmha=fmha, memory_efficient_attention=_memory_efficient_attention)
    _module("xformers", ops=ops)

    _package("timm", deps / "timm")
    _package("timm.layers", deps / "timm" / "layers")
    mlp = importlib.import_module("timm.layers.mlp")
    drop = importlib.import_module("timm.layers.drop")
    _package("timm.models", deps / "timm" / "models")
    _module("timm.models.vision_transformer", Mlp=mlp.Mlp)
    _module("timm.models.layers", DropPath=drop.DropPath, Mlp=mlp.Mlp)

    _module("mmengine", __path__=[])
    _module("mmengine.registry", Registry=_Registry)

    _package("opensora", reference / "opensora")
    _package("opensora.models", reference / "opensora" / "models")
    _package("opensora.utils", reference / "opensora" / "utils")
    _package("opensora.schedulers", reference / "opensora" / "schedulers")
    registry = _Registry()
    _module(
        "opensora.registry", MODELS=registry, SCHEDULERS=registry, build_module=_unavailable("build_module")
    )
    _module("opensora.utils.ckpt_utils", load_checkpoint=_unavailable("load_checkpoint"))


def load_opensora_v1(reference: Path, deps: Path) -> types.SimpleNamespace:
    """Import the 1.0 reference's STDiT and IDDPM modules; returns ``SimpleNamespace(stdit=..., iddpm=...)``.

    Raises FileNotFoundError naming the argument when ``reference`` or ``deps`` lacks the expected files.
    """
    reference, deps = Path(reference).resolve(), Path(deps).resolve()
    if not (reference / "opensora" / "models" / "stdit" / "stdit.py").is_file():
        raise FileNotFoundError(
            f"--reference {reference}: no opensora/models/stdit/stdit.py; give an Open-Sora checkout at {COMMIT}"
        )
    if not (deps / "timm" / "layers" / "mlp.py").is_file():
        raise FileNotFoundError(
            f"--reference-deps {deps}: no timm/layers/mlp.py; pip install --no-deps --target {deps} timm==0.9.16"
        )
    install_stand_ins(reference, deps)
    return types.SimpleNamespace(
        stdit=importlib.import_module("opensora.models.stdit.stdit"),
        iddpm=importlib.import_module("opensora.schedulers.iddpm"),
    )
