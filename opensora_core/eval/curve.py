"""Learning curve: caption agreement of a run's checkpoints against training time.

    from opensora_core.eval.curve import checkpoint_curve, plot_curve
    points = checkpoint_curve(exp_dir, out_dir, minutes={250: 1.1, 500: 2.0})   # every complete checkpoint
    print(format_curve(points)); plot_curve(points, out_dir / "learning_curve.png")

Each checkpoint's EMA weights (model weights when it has none) sample the synthetic prompts with
:func:`~opensora_core.eval.evaluate.evaluate` (same seed and settings for every checkpoint, so the points differ
only by training), and their colour and motion-direction accuracy become one point. ``minutes`` maps a global step
to the training minutes at which it was reached (e.g. from the training run's MLflow metric timestamps); steps it
lacks get NaN minutes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opensora_core.eval.metrics import CHANCE_DIRECTION


@dataclass(frozen=True)
class CurvePoint:
    """Caption agreement of one checkpoint."""

    global_step: int
    minutes: float
    colour_accuracy: float
    direction_accuracy: float


def checkpoint_curve(
    exp_dir: str,
    output_dir: str | Path,
    minutes: Mapping[int, float] | None = None,
    prompts: Sequence[str] | None = None,
    *,
    num_sampling_steps: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> list[CurvePoint]:
    """One :class:`CurvePoint` per complete checkpoint of ``exp_dir``, oldest first (videos under ``output_dir``).

    Raises ValueError when ``exp_dir`` has no complete checkpoint or a prompt is not a synthetic caption.
    """
    from opensora_core import checkpoint as ckpt
    from opensora_core.eval.evaluate import evaluate

    refs = ckpt.list_checkpoints(exp_dir)
    if not refs:
        raise ValueError(f"{exp_dir} has no complete checkpoint; train with ckpt_every > 0 to get a curve")
    minutes = minutes or {}
    points = []
    for ref in sorted(refs, key=lambda r: r.global_step):
        has_ema = bool(ckpt.read_running_states_uri(ref.uri).get("ema", False))
        result = evaluate(
            ref.uri,
            str(Path(output_dir) / f"step{ref.global_step:06d}"),
            prompts,
            weights=("ema",) if has_ema else ("model",),
            num_sampling_steps=num_sampling_steps,
            seed=seed,
            batch_size=batch_size,
        )
        m = result.metrics
        if "direction_accuracy" not in m:
            raise ValueError(
                "the curve needs synthetic captions as prompts (opensora_core.eval.synthetic_prompts)"
            )
        points.append(
            CurvePoint(
                ref.global_step,
                float(minutes.get(ref.global_step, math.nan)),
                m["colour_accuracy"],
                m["direction_accuracy"],
            )
        )
    return points


def format_curve(points: Sequence[CurvePoint]) -> str:
    """A text table: step, training minutes, colour and direction accuracy."""
    lines = ["  step   train min   colour   direction"]
    lines += [
        f"{p.global_step:6d}   {p.minutes:9.2f}   {100 * p.colour_accuracy:5.1f}%   {100 * p.direction_accuracy:8.1f}%"
        for p in points
    ]
    return "\n".join(lines)


def plot_curve(points: Sequence[CurvePoint], path: str | Path, title: str = "caption agreement") -> Path:
    """Accuracy (colour, direction; chance dashed) against training minutes (steps when minutes are unknown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not points:
        raise ValueError("no curve points to plot")
    use_minutes = all(math.isfinite(p.minutes) for p in points)
    xs = [p.minutes if use_minutes else p.global_step for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        ax.plot(xs, [100 * p.direction_accuracy for p in points], "o-", label="motion direction")
        ax.plot(xs, [100 * p.colour_accuracy for p in points], "s-", label="colour")
        ax.axhline(100 * CHANCE_DIRECTION, color="grey", linestyle="--", label="chance (25%)")
        for x, p in zip(xs, points, strict=True):
            ax.annotate(
                f"{p.global_step}",
                (x, 100 * p.direction_accuracy),
                fontsize=7,
                xytext=(2, -10),
                textcoords="offset points",
            )
        ax.set_xlabel("training minutes" if use_minutes else "training steps")
        ax.set_ylabel("accuracy of the EMA weights (%)")
        ax.set_ylim(0, 102)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
