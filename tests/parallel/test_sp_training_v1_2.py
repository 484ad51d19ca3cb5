"""Open-Sora 1.2 training with sequence parallelism through the trainer CLI (issue 16): a tiny STDiT3 with
rectified flow, the tiny 1.2 video VAE and the bucket dataset (VariableVideoTextDataset + bucket_config), dp 1 x
sp 2 (plugin zero2-seq, gloo) on two processes against one process of the same config and seed.

Sequence parallelism splits the latent frames over the ranks, so the bucket's 8-frame clips (2 latent frames
through the 1.2 VAE) split 1 + 1. Both runs draw the same timesteps, noise and masks, so the per-step losses and
the final weights agree up to float rounding: losses within 1e-5 relative, weights within 1e-5 relative L2 over
the model (the STDiT2 test's bound), per tensor 1e-3 leaving out the attention keys' bias (zero true gradient,
see ``_without_key_bias``). About 45 s on two busy cores: marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.parallel.dist_harness import free_port
from tests.parallel.test_sp_training import _final_weights

REPO = Path(__file__).resolve().parents[2]
TINY_V1_2_TRAIN = REPO / "configs" / "debug" / "tiny_v1_2_train.py"


def _cli(nproc: int, outputs: Path, data: str, plugin: str, sp_size: int) -> list[str]:
    options = {
        "dataset": repr({"_delete_": True, "type": "VariableVideoTextDataset", "data_path": data,
                         "transform_name": "resize_crop"}),
        "bucket_config": repr({"144p": {8: (1.0, 2)}}),  # 8 frames -> 2 latent frames, batch 2
        "model.hidden_size": "32",
        "model.num_heads": "2",
        "model.depth": "2",
        "max_steps": "3",
        "ckpt_every": "0",
        "log_every": "1",
        "num_workers": "0",
        "plugin": repr(plugin),
        "sp_size": str(sp_size),
        "outputs": repr(str(outputs)),
    }  # fmt: skip
    launch = ["-m", "opensora_core.train"]
    if nproc > 1:
        launch = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                  f"--master_port={free_port()}", *launch]  # fmt: skip
    return [
        sys.executable,
        *launch,
        str(TINY_V1_2_TRAIN),
        "--cfg-options",
        *(f"{k}={v}" for k, v in options.items()),
    ]


def _logged(log: str, key: str) -> list[float]:
    return [float(v) for v in re.findall(rf"\b{key}=([0-9.eE+-]+)", log)]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_stdit3_rflow_bucket_training_with_sp2_matches_one_process(tmp_path: Path):
    from opensora_core.data.synthetic import generate

    generate(tmp_path / "data", 4, size=176, num_frames=10, seed=0)  # >= 0.8 x 144p pixels
    data = str(tmp_path / "data" / "meta.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    runs = {
        "single": _cli(1, tmp_path / "single", data, "ddp", 1),
        "sp": _cli(2, tmp_path / "sp", data, "zero2-seq", 2),
    }
    procs = {
        name: subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, cmd in runs.items()
    }
    logs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} run failed:\n{logs[name][-4000:]}"
    assert "(dp 1 x sp 2)" in logs["sp"]

    losses = {name: _logged(log, "loss") for name, log in logs.items()}
    assert len(losses["single"]) == 3 and len(set(losses["single"])) == 3, logs["single"][-2000:]
    assert losses["sp"] == pytest.approx(losses["single"], rel=1e-5)
    norms = {name: _logged(log, "grad_norm") for name, log in logs.items()}
    assert min(norms["single"]) > 0 and norms["sp"] == pytest.approx(norms["single"], rel=1e-3)

    single, sp = _final_weights(tmp_path / "single"), _final_weights(tmp_path / "sp")
    assert single.keys() == sp.keys() and any(k.startswith("temporal_blocks.") for k in single)
    diff = torch.stack([(sp[k] - single[k]).float().norm() for k in single]).norm()
    assert float(diff / torch.stack([w.float().norm() for w in single.values()]).norm()) < 1e-5
    for key, ref in single.items():
        got, ref = _without_key_bias(key, sp[key]), _without_key_bias(key, ref)
        rel = (got - ref).float().norm() / ref.float().norm().clamp_min(1e-12)
        assert float(rel) < 1e-3, key


def _without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """The tensor without the attention keys' bias: softmax ignores a shift shared by all keys, so that bias
    has an exact zero gradient and Adam's g / (sqrt(v) + eps) turns rounding noise into its whole update
    (measured 4.6e-3 relative between the runs for spatial_blocks.0.cross_attn.kv_linear.bias)."""
    if name.endswith("kv_linear.bias"):  # [k | v]
        return value[value.numel() // 2 :]
    if name.endswith("qkv.bias"):  # [q | k | v]
        third = value.numel() // 3
        return torch.cat([value[:third], value[2 * third :]])
    return value
