"""The local end-to-end run (`make demo`): the training pipeline on this machine, no cluster needed.

    python -m workflows.demo [--workdir outputs/demo] [--steps N] [--clips N] [--keep] [--random-weights]

A second run ``--keep --random-weights`` after a normal one registers the random initial weights against the
first run's champion: the gate rejects them, the version gets ``candidate`` only.

1. writes a synthetic captioned video set (coloured squares/circles moving through the middle of the frame;
   16x16 px, 8 frames, 128 clips);
2. runs ``workflows.train.train_pipeline`` through ``kfp.local.SubprocessRunner(use_venv=False)``: prepare_data
   -> train (``launcher="local"``: 2-process torchrun on CPU, ``configs/debug/demo.py``) -> evaluate (the
   trained EMA weights and the untrained model, same prompts and seed) -> register (MLflow registry, gated
   ``champion``);
3. MLflow uses a local sqlite store (``WORKDIR/mlflow/mlflow.db``; no server is started), storage is local
   folders;
4. evaluates every intermediate checkpoint of the run (EMA weights, the same prompts and seed) and logs the
   learning curve, caption colour and motion-direction accuracy against training minutes, to the training run
   (``learning_curve.png`` and ``curve/...`` metrics);
5. prints the metrics (trained vs untrained), the curve, where the videos are, the registered version and
   aliases, and the ``mlflow ui`` command to browse the runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opensora_core.eval.curve import CurvePoint

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "debug" / "demo.py"
DEMO_EXPERIMENT = "opensora-demo"
DEMO_MODEL = "opensora-demo"
DEMO_MARKER = ".opensora-demo"  # in every workdir the demo made (the only folders it empties)
DEMO_JITTER = 1  # pixels a clip's path may stray from the middle of the frame (synthetic.render_clip)
DEMO_SAMPLING_STEPS = 50  # rectified-flow Euler steps of the evaluation (configs/debug/demo.py)
# champion only when the trained model passes the default gate (validation loss at least 10% below the untrained
# model's on the held-out clips, every video valid), clearly beats the untrained one on caption colour and moves
# the shape in the caption's direction in at least 60% of the videos (chance: 25%)
DEMO_GATE = {
    "thresholds": {
        "val_loss_improvement": 0.1,
        "valid_fraction": 1.0,
        "colour_accuracy": 0.5,
        "colour_accuracy_gain": 0.25,
        "direction_accuracy": 0.6,
    }
}


@dataclass
class DemoResult:
    """What one demo run produced."""

    workdir: Path
    tracking_uri: str
    checkpoint_uri: str
    metrics: dict[str, float]
    eval_output_uri: str
    model_version: str
    aliases: list[str]
    champion: bool
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)
    curve_png: str = ""

    def mlflow_ui_command(self) -> str:
        """The command that browses the demo's runs and registered models (the venv's mlflow)."""
        return f"{_mlflow_executable()} ui --backend-store-uri {self.tracking_uri} --port 5000"

    def report(self) -> str:
        """Human-readable summary."""
        m = self.metrics

        def pct(key: str) -> str:
            return f"{100 * m[key]:5.1f}%" if key in m else "  n/a"

        lines = [
            "",
            "=" * 78,
            f"Open-Sora local pipeline demo finished in {self.seconds / 60:.1f} min",
            "=" * 78,
            f"checkpoint          {self.checkpoint_uri}",
            "evaluation          caption agreement of generated clips (chance: 25%)",
            f"  colour            trained EMA {pct('colour_accuracy')}   untrained {pct('untrained/colour_accuracy')}"
            f"   gain {100 * m.get('colour_accuracy_gain', float('nan')):+.1f} points",
            f"  motion direction  trained EMA {pct('direction_accuracy')}   untrained "
            f"{pct('untrained/direction_accuracy')}",
            f"  validation loss   trained EMA {m.get('val_loss', float('nan')):.4f}   untrained "
            f"{m.get('untrained/val_loss', float('nan')):.4f}   (held-out clips; "
            f"{100 * m.get('val_loss_improvement', float('nan')):.1f}% lower)",
            f"comparison page     {self.eval_output_uri}/comparison.html",
            f"videos              {self.eval_output_uri}/ema/  (untrained: {self.eval_output_uri}/untrained/)",
            f"preview grids       {self.eval_output_uri}/preview/ema.png, untrained.png",
            f"registered model    {DEMO_MODEL} version {self.model_version}, aliases {', '.join(self.aliases)}"
            + ("" if self.champion else f"  (no champion: gate {DEMO_GATE['thresholds']} not passed)"),
            f"browse the runs     {self.mlflow_ui_command()}",
        ]
        if self.curve:
            from opensora_core.eval.curve import format_curve

            lines += [
                f"learning curve      EMA weights of each checkpoint, same prompts and seed ({self.curve_png})",
                *("  " + row for row in format_curve(self.curve).splitlines()),
            ]
        lines.append("=" * 78)
        return "\n".join(lines)


def _mlflow_executable() -> str:
    """``mlflow`` next to this interpreter (relative to the current folder when inside it), else ``mlflow``."""
    exe = Path(sys.executable).with_name("mlflow")
    if not exe.is_file():
        return "mlflow"
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def demo_parameters(
    workdir: Path,
    tracking_uri: str,
    steps: int | None = None,
    eval_prompts: list[str] | None = None,
    eval_sampling_steps: int = DEMO_SAMPLING_STEPS,
    gate: dict[str, Any] | None = None,
    extra_cfg_options: list[str] | None = None,
) -> dict[str, Any]:
    """Pipeline arguments of the local run (local launcher, local folders, sqlite MLflow)."""
    from opensora_core.config.identity import git_commit
    from opensora_core.eval import synthetic_prompts

    cfg_options = list(extra_cfg_options or [])
    if steps is not None:
        cfg_options.append(f"max_steps={steps}")
    return {
        "config": str(DEMO_CONFIG),
        "cfg_options": cfg_options,
        "raw_data_uri": str(workdir / "data"),
        "prepared_data_uri": str(workdir / "prepared"),
        "outputs_uri": str(workdir / "checkpoints"),
        "eval_output_uri": str(workdir / "eval"),
        "launcher": "local",
        "num_nodes": 1,
        "gpus_per_node": 0,
        "procs_per_node": 2,
        "mlflow_tracking_uri": tracking_uri,
        "mlflow_experiment": DEMO_EXPERIMENT,
        "model_name": DEMO_MODEL,
        "gate": dict(DEMO_GATE if gate is None else gate),
        "git_commit": git_commit(REPO_ROOT) or "",
        "prepare_workers": 1,
        "eval_prompts": eval_prompts or synthetic_prompts(),
        "eval_weights": ["ema", "untrained"],
        "eval_sampling_steps": eval_sampling_steps,
        "eval_batch_size": 16,
        "eval_gpus": 0,
    }


def prepare_workdir(workdir: Path, keep: bool = False) -> None:
    """Create ``workdir``; empty it first when a previous demo made it, unless ``keep``.

    A non-empty folder without the demo's marker (:data:`DEMO_MARKER`, or the ``demo_result.json`` of demos
    older than the marker) is refused with FileExistsError: the demo never deletes what it did not write."""
    if workdir.is_dir() and any(workdir.iterdir()):
        if not ((workdir / DEMO_MARKER).is_file() or (workdir / "demo_result.json").is_file()):
            raise FileExistsError(
                f"--workdir {workdir} is not empty and was not made by the demo (no {DEMO_MARKER}); give a new "
                "or empty folder"
            )
        if not keep:
            shutil.rmtree(workdir)
    elif workdir.exists() and not workdir.is_dir():
        raise FileExistsError(f"--workdir {workdir} is a file; give a folder")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / DEMO_MARKER).write_text(
        "made by python -m workflows.demo: the next demo run empties this folder unless it is given --keep\n"
    )


def make_dataset(folder: Path, clips: int, seed: int = 0) -> Any:
    """Write the synthetic clips (16x16 px, 8 frames) and their metadata table into ``folder``.

    Each path runs through the middle of the frame (``jitter=DEMO_JITTER`` pixels), so the caption nearly fixes
    the clip and the tiny model learns the motion direction within the demo's minutes (configs/debug/demo.py).
    """
    from opensora_core.data.synthetic import generate

    return generate(folder, clips, size=16, num_frames=8, fps=8, seed=seed, jitter=DEMO_JITTER)


def training_minutes(tracking_uri: str, run_id: str) -> dict[int, float]:
    """Minutes from the start of training run ``run_id`` to each checkpoint it wrote, by global step."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    start = client.get_run(run_id).info.start_time
    return {
        m.step: (m.timestamp - start) / 60000 for m in client.get_metric_history(run_id, "checkpoint_save_s")
    }


