"""Generate ``os12_eval_loss.safetensors`` / ``.json``: Open-Sora 1.2.0's validation loss (commit 17cce90).

This script contains no reference code: it imports the reference's rectified-flow scheduler from a checkout
given on the command line and runs the procedure of its ``eval/loss/eval_loss.py`` on CPU in float32:
per bucket, for each ``t`` of ``torch.linspace(0, num_timesteps, num_eval_timesteps + 2)[1:-1]``, the
batches' ``scheduler.training_losses(model, x, model_args, t=tensor([t] * B))["loss"]`` summed over the
bucket's samples and divided by their number; the bucket's loss is the mean over the timesteps. The one
change: the noise is passed in (fixed, stored here) instead of drawn by ``randn_like`` from the global RNG,
which is what ``opensora_core.eval.val_loss`` does differently on purpose.

    git -C <open-sora mirror> archive 17cce90 | tar -x -C /tmp/ref12
    python tests/models/parity_data/generate_os12_eval_loss.py --reference /tmp/ref12

The model is this repository's tiny STDiT3 (its forward has its own parity test, tests/models/test_stdit3.py)
with random weights stored alongside (``w.*``); only ``opensora/schedulers/rf/*`` and the IDDPM helpers it
imports come from the reference (the mmengine registry is replaced by a no-op decorator).
Cases: two buckets (``img``: 1 latent frame, batches of 2 and 1 clips; ``vid``: 5 latent frames, one batch
of 2), inputs ``in.<bucket>.<batch>.{x,noise,y,mask,fps,height,width}``, outputs ``out.<bucket>.per_t``
(per-timestep loss), ``out.<bucket>.per_sample`` ([samples, timesteps]) and ``out.<bucket>.loss``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT_DIR = Path(__file__).resolve().parent
NAME = "os12_eval_loss"
COMMIT = "17cce90"
SEED = 20240712
NUM_EVAL_TIMESTEPS = 5  # times 166.67, 333.33, ...: not integers
TINY = dict(
    depth=2,
    hidden_size=32,
    num_heads=2,
    caption_channels=16,
    model_max_length=6,
    class_dropout_prob=0.0,
    input_sq_size=64,
    qk_norm=True,
)
# bucket -> (latent [C, T, H, W], pixel (height, width, fps), batch sizes)
BUCKETS = {"img": ((4, 1, 8, 8), (64, 64, 120), (2, 1)), "vid": ((4, 5, 8, 12), (64, 96, 24), (2,))}


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_reference(root: Path) -> types.ModuleType:
    """The reference's ``opensora.schedulers.rf`` module (class RFLOW)."""

    class Registry:
        def register_module(self, name=None, *args, **kwargs):
            return lambda obj: obj

    for pkg in ("opensora", "opensora.schedulers", "opensora.schedulers.iddpm", "opensora.schedulers.rf"):
        module = types.ModuleType(pkg)
        module.__path__ = [str(root / Path(*pkg.split(".")))]
        sys.modules[pkg] = module
    sys.modules["opensora.registry"] = types.SimpleNamespace(SCHEDULERS=Registry())
    sched = root / "opensora" / "schedulers"
    _load("opensora.schedulers.iddpm.diffusion_utils", sched / "iddpm" / "diffusion_utils.py")
    _load("opensora.schedulers.iddpm.gaussian_diffusion", sched / "iddpm" / "gaussian_diffusion.py")
    _load("opensora.schedulers.rf.rectified_flow", sched / "rf" / "rectified_flow.py")
    return _load("opensora.schedulers.rf", sched / "rf" / "__init__.py")


def tiny_model(g: torch.Generator | None = None) -> torch.nn.Module:
    """This repository's tiny STDiT3 (eval mode); with ``g``: random weights, every parameter non-zero."""
    from opensora_core.models.stdit3 import STDiT3

    model = STDiT3(**TINY).eval()
    if g is not None:
        state = {
            k: torch.randn(v.shape, generator=g) * (0.05 if v.dim() > 1 else 0.1)
            for k, v in model.state_dict().items()
        }
        model.load_state_dict(state, strict=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, required=True, help="Open-Sora 1.2.0 checkout (17cce90)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the .safetensors / .json")
    args = parser.parse_args()
    rf = import_reference(args.reference)
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(SEED)
    model = tiny_model(g)
    tensors = {f"w.{k}": v.clone() for k, v in model.state_dict().items()}
    scheduler = rf.RFLOW()  # misc/eval_loss.py: scheduler = dict(type="rflow")
    timesteps = torch.linspace(0, scheduler.num_timesteps, NUM_EVAL_TIMESTEPS + 2)[1:-1]
    meta: dict = {"commit": COMMIT, "tiny": TINY, "num_eval_timesteps": NUM_EVAL_TIMESTEPS, "buckets": {}}
    for bucket, (shape, (height, width, fps), sizes) in BUCKETS.items():
        batches = []
        for j, size in enumerate(sizes):
            batch = {
                "x": torch.randn(size, *shape, generator=g),
                "noise": torch.randn(size, *shape, generator=g),
                "y": torch.randn(size, 1, TINY["model_max_length"], TINY["caption_channels"], generator=g),
                "mask": torch.tensor([[1] * (3 + i % 3) + [0] * (3 - i % 3) for i in range(size)]),
                "height": torch.full((size,), float(height)),
                "width": torch.full((size,), float(width)),
                "fps": torch.full((size,), float(fps)),
            }
            tensors.update({f"in.{bucket}.{j}.{k}": v for k, v in batch.items()})
            batches.append(batch)
        per_t, per_sample = [], []
        for t in timesteps:
            loss_t, num_samples, column = 0.0, 0, []
            for batch in batches:
                x, noise = batch["x"], batch["noise"]
                model_args = {k: v for k, v in batch.items() if k not in ("x", "noise")}
                timestep = torch.tensor([t] * x.shape[0], dtype=torch.float32)
                losses = scheduler.training_losses(model, x, model_args, noise=noise, t=timestep)["loss"]
                num_samples += x.shape[0]
                loss_t += losses.sum().item()
                column.append(losses)
            per_t.append(loss_t / num_samples)
            per_sample.append(torch.cat(column))
        tensors[f"out.{bucket}.per_t"] = torch.tensor(per_t, dtype=torch.float64)
        tensors[f"out.{bucket}.per_sample"] = torch.stack(per_sample, dim=1)  # [samples, timesteps]
        tensors[f"out.{bucket}.loss"] = torch.tensor(sum(per_t) / len(per_t), dtype=torch.float64)
        meta["buckets"][bucket] = {"batch_sizes": list(sizes), "video_info": [height, width, fps]}
    meta["timesteps"] = timesteps.tolist()
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / f"{NAME}.safetensors"))
    (args.out / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out / NAME}.safetensors ({len(tensors)} tensors) and .json")


if __name__ == "__main__":
    main()
