"""Generate ``stdit2_mask.safetensors`` / ``.json`` from the Open-Sora 1.1.0 reference (commit d599fd7).

This script contains no reference code: it imports the reference from a checkout given on the command line
and drives it on CPU in float32. Run it outside CI (it needs the reference tree and a few of its
dependencies); the tests only read the numbers it writes.

    git -C <open-sora mirror> archive d599fd7 | tar -x -C /tmp/ref11
    pip install --no-deps --target /tmp/refdeps timm==0.9.16 rotary-embedding-torch==0.5.3 beartype
    python tests/models/parity_data/generate_stdit2_mask.py --reference /tmp/ref11 --deps /tmp/refdeps

Modules the reference imports but that are absent or CUDA-only on a CPU machine are replaced before the
import: xformers' block-diagonal attention by a dense masked softmax attention (what it computes), the
mmengine registry by a no-op decorator, timm by its own ``layers`` files (the timm package itself would pull
in torchvision), and the reference's checkpoint / dataset / text-encoder helpers (never called here) by
placeholders that raise when used. ``GaussianDiffusion`` is built on the CPU instead of ``cuda``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import torch

OUT_DIR = Path(__file__).resolve().parent
NAME = "stdit2_mask"
COMMIT = "d599fd7"

CONFIG = dict(
    input_sq_size=64,
    in_channels=4,
    patch_size=(1, 2, 2),
    hidden_size=48,
    depth=2,
    num_heads=4,
    mlp_ratio=4.0,
    class_dropout_prob=0.0,
    pred_sigma=True,
    caption_channels=16,
    model_max_length=6,
    qk_norm=True,
)
B, T, H, W = 2, 5, 7, 9  # latent video; H and W are odd (padded to the 2x2 patch, output cropped back)


# ---------------------------------------------------------------------------------------- module stand-ins
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
        self.q_seqlen, self.kv_seqlen = list(q_seqlen), list(kv_seqlen)

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None):
        return cls(q_seqlen, q_seqlen if kv_seqlen is None else kv_seqlen)

    def dense(self, device) -> torch.Tensor:
        """Bool [sum(q), sum(kv)]: query block i sees key block i only."""
        allowed = torch.zeros(sum(self.q_seqlen), sum(self.kv_seqlen), dtype=torch.bool, device=device)
        q0 = k0 = 0
        for nq, nk in zip(self.q_seqlen, self.kv_seqlen, strict=True):
            allowed[q0 : q0 + nq, k0 : k0 + nk] = True
            q0, k0 = q0 + nq, k0 + nk
        return allowed


def _memory_efficient_attention(q, k, v, p=0.0, attn_bias=None):
    """Softmax attention on [1, M, heads, D] tensors (scale 1/sqrt(D)), as xformers computes it."""
    assert p == 0.0
    qh, kh, vh = (a.permute(0, 2, 1, 3) for a in (q, k, v))  # [1, heads, M, D]
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        scores = scores.masked_fill(~attn_bias.dense(q.device), float("-inf"))
    out = scores.softmax(dim=-1) @ vh
    return out.permute(0, 2, 1, 3).contiguous()  # [1, M, heads, D], contiguous like the kernel's output


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{name} is not available in the parity generator")

    return fail


class _Registry:
    def __init__(self, *args, **kwargs) -> None:
        pass

    def register_module(self, name=None, *args, **kwargs):
        if callable(name):
            return name
        return lambda obj: obj


def install_stand_ins(reference: Path, deps: Path) -> None:
    """Make the reference's modules importable on a CPU machine without its optional dependencies."""
    sys.path.insert(0, str(deps))
    sys.path.insert(0, str(reference))
    fmha = _module("xformers.ops.fmha", BlockDiagonalMask=_BlockDiagonalMask)
    ops = _module("xformers.ops", fmha=fmha, memory_efficient_attention=_memory_efficient_attention)
    _module("xformers", ops=ops)

    # timm: only its layer files (the package __init__ imports torchvision)
    _package("timm", deps / "timm")
    _package("timm.layers", deps / "timm" / "layers")
    mlp = importlib.import_module("timm.layers.mlp")
    drop = importlib.import_module("timm.layers.drop")
    _package("timm.models", deps / "timm" / "models")
    _module("timm.models.vision_transformer", Mlp=mlp.Mlp)
    _module("timm.models.layers", DropPath=drop.DropPath, Mlp=mlp.Mlp)

    _module("mmengine", __path__=[])
    _module("mmengine.registry", Registry=_Registry)
    _module("mmengine.runner", set_random_seed=_unavailable("set_random_seed"))

    # the reference package, without the __init__ files that import every model, dataset and encoder
    _package("opensora", reference / "opensora")
    _package("opensora.models", reference / "opensora" / "models")
    _package("opensora.models.text_encoder", reference / "opensora" / "models" / "text_encoder")
    _package("opensora.utils", reference / "opensora" / "utils")
    _package("opensora.schedulers", reference / "opensora" / "schedulers")
    registry = _Registry()
    _module(
        "opensora.registry", MODELS=registry, SCHEDULERS=registry, build_module=_unavailable("build_module")
    )
    _module("opensora.utils.ckpt_utils", load_checkpoint=_unavailable("load_checkpoint"))
    _module("opensora.utils.config_utils", parse_configs=_unavailable("parse_configs"))
    _module("opensora.utils.misc", to_torch_dtype=_unavailable("to_torch_dtype"))
    _module("opensora.datasets", IMG_FPS=120, save_sample=_unavailable("save_sample"), __path__=[])
    _module("opensora.datasets.utils", read_from_path=_unavailable("read_from_path"))
    _module("opensora.models.text_encoder.t5", text_preprocessing=_unavailable("text_preprocessing"))

    gd = importlib.import_module("opensora.schedulers.iddpm.gaussian_diffusion")
    gd.GaussianDiffusion.__init__.__kwdefaults__["device"] = "cpu"