def learning_curve(
    checkpoint_uri: str,
    tracking_uri: str,
    out_dir: Path,
    eval_prompts: list[str] | None,
    eval_sampling_steps: int,
) -> tuple[list[CurvePoint], Path]:
    """Caption agreement of every checkpoint of the run that wrote ``checkpoint_uri`` on ``eval_prompts`` (None:
    the 32 synthetic captions); the curve PNG and the points are logged to that training run
    (``learning_curve.png``, ``curve/...`` metrics by step)."""
    from mlflow import MlflowClient

    from opensora_core import checkpoint as ckpt
    from opensora_core.checkpoint.find import parent
    from opensora_core.eval.curve import checkpoint_curve, plot_curve

    run_id = ckpt.read_running_states_uri(checkpoint_uri).get("mlflow_run_id")
    minutes = training_minutes(tracking_uri, run_id) if run_id else {}
    points = checkpoint_curve(
        parent(checkpoint_uri),
        out_dir,
        minutes,
        eval_prompts,
        num_sampling_steps=eval_sampling_steps,
        batch_size=16,
    )
    png = plot_curve(
        points, out_dir / "learning_curve.png", title="demo: caption agreement of the EMA weights"
    )
    if run_id:
        client = MlflowClient(tracking_uri)
        client.log_artifact(run_id, str(png))
        for p in points:
            client.log_metric(run_id, "curve/colour_accuracy", p.colour_accuracy, step=p.global_step)
            client.log_metric(run_id, "curve/direction_accuracy", p.direction_accuracy, step=p.global_step)
            client.log_metric(run_id, "curve/train_minutes", p.minutes, step=p.global_step)
    return points, png


