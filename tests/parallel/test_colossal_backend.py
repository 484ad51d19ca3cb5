"""zero2 through ColossalAI's Booster on CPU (TorchDDPPlugin, gloo): boost, backward, step, save/load.

ColossalAI is an optional extra (requirements-colossalai.txt + ``pip install --no-deps colossalai==0.5.0
galore-torch==1.0``; ``make test`` installs it). Without it these tests skip, except under CI where they fail.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from opensora_core.checkpoint import OptimizerFiles
from opensora_core.parallel.mesh import build_mesh
from tests.parallel.dist_harness import run_world
from tests.parallel.train_steps import max_relative_difference, resume_third_step, train

CLIP = 0.05


def require_colossalai() -> None:
    """Skip when ColossalAI is not installed outside CI; in CI (env CI set) its absence is a failure."""
    if importlib.util.find_spec("colossalai") is not None:
        return
    message = (
        "ColossalAI is not installed: pip install -r requirements-colossalai.txt && "
        "pip install --no-deps colossalai==0.5.0 galore-torch==1.0 (make test does this)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _booster_worker(env, tmp: str) -> dict[str, float]:
    mesh = build_mesh(env, 1)
    ref, ref_hist = train("ddp", mesh, grad_clip=CLIP)
    boosted, hist = train("zero2", mesh, grad_clip=CLIP)
    report: dict[str, float] = {
        "name_ok": float(boosted.name == "colossalai-torchddp"),
        "wrapped": float(
            type(boosted.model).__name__ == "TorchDDPModel" and boosted.module is not boosted.model
        ),
        "weights": max_relative_difference(boosted.model_state_dict(), ref.model_state_dict()),
        "grad_norm": max(abs(a[1] - b[1]) / b[1] for a, b in zip(hist, ref_hist, strict=True)),
        "clipped": float(min(h[1] for h in ref_hist) > CLIP),
    }
    # save after 2 steps, resume into a fresh Booster, 1 more step == 3 uninterrupted steps
    resumed, files = resume_third_step("zero2", mesh, tmp, grad_clip=CLIP)
    report["resume"] = max_relative_difference(resumed.model_state_dict(), boosted.model_state_dict())
    consolidated = OptimizerFiles(Path(tmp)).consolidated
    report["files"] = float(files == ([consolidated] if env.rank == 0 else []))
    # a missing optimizer folder is a clear error
    try:
        resumed.load_optimizer(OptimizerFiles(Path(tmp) / "nowhere"))
    except FileNotFoundError as e:
        report["missing_error"] = float("--ckpt-path" in str(e))
    return report


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_booster_torchddp_trains_like_ddp_and_round_trips_the_optimizer(tmp_path):
    require_colossalai()
    reports = run_world(_booster_worker, 2, str(tmp_path))
    for report in reports:
        assert report["name_ok"] == 1.0 and report["wrapped"] == 1.0, report
        assert report["weights"] < 1e-6 and report["grad_norm"] < 1e-6, report
        assert report["clipped"] == 1.0, report
        assert report["resume"] < 1e-6, report
        assert report["files"] == 1.0 and report["missing_error"] == 1.0, report
    assert sorted(tmp_path.iterdir()) == [OptimizerFiles(tmp_path).consolidated]
