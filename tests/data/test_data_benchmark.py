"""The data benchmark script runs end to end at tiny sizes and prints well-formed JSON lines."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data.py"


def test_benchmark_quick(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(SCRIPT), "--quick", "--rows", "25000", "--baseline-rows", "200", "--seconds", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    names = {line["name"] for line in lines}
    assert any(n.startswith("clip_load_16f_interval3") for n in names)
    assert "bucket_assign_vectorised_1proc_vs_reference_apply" in names
    for line in lines:
        assert {"name", "ours", "baseline", "ratio", "unit", "machine"} <= set(line)
        assert line["ours"] > 0 and line["baseline"] > 0
