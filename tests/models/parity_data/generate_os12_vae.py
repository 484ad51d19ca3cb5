"""Generate ``os12_vae.safetensors`` / ``.json`` from the Open-Sora 1.2.0 reference (commit 17cce90).

This script contains no reference code: it imports the reference's VAE files from a checkout given on the
command line and drives them on CPU in float32. Run it outside CI; the tests only read the numbers it writes.

    git -C <open-sora mirror> archive 17cce90 | tar -x -C /tmp/ref12
    python tests/models/parity_data/generate_os12_vae.py --reference /tmp/ref12

Only ``opensora/models/vae/{vae,vae_temporal,utils}.py`` are imported (not the package ``__init__``, which
pulls in the discriminator and losses). The mmengine registry is replaced by a table of the two classes the
pipeline builds (``build_module(dict(type=...))`` -> ``cls(**kwargs)``), the checkpoint helper by a placeholder
that raises (never called: weights are set below). The spatial VAE is ``debug/tiny-vae``'s architecture,
written to a temporary diffusers folder that the reference loads with ``AutoencoderKL.from_pretrained``.

Cases (weights ``w.<case>.*``, inputs ``in.*``, outputs ``out.<case>.*``; the JSON says which):
- ``temporal``: a VAE_Temporal with VAE_Temporal_SD's layout (4 levels, identity first level) at width 4:
  posterior mean / std, a sample after ``torch.manual_seed``, decode of that sample, for 7 and 9 frames.
- ``pipe17``: the full pipeline (micro_frame_size 17, micro_batch_size 4, Open-Sora 1.2's shift/scale) on 20
  frames (chunks of 17 + 3 -> 5 + 1 latent frames): encode after ``torch.manual_seed``, decode to 20 frames.
- ``pipe_whole``: the same pipeline without chunking (micro_frame_size / micro_batch_size None), 9 frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT_DIR = Path(__file__).resolve().parent
NAME = "os12_vae"
COMMIT = "17cce90"
SEED = 20240617

TEMPORAL = dict(
    in_out_channels=4,
    latent_embed_dim=4,
    embed_dim=4,
    filters=4,
    num_res_blocks=2,
    channel_multipliers=(1, 2, 2, 4),
    temporal_downsample=(False, True, True),
    num_groups=2,
)
PIPE_TEMPORAL = dict(
    in_out_channels=4,
    latent_embed_dim=4,
    embed_dim=4,
    filters=8,
    num_res_blocks=1,
    channel_multipliers=(1, 2, 2),
    temporal_downsample=(True, True),
    num_groups=4,
)
SHIFT = (-0.10, 0.34, 0.27, 0.98)
SCALE = (3.85, 2.32, 2.33, 3.06)


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_reference(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """(vae, vae_temporal) modules of the reference tree at ``root``."""
    classes: dict[str, type] = {}

    class Registry:
        def register_module(self, name=None, *args, **kwargs):
            def register(obj):
                classes[name or obj.__name__] = obj
                return obj

            return register

    def build_module(cfg, registry):
        cfg = dict(cfg)
        return classes[cfg.pop("type")](**cfg)

    def no_checkpoints(*args, **kwargs):
        raise RuntimeError("checkpoint loading is not part of the parity runs")

    for pkg in ("opensora", "opensora.models", "opensora.models.vae", "opensora.utils"):
        module = types.ModuleType(pkg)
        module.__path__ = []
        sys.modules[pkg] = module
    sys.modules["opensora.registry"] = types.SimpleNamespace(MODELS=Registry(), build_module=build_module)
    sys.modules["opensora.utils.ckpt_utils"] = types.SimpleNamespace(load_checkpoint=no_checkpoints)
    vae_dir = root / "opensora" / "models" / "vae"
    _load("opensora.models.vae.utils", vae_dir / "utils.py")
    temporal = _load("opensora.models.vae.vae_temporal", vae_dir / "vae_temporal.py")
    vae = _load("opensora.models.vae.vae", vae_dir / "vae.py")
    return vae, temporal


def randomize(module: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights (norm scales around 1) so that every parameter matters; returns the state dict."""
    state = {}
    for name, p in module.state_dict().items():
        if name in ("scale", "shift"):
            state[name] = p.clone()
        elif "norm" in name and name.endswith("weight"):
            state[name] = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        elif p.dim() > 1:
            state[name] = torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5
        else:
            state[name] = 0.1 * torch.randn(p.shape, generator=g)
    module.load_state_dict(state, strict=True)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", type=Path, required=True, help="Open-Sora 1.2.0 checkout (17cce90)")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the .safetensors / .json")
    args = parser.parse_args()
    vae, vae_temporal = import_reference(args.reference)
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(SEED)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"commit": COMMIT, "temporal": TEMPORAL, "pipe_temporal": PIPE_TEMPORAL, "cases": {}}

    # ---- temporal VAE alone
    model = vae_temporal.VAE_Temporal(**TEMPORAL).eval()
    tensors.update({f"w.temporal.{k}": v for k, v in randomize(model, g).items()})
    for frames, seed in ((7, 11), (9, 12)):
        x = torch.randn(2, 4, frames, 6, 5, generator=g)
        posterior = model.encode(x)
        torch.manual_seed(seed)
        z = posterior.sample()
        case = f"temporal_t{frames}"
        tensors.update(
            {
                f"in.{case}.x": x,
                f"out.{case}.mean": posterior.mean,
                f"out.{case}.std": posterior.std,
                f"out.{case}.z": z,
                f"out.{case}.decoded": model.decode(z, num_frames=frames),
            }
        )
        meta["cases"][case] = {"frames": frames, "seed": seed}

    # ---- the full pipeline, spatial = debug/tiny-vae's architecture
    from opensora_core.models.tiny import save_tiny_vae

    with tempfile.TemporaryDirectory() as folder:
        save_tiny_vae(folder)
        pipe_weights = None
        for case, mfs, mbs, frames, seed in (("pipe17", 17, 4, 20, 21), ("pipe_whole", None, None, 9, 22)):
            config = vae.VideoAutoencoderPipelineConfig(
                vae_2d=dict(type="VideoAutoencoderKL", from_pretrained=folder, micro_batch_size=mbs),
                vae_temporal=dict(type="VAE_Temporal", **PIPE_TEMPORAL),
                micro_frame_size=mfs,
                shift=SHIFT,
                scale=SCALE,
            )
            pipe = vae.VideoAutoencoderPipeline(config).eval()
            if pipe_weights is None:
                pipe_weights = randomize(pipe, g)
                tensors.update({f"w.pipe.{k}": v for k, v in pipe_weights.items()})
            else:
                pipe.load_state_dict(pipe_weights, strict=True)
            x = torch.rand(2, 3, frames, 16, 16, generator=g) * 2 - 1
            torch.manual_seed(seed)
            z = pipe.encode(x)
            tensors.update(
                {
                    f"in.{case}.x": x,
                    f"out.{case}.z": z,
                    f"out.{case}.decoded": pipe.decode(z, num_frames=frames),
                    f"out.{case}.latent_size": torch.tensor(pipe.get_latent_size([frames, 16, 16])),
                }
            )
            meta["cases"][case] = {
                "micro_frame_size": mfs,
                "micro_batch_size": mbs,
                "frames": frames,
                "seed": seed,
            }

    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out / f"{NAME}.safetensors"))
    (args.out / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out / NAME}.safetensors ({len(tensors)} tensors) and .json")


if __name__ == "__main__":
    main()