# ------------------------------------------------------------------------------------------------ cases
def video_info(height, width, num_frames, ar, fps) -> dict[str, torch.Tensor]:
    return {
        "height": torch.tensor(height, dtype=torch.float32),
        "width": torch.tensor(width, dtype=torch.float32),
        "num_frames": torch.tensor(num_frames, dtype=torch.float32),
        "ar": torch.tensor(ar, dtype=torch.float32),
        "fps": torch.tensor(fps, dtype=torch.float32),
    }


def build_reference_model(seed: int = 0):
    stdit2 = importlib.import_module("opensora.models.stdit.stdit2")
    torch.manual_seed(seed)
    model = stdit2.STDiT2(stdit2.STDiT2Config(**CONFIG)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # zero-initialised projections get values so every branch reaches the output
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


class _Recorder:
    """Wraps a model: records each call's x (first half for CFG batches) and x_mask."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def __call__(self, x, timestep, y, **kwargs):
        self.calls.append({"x": x.detach().clone(), "t": timestep.clone(), "x_mask": kwargs.get("x_mask")})
        return self.model(x, timestep, y, **kwargs)

    def forward(self, *args, **kwargs):
        return self(*args, **kwargs)


class _FixedText:
    """Text encoder stand-in for ``IDDPM.sample``: fixed embeddings and a fixed null caption."""

    def __init__(self, y, mask, y_null) -> None:
        self.y, self.mask, self.y_null = y, mask, y_null

    def encode(self, prompts):
        return {"y": self.y, "mask": self.mask}

    def null(self, n):
        return self.y_null


def forward_cases(model, io: dict[str, torch.Tensor], meta: dict) -> None:
    g = torch.Generator().manual_seed(10)
    x = torch.randn(B, 4, T, H, W, generator=g)
    y = torch.randn(B, 1, 6, 16, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    t = torch.tensor([3, 800])
    info = video_info([56.0, 56.0], [72.0, 72.0], [5.0, 9.0], [56 / 72, 56 / 72], [24.0, 8.0])
    masks = {
        "all_true_and_mixed": torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1]], dtype=torch.bool),
        "head_false_and_mixed": torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype=torch.bool),
        "all_false_and_all_true": torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool),
    }
    io.update({f"fwd.{k}": v for k, v in {"x": x, "y": y, "text_mask": text_mask, "t": t, **info}.items()})
    with torch.no_grad():
        io["fwd.out.plain"] = model(x, t, y, mask=text_mask, **info)
        for name, x_mask in masks.items():
            io[f"fwd.x_mask.{name}"] = x_mask
            io[f"fwd.out.{name}"] = model(x, t, y, mask=text_mask, x_mask=x_mask, **info)
    meta["forward"] = {
        "inputs": "fwd.x [B,C,T,H,W], fwd.t, fwd.y [B,1,L,C], fwd.text_mask [B,L], video info fwd.<name> [B]",
        "outputs": {
            "fwd.out.plain": "forward without x_mask",
            **{f"fwd.out.{n}": f"forward with x_mask=fwd.x_mask.{n}" for n in masks},
        },
    }


def loss_cases(model, io: dict[str, torch.Tensor], meta: dict) -> None:
    iddpm = importlib.import_module("opensora.schedulers.iddpm")
    scheduler = iddpm.IDDPM()
    g = torch.Generator().manual_seed(20)
    x0 = torch.randn(B, 4, T, H, W, generator=g).clamp(-1, 1)  # latents in the decoder-NLL range
    noise = torch.randn(B, 4, T, H, W, generator=g)
    y = torch.randn(B, 1, 6, 16, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    info = video_info([56.0, 56.0], [72.0, 72.0], [5.0, 5.0], [56 / 72, 56 / 72], [24.0, 24.0])
    frame_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 0, 1, 0]], dtype=torch.bool)
    io.update({f"loss.{k}": v for k, v in {"x0": x0, "noise": noise, "y": y, "text_mask": text_mask}.items()})
    io.update({f"loss.{k}": v for k, v in info.items()})
    io["loss.frame_mask"] = frame_mask
    cases = {"t_0_617": [0, 617], "t_999_42": [999, 42]}
    for name, steps in cases.items():
        t = torch.tensor(steps)
        rec = _Recorder(model)
        kwargs = {"y": y, "mask": text_mask, "x_mask": frame_mask, **info}
        with torch.no_grad():
            terms = scheduler.training_losses(rec, x0, t, kwargs, noise=noise, mask=frame_mask)
        io[f"loss.{name}.t"] = t
        io[f"loss.{name}.x_t"] = rec.calls[0]["x"]  # the masked q_sample the model saw
        for key in ("loss", "mse", "vb"):
            io[f"loss.{name}.{key}"] = terms[key]
    meta["training_losses"] = {
        "scheduler": "IDDPM() (1000 steps, linear, learned range, MSE + vb)",
        "call": "training_losses(model, loss.x0, t, {y, mask=text_mask, x_mask=frame_mask, video info}, "
        "noise=loss.noise, mask=loss.frame_mask)",
        "cases": {
            n: f"t = {s}; loss.{n}.x_t = model input (masked q_sample); loss/mse/vb per sample"
            for n, s in cases.items()
        },
    }


def sampling_case(model, io: dict[str, torch.Tensor], meta: dict, dtype: torch.dtype) -> None:
    """Masked sampling with the model and all inputs in ``dtype``."""
    iddpm = importlib.import_module("opensora.schedulers.iddpm")
    steps = 5
    scheduler = iddpm.IDDPM(num_sampling_steps=steps, cfg_scale=4.0, cfg_channel=3)
    g = torch.Generator().manual_seed(30)
    z = torch.randn(B, 4, T, H, W, generator=g).to(dtype)
    y = torch.randn(B, 1, 6, 16, generator=g).to(dtype)
    y_null = torch.randn(B, 1, 6, 16, generator=g).to(dtype)
    model = model.to(dtype)
    prefix = f"sample_{str(dtype).removeprefix('torch.')}"
    text_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    info = video_info([56.0, 56.0], [72.0, 72.0], [5.0, 5.0], [56 / 72, 56 / 72], [24.0, 24.0])
    # sample 0: frame 0 kept (0), frame 1 edited (0.4 -> re-noised at step 2 of 5); sample 1 generated
    frame_mask = torch.tensor([[0.0, 0.4, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    seed = 1234
    rec = _Recorder(model)
    torch.manual_seed(seed)
    out = scheduler.sample(
        rec,
        _FixedText(y, text_mask, y_null),
        z=z.clone(),
        prompts=["a", "b"],
        device="cpu",
        additional_args=dict(info),
        mask=frame_mask,
    )
    model.float()
    io.update(
        {f"{prefix}.{k}": v for k, v in {"z": z, "y": y, "y_null": y_null, "text_mask": text_mask}.items()}
    )
    io.update({f"{prefix}.{k}": v for k, v in info.items()})
    io[f"{prefix}.frame_mask"] = frame_mask
    io[f"{prefix}.out"] = out
    for i, call in enumerate(rec.calls):
        io[f"{prefix}.step{i}.x_in"] = call["x"][:B].contiguous()
        io[f"{prefix}.step{i}.x_mask"] = call["x_mask"][:B].contiguous()
    meta[prefix] = {
        "scheduler": f"IDDPM(num_sampling_steps={steps}, cfg_scale=4.0, cfg_channel=3)",
        "call": f"torch.manual_seed(seed); sample(model, text(y, text_mask, y_null), z={prefix}.z, "
        f"additional_args=video info, mask={prefix}.frame_mask): all noise from the global RNG",
        "seed": seed,
        "dtype": str(dtype),
        "outputs": f"{prefix}.out [B,C,T,H,W]; {prefix}.step<i>.x_in / .x_mask: the cond half of the model "
        "input and the x_mask it got at step i (i = 0 is t = num_steps - 1)",
    }


def mask_strategy_cases(reference: Path, io: dict[str, torch.Tensor], meta: dict) -> None:
    spec = importlib.util.spec_from_file_location(
        "ref_inference_long", reference / "scripts" / "inference-long.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    g = torch.Generator().manual_seed(40)
    refs = [[torch.randn(4, 8, 3, 3, generator=g), torch.randn(4, 1, 3, 3, generator=g)], []]
    cfl = 2
    previous = [torch.randn(4, T, 3, 3, generator=g) for _ in range(B)]
    strategies = ["0,0,0,0,3,0.3;0,1,0,-1,1;1,1", None]
    cases = {}
    for loop_i in range(2):
        loop_refs = [list(r) for r in refs]
        loop_strategies = list(strategies)
        if loop_i > 0:  # what the reference's loop adds: the previous clip's last cfl frames at the start
            for j in range(B):
                loop_refs[j].append(previous[j])
                prefix = "" if loop_strategies[j] is None else loop_strategies[j] + ";"
                loop_strategies[j] = prefix + f"{loop_i},{len(loop_refs[j]) - 1},-{cfl},0,{cfl}"
        z = torch.randn(B, 4, T, 3, 3, generator=g)
        io[f"strategy.loop{loop_i}.z_in"] = z.clone()
        masks = module.apply_mask_strategy(z, loop_refs, loop_strategies, loop_i)
        io[f"strategy.loop{loop_i}.z_out"] = z
        io[f"strategy.loop{loop_i}.frame_mask"] = masks
        cases[f"loop{loop_i}"] = loop_strategies
    for j, ref_list in enumerate(refs):
        for r, ref in enumerate(ref_list):
            io[f"strategy.ref{j}_{r}"] = ref
    for j, prev in enumerate(previous):
        io[f"strategy.previous{j}"] = prev
    meta["mask_strategy"] = {
        "call": "scripts/inference-long.py apply_mask_strategy(z, refs, strategies, loop_i)",
        "mask_strategy": strategies,
        "condition_frame_length": cfl,
        "strategies_per_loop": cases,
        "tensors": "strategy.ref<j>_<r> = reference r of sample j; strategy.previous<j> = previous clip of "
        "sample j (loop 1); strategy.loop<i>.z_in / z_out / frame_mask",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="Open-Sora checkout at " + COMMIT)
    parser.add_argument(
        "--deps", type=Path, required=True, help="--target folder with timm, rotary-embedding-torch"
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    install_stand_ins(args.reference.resolve(), args.deps.resolve())
    from safetensors.torch import save_file

    torch.set_grad_enabled(False)
    model = build_reference_model()
    io: dict[str, torch.Tensor] = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    meta: dict = {
        "reference": f"Open-Sora 1.1.0 (commit {COMMIT}), float32 on CPU",
        "model": "STDiT2",
        "config": CONFIG,
        "state_dict": "keys prefixed model.",
        "tolerance": "max abs diff <= 1e-5 in float32 on CPU",
    }
    forward_cases(model, io, meta)
    loss_cases(model, io, meta)
    sampling_case(model, io, meta, torch.float32)
    mask_strategy_cases(args.reference.resolve(), io, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in io.items()}
    save_file(tensors, str(args.out / f"{NAME}.safetensors"))
    (args.out / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {len(tensors)} tensors to {args.out / NAME}.safetensors")


if __name__ == "__main__":
    main()
