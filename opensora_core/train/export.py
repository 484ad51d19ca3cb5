"""Export a training checkpoint in the official Open-Sora layout.

    python -m opensora_core.train.export CKPT_DIR OUT.pth [--ema] [--dtype fp32|bf16|fp16]

Open-Sora's released weights (``OpenSora-v1-HQ-16x512x512.pth``, ...) are a plain ``model.state_dict()``
saved with ``torch.save``: official parameter names, persistent buffers (``pos_embed``, ``pos_embed_temporal``,
``y_embedder.y_embedding``) included. Our ``model.safetensors`` / ``ema.safetensors`` already use those names,
so export is a format change: read the chosen weights, optionally cast floating tensors, write the dict.
``CKPT_DIR`` and ``OUT`` may be local or ``s3://``. The file loads with the reference's ``load_checkpoint`` and
with ``build_model(..., from_pretrained=OUT)``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from opensora_core import checkpoint as ckpt
from opensora_core.io import storage
from opensora_core.parallel.backends import DTYPES

logger = logging.getLogger(__name__)


def export_state_dict(
    ckpt_dir: str | Path, ema: bool = False, dtype: str = "fp32"
) -> dict[str, torch.Tensor]:
    """The official-layout state dict of a complete local checkpoint folder (model or EMA weights)."""
    folder = Path(ckpt_dir)
    ckpt.verify_checkpoint(str(folder))  # complete, and every file as saved
    name = ckpt.EMA_FILE if ema else ckpt.MODEL_FILE
    path = folder / name
    if not path.is_file():
        hint = " (the run trained without EMA; export without --ema)" if ema else ""
        raise ckpt.CheckpointError(f"{path} does not exist{hint}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    state = ckpt.load_safetensors(path)
    target = DTYPES[dtype]
    return {k: (v.to(target) if v.is_floating_point() else v) for k, v in state.items()}


def export_checkpoint(ckpt_uri: str, out: str, ema: bool = False, dtype: str = "fp32") -> str:
    """Write the checkpoint ``ckpt_uri``'s weights to ``out`` (local path or ``s3://``); returns ``out``."""
    with tempfile.TemporaryDirectory(prefix="opensora-export-") as tmp:
        u = storage.parse_uri(ckpt_uri)
        if u.is_local:
            folder = u.local_path
        else:
            if not ckpt.is_complete(ckpt_uri):
                raise ckpt.CheckpointError(f"{ckpt_uri} is not a complete checkpoint")
            folder = storage.download_dir(ckpt_uri, Path(tmp) / "ckpt")
        state = export_state_dict(folder, ema=ema, dtype=dtype)
        dest = storage.parse_uri(out)
        local_out = dest.local_path if dest.is_local else Path(tmp) / "export.pth"
        local_out.parent.mkdir(parents=True, exist_ok=True)
        partial = local_out.with_name(local_out.name + ".partial")
        torch.save(state, partial)
        ckpt.fsync_file(partial)
        partial.replace(local_out)
        if not dest.is_local:
            storage.upload_file(local_out, out)
    logger.info("exported %d tensors (%s, %s) to %s", len(state), "ema" if ema else "model", dtype, out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m opensora_core.train.export",
        description="Write a training checkpoint as an official Open-Sora state dict (.pth).",
    )
    parser.add_argument("ckpt_dir", help="checkpoint folder epoch*-global_step* (local or s3://)")
    parser.add_argument("out", help="output .pth file (local or s3://)")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights instead of the model's")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="cast floating tensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        export_checkpoint(args.ckpt_dir, args.out, ema=args.ema, dtype=args.dtype)
    except (ckpt.CheckpointError, storage.StorageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
