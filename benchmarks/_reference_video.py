"""Open-Sora 1.2's own clip reader, imported from a reference checkout given on the command line (no reference
code lives here), for ``benchmarks/data.py --reference``.

The reference's dataset loads a video with ``opensora.datasets.read_video.read_video(path, backend="av")``, which
is torchvision's pyav reader (``torchvision.io.video._read_from_stream``: decode every frame, keep them all, then
``frame.to_rgb().to_ndarray()`` each, stack into a ``[T, C, H, W]`` tensor) plus a ``gc.collect()``. torchvision
0.22+ no longer ships that reader and its compiled extensions need the torch they were built for, so the caller
passes a folder holding a torchvision <= 0.21 package (``pip install --no-deps --target DIR torchvision==0.21.0``)
whose pure-Python ``torchvision.io.video`` is imported without running ``torchvision/__init__`` (its compiled
parts are replaced by a stand-in that reports them missing, which the reader tolerates); ``get_video_backend``
answers ``"pyav"``, the reference's backend. The reference's ``opensora`` and ``opensora.datasets`` packages are
likewise imported without their ``__init__`` (which would build models and registries).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _no_compiled_library(name: str) -> None:
    raise OSError(f"torchvision's compiled {name} is not loaded by this benchmark")


def load_read_video(reference: Path, torchvision_dir: Path) -> Callable[..., Any]:
    """``read_video(path, backend="av") -> (uint8 [T, C, H, W] tensor, info)`` of the reference at ``reference``."""
    package = torchvision_dir / "torchvision" / "io" / "video.py"
    source = package.read_text() if package.exists() else ""
    if "_read_from_stream" not in source:
        raise SystemExit(
            f"{torchvision_dir} holds no torchvision with the pyav reader ({package}); install one with "
            "`pip install --no-deps --target DIR torchvision==0.21.0`"
        )
    if not (reference / "opensora" / "datasets" / "read_video.py").exists():
        raise SystemExit(f"{reference} is not an Open-Sora 1.2 checkout (no opensora/datasets/read_video.py)")
    _module("torchvision", __path__=[str(torchvision_dir / "torchvision")], get_video_backend=lambda: "pyav")
    _module("torchvision.extension", _load_library=_no_compiled_library)
    _module("opensora", __path__=[str(reference / "opensora")])
    _module("opensora.datasets", __path__=[str(reference / "opensora" / "datasets")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Failed to load image Python extension": expected, images unused
        return importlib.import_module("opensora.datasets.read_video").read_video