def run_demo(
    workdir: str | Path = "outputs/demo",
    *,
    steps: int | None = None,
    clips: int = 128,
    eval_prompts: list[str] | None = None,
    eval_sampling_steps: int = DEMO_SAMPLING_STEPS,
    gate: dict[str, Any] | None = None,
    extra_cfg_options: list[str] | None = None,
    keep: bool = False,
    random_weights: bool = False,
) -> DemoResult:
    """Run the whole local pipeline in ``workdir`` and return its outputs.

    A previous demo's ``workdir`` is emptied first unless ``keep``: then its MLflow store, registry and dataset
    are reused and the new version is gated against the registered ``champion``. ``random_weights`` registers
    the random initial weights instead of a trained model: one training step with ``ema_decay=1.0``, so the
    EMA weights that are evaluated and registered stay at their initialisation (what the gate must reject).
    A non-empty folder the demo did not make is refused, never emptied."""
    from kfp import local

    from opensora_core.model_registry import ensure_experiment
    from workflows.train import train_pipeline

    t0 = time.perf_counter()
    workdir = Path(workdir).resolve()
    prepare_workdir(workdir, keep)
    (workdir / "mlflow").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    if random_weights:
        steps = 1 if steps is None else steps
        extra_cfg_options = [*(extra_cfg_options or []), "ema_decay=1.0"]

    if keep and (workdir / "data" / "meta.csv").is_file():
        print(f"[demo] reusing the synthetic dataset in {workdir / 'data'}", flush=True)
    else:
        report = make_dataset(workdir / "data", clips)
        print(f"[demo] synthetic dataset: {report}", flush=True)
    timings["dataset_s"] = time.perf_counter() - t0

    tracking_uri = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    ensure_experiment(tracking_uri, DEMO_EXPERIMENT, (workdir / "mlflow" / "artifacts").as_uri())
    timings["mlflow_setup_s"] = time.perf_counter() - t0 - timings["dataset_s"]

    params = demo_parameters(
        workdir, tracking_uri, steps, eval_prompts, eval_sampling_steps, gate, extra_cfg_options
    )
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(workdir / "kfp"))
    with warnings.catch_warnings():
        # The cluster-only settings (accelerators, images, kfp-kubernetes) are no-ops here.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        t_pipe = time.perf_counter()
        run = train_pipeline(**params)
        timings["pipeline_s"] = time.perf_counter() - t_pipe
    out = run.outputs
    result = DemoResult(
        workdir=workdir,
        tracking_uri=tracking_uri,
        checkpoint_uri=out["checkpoint_uri"],
        metrics={k: float(v) for k, v in out["metrics"].items()},
        eval_output_uri=out["eval_output_uri"],
        model_version=str(out["model_version"]),
        aliases=list(out["aliases"]),
        champion=bool(out["champion"]),
        seconds=time.perf_counter() - t0,
        timings=timings,
    )
    t_curve = time.perf_counter()
    run_folder = Path(result.eval_output_uri).name  # the pipeline run's id: runs kept with --keep do not mix
    result.curve, png = learning_curve(
        result.checkpoint_uri, tracking_uri, workdir / "curve" / run_folder, eval_prompts, eval_sampling_steps
    )
    result.curve_png = str(png)
    timings["curve_s"] = time.perf_counter() - t_curve
    result.seconds = time.perf_counter() - t0
    (workdir / "demo_result.json").write_text(  # the latest run's summary
        json.dumps(
            {**result.__dict__, "workdir": str(workdir), "curve": [p.__dict__ for p in result.curve]},
            indent=2,
            default=str,
        )
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`make demo`)."""
    parser = argparse.ArgumentParser(prog="python -m workflows.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/demo", help="everything the demo writes goes here")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--clips", type=int, default=128, help="synthetic clips to train on")
    parser.add_argument(
        "--eval-sampling-steps",
        type=int,
        default=DEMO_SAMPLING_STEPS,
        help="sampling steps (rectified-flow Euler steps)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the previous demo's MLflow store, registry and dataset in --workdir: the new version is gated "
        "against its champion (default: a previous demo's workdir is emptied)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="register the random initial weights instead of a trained model (1 step, ema_decay=1.0); with "
        "--keep after a normal demo it shows the gate keeping the champion",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        result = run_demo(
            args.workdir,
            steps=args.steps,
            clips=args.clips,
            eval_sampling_steps=args.eval_sampling_steps,
            keep=args.keep,
            random_weights=args.random_weights,
        )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.report(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
