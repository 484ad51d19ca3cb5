"""`make gpu-check` in its tiny CPU mode, end to end: every stage runs and writes the expected records.

The CUDA tests skip here (no GPU), so the pytest stage checks the junit plumbing; gpu_step.py and gpu_sample.py
run their tiny sizes (the full ones need a GPU). About 35 CPU seconds; more wall time on a busy machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEP_FIELDS = {"model", "compiled", "grad_ckpt", "batch", "step_s", "vae_s", "tokens_per_s_per_gpu", "mfu"}
SAMPLE_FIELDS = {"scheduler", "steps", "compiled", "seconds_per_video", "vae_decode_s", "model_evals"}


@pytest.mark.timeout(400)
def test_tiny_gpu_check_writes_records_and_summary(tmp_path: Path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=380,
    )
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-4000:]
    summary = json.loads((out / "gpu_check_summary.json").read_text())
    assert summary["ok"] and summary["tiny"] and summary["environment"]["cuda"] is False
    assert set(summary["stages"]) == {"pytest", "gpu_step", "gpu_sample"}
    assert all(stage["rc"] == 0 and stage["records"] > 0 for stage in summary["stages"].values())
    assert summary["stages"]["pytest"]["skipped"] == summary["stages"]["pytest"]["records"]  # no CUDA here
    assert set(summary["targets"]) == {"train_tokens_per_s_per_gpu", "train_mfu", "dpm20_seconds_per_video"}
    assert all(t["best"] is not None and t["met"] is None for t in summary["targets"].values())

    records = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    tests = [r for r in records if r["stage"] == "pytest"]
    assert tests and all(r["status"] == "skipped" and "CUDA" in r["message"] for r in tests)
    steps = [r for r in records if r.get("name") == "train_step"]
    assert {r["model"] for r in steps} == {"STDiT-XL/2", "STDiT2-XL/2", "STDiT3-XL/2"}
    assert {(r["compiled"], r["grad_ckpt"]) for r in steps} == {(False, False), ("eager", True)}
    for r in steps:
        assert set(r) >= STEP_FIELDS and r["tokens_per_s_per_gpu"] > 0 and 0 < r["mfu"] < 1, r
    peaks = [r for r in records if r.get("name") == "matmul_peak"]
    assert len(peaks) == 1 and peaks[0]["tflops"] > 0
    samples = [r for r in records if r.get("name") == "sample"]
    assert {r["scheduler"] for r in samples} == {"dpm-solver", "iddpm"}
    for r in samples:
        assert set(r) >= SAMPLE_FIELDS and r["seconds_per_video"] > 0 and r["model_evals"] == r["steps"], r
