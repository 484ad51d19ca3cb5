"""Validation loss of rectified flow against Open-Sora 1.2.0's ``eval/loss/eval_loss.py`` procedure.

The numbers in tests/models/parity_data/os12_eval_loss.* come from the reference (commit 17cce90) run on CPU in
fp32 by parity_data/generate_os12_eval_loss.py: its rflow scheduler, its timesteps and its per-bucket averages,
with fixed noise passed in (the one deliberate difference) and the tiny STDiT3 weights stored alongside.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from opensora_core.eval.val_loss import ValBatch, eval_timesteps, validation_loss
from opensora_core.models.stdit3 import STDiT3
from opensora_core.schedulers import build_scheduler

PARITY = Path(__file__).resolve().parents[1] / "models" / "parity_data" / "os12_eval_loss"


def test_rflow_validation_loss_matches_the_reference():
    data = load_file(f"{PARITY}.safetensors")
    meta = json.loads(Path(f"{PARITY}.json").read_text())
    model = STDiT3(**meta["tiny"]).eval()
    model.load_state_dict({k[2:]: v for k, v in data.items() if k.startswith("w.")}, strict=True)
    scheduler = build_scheduler("rflow")  # misc/eval_loss.py: scheduler = dict(type="rflow")
    times = eval_timesteps(scheduler.num_timesteps, meta["num_eval_timesteps"], discrete=False)
    assert times == meta["timesteps"]  # float32 linspace, ends left out

    batches = []
    for bucket, spec in meta["buckets"].items():
        for j, size in enumerate(spec["batch_sizes"]):
            inp = {k.split(".")[-1]: v for k, v in data.items() if k.startswith(f"in.{bucket}.{j}.")}
            kwargs = {k: inp[k] for k in ("y", "mask", "height", "width", "fps")}
            keys = [f"{bucket}{j}-{i}" for i in range(size)]
            batches.append(ValBatch(keys, bucket, inp["x"], kwargs, noise=inp["noise"]))
    result = validation_loss(model, scheduler, batches, times)

    for bucket in meta["buckets"]:
        assert result.per_bucket[bucket] == pytest.approx(float(data[f"out.{bucket}.loss"]), abs=1e-5)
        rows = [v for k, v in result.per_sample.items() if k.startswith(bucket)]
        torch.testing.assert_close(
            torch.tensor(rows, dtype=torch.float64),
            data[f"out.{bucket}.per_sample"].double(),
            atol=1e-5,
            rtol=1e-5,
        )
    # overall = mean over every (clip, timestep); per timestep = mean over all clips of all buckets
    everything = torch.cat([data[f"out.{b}.per_sample"] for b in meta["buckets"]]).double()
    assert result.overall == pytest.approx(float(everything.mean()), abs=1e-5)
    assert list(result.per_timestep.values()) == pytest.approx(everything.mean(0).tolist(), abs=1e-5)
