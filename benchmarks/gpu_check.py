"""The GPU check in one call: carried wheels, ``pytest -m gpu``, gpu_step.py and gpu_sample.py, within 8 minutes.

    python3 benchmarks/gpu_check.py [--out DIR] [--wheels .whl] [--tiny]     (make gpu-check)

1. Installs the wheels in ``--wheels`` (``make gpu-wheels`` fills ``.whl/``: what the GPU machine lacks) into
   ``/tmp/site`` with ``pip --no-index --no-deps`` and puts that folder first on ``PYTHONPATH`` of the stages.
2. ``pytest -m gpu tests/gpu`` (junit XML): one record per test with its status and seconds.
3. ``benchmarks/gpu_step.py`` and 4. ``benchmarks/gpu_sample.py`` with the time left of their budgets.

Writes to ``--out`` (default ``$OUT``, else ``benchmarks/results/``): ``gpu_check.jsonl`` (one JSON line per
measurement or test, each with its ``stage``), ``gpu_check_summary.json`` (per stage: exit code, seconds,
counts; the issue's targets with the best measured values; the environment), ``gpu_check.log`` (the stages'
output) and ``pytest_gpu.xml``. Exits non-zero when a stage failed or timed out.

``--tiny`` (or ``GPU_CHECK_TINY=1``): the same stages on the CPU with tiny sizes (the CUDA tests skip), no wheel
installation; `make test` runs it (tests/gpu/test_gpu_check.py) so the script cannot rot. Uses the standard
library only until the stages start (pydantic and friends may come from the wheels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SITE = "/tmp/site"
# Seconds per stage on the GPU (8 minutes in all, install and start-up included) and in --tiny mode
BUDGETS = {"pytest": 150, "gpu_step": 200, "gpu_sample": 100}
TINY_BUDGETS = {"pytest": 120, "gpu_step": 120, "gpu_sample": 120}
# The targets for STDiT-XL/2 16x256x256 bf16 on one H200
TARGETS = {"train_tokens_per_s_per_gpu": 56_000, "train_mfu": 0.40, "dpm20_seconds_per_video": 1.0}
PACKAGES = ("torch", "pydantic", "diffusers", "colossalai", "av", "transformers")


def install_wheels(wheels: Path, log) -> dict[str, Any]:
    """pip-install ``wheels/*.whl`` into :data:`SITE` (no index, no dependencies)."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        return {"wheels": 0}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    cmd += ["--no-cache-dir", "--upgrade", "--target", SITE, *map(str, files)]
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"installing {len(files)} wheels from {wheels} failed (see gpu_check.log)")
    return {"wheels": len(files), "site": SITE}


def stage_env(site: str | None) -> dict[str, str]:
    """Environment of the stages: the repository (and the wheel site) importable, unbuffered output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [p for p in (site, str(REPO), env.get("PYTHONPATH")) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_stage(cmd: list[str], env: dict[str, str], timeout: float, log) -> tuple[int, float]:
    """Run one stage with its output in the log; (exit code, seconds); 124 when it ran past ``timeout``."""
    log.write(f"\n===== {' '.join(cmd)}\n")
    log.flush()
    start = time.perf_counter()
    try:
        rc = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
    except subprocess.TimeoutExpired:
        rc = 124
    return rc, time.perf_counter() - start


def pytest_records(xml_path: Path) -> list[dict[str, Any]]:
    """One record per test case of a junit XML file: test id, status, seconds, message."""
    if not xml_path.is_file():
        return []
    records = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        status, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                status = "failed" if tag in ("failure", "error") else "skipped"
                message = (node.get("message") or "")[:300]
        records.append(
            {
                "name": "test",
                "test": f"{case.get('classname')}::{case.get('name')}",
                "status": status,
                "seconds": round(float(case.get("time") or 0.0), 3),
                "message": message,
            }
        )
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (none when it is missing)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def targets(records: list[dict[str, Any]], tiny: bool) -> dict[str, Any]:
    """The issue's targets next to the best measured value of each (STDiT-XL/2; DPM-Solver-20); ``met`` is
    None when nothing was measured or the sizes were tiny."""
    steps = [
        r
        for r in records
        if r.get("name") == "train_step" and r.get("model") == "STDiT-XL/2" and "step_s" in r
    ]
    dpm = [
        r
        for r in records
        if r.get("name") == "sample" and r.get("scheduler") == "dpm-solver" and "seconds_per_video" in r
    ]
    best = {
        "train_tokens_per_s_per_gpu": max((r["tokens_per_s_per_gpu"] for r in steps), default=None),
        "train_mfu": max((r["mfu"] for r in steps), default=None),
        "dpm20_seconds_per_video": min((r["seconds_per_video"] for r in dpm), default=None),
    }
    out = {}
    for key, target in TARGETS.items():
        value = best[key]
        lower_is_better = key.endswith("seconds_per_video")
        met = None if value is None or tiny else (value <= target if lower_is_better else value >= target)
        out[key] = {"target": target, "best": value, "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the exit code (0 when every stage passed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "benchmarks" / "results"))
    parser.add_argument("--wheels", default=str(REPO / ".whl"), help="folder of wheels to install first")
    parser.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl, xml_path = out / "gpu_check.jsonl", out / "pytest_gpu.xml"
    for path in (jsonl, xml_path, out / "gpu_step.jsonl", out / "gpu_sample.jsonl"):
        path.unlink(missing_ok=True)  # this run's outputs only (the folder's other files are left alone)
    budgets = TINY_BUDGETS if args.tiny else BUDGETS
    start = time.perf_counter()
    summary: dict[str, Any] = {"tiny": args.tiny, "out": str(out), "stages": {}}

    with open(out / "gpu_check.log", "w") as log:
        summary["install"] = {"wheels": 0} if args.tiny else install_wheels(Path(args.wheels), log)
        env = stage_env(summary["install"].get("site"))
        py = sys.executable
        probe = (
            "import importlib.util, json, torch; print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.cuda.is_available(), 'device': torch.cuda.get_device_name() if "
            f"torch.cuda.is_available() else 'cpu', 'missing': [p for p in {PACKAGES!r} "
            "if importlib.util.find_spec(p) is None]}))"
        )
        probed = subprocess.run([py, "-c", probe], env=env, capture_output=True, text=True)
        summary["environment"] = (
            json.loads(probed.stdout) if probed.returncode == 0 else {"error": probed.stderr[-500:]}
        )

        stages = {
            "pytest": [
                py,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "tests/gpu",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={xml_path}",
            ],
            "gpu_step": [py, "benchmarks/gpu_step.py", "--out", str(out / "gpu_step.jsonl")],
            "gpu_sample": [py, "benchmarks/gpu_sample.py", "--out", str(out / "gpu_sample.jsonl")],
        }
        records: list[dict[str, Any]] = []
        for stage, cmd in stages.items():
            budget = budgets[stage]
            if stage != "pytest":
                # the script stops starting measurements at 85 % of its budget; the rest finishes the last one
                cmd += ["--budget-s", str(int(0.85 * budget))] + (["--tiny"] if args.tiny else [])
            rc, seconds = run_stage(cmd, env, budget + 60, log)
            stage_records = (
                pytest_records(xml_path) if stage == "pytest" else read_jsonl(out / f"{stage}.jsonl")
            )
            if stage == "pytest" and rc == 5:  # "no tests collected" cannot happen: tests/gpu has gpu tests
                rc = 1
            counts: dict[str, Any] = {"rc": rc, "seconds": round(seconds, 1), "records": len(stage_records)}
            if stage == "pytest":
                for status in ("passed", "failed", "skipped"):
                    counts[status] = sum(r["status"] == status for r in stage_records)
            else:
                counts["skipped"] = sum("skipped" in r for r in stage_records)
            summary["stages"][stage] = counts
            records += [{"stage": stage, **r} for r in stage_records]

    with open(jsonl, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    summary["targets"] = targets(records, args.tiny)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["ok"] = all(s["rc"] == 0 for s in summary["stages"].values())
    (out / "gpu_check_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
