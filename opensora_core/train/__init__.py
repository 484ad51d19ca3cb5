"""Distributed training: ``python -m opensora_core.train CONFIG [flags]`` or ``train(cfg) -> TrainResult``.

    from opensora_core.config import load_config
    from opensora_core.train import train
    result = train(load_config("configs/debug/tiny_train.py"))
    result.checkpoint_dir, result.final_metrics

Under torchrun every process calls ``train``; see docs/training.md for checkpoints, resume and metrics.
Heavy modules (models, data, MLflow) load when ``train`` runs, not on import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opensora_core.config import RunConfig
    from opensora_core.train.loop import TrainResult

__all__ = ["TrainResult", "TrainingAborted", "train"]


def train(cfg: RunConfig, *, ema: bool = True, env: Any = None) -> TrainResult:
    """Train ``cfg`` in this process (see :func:`opensora_core.train.loop.train`)."""
    from opensora_core.train.loop import train as _train

    return _train(cfg, ema=ema, env=env)


def __getattr__(name: str) -> Any:
    if name in ("TrainResult", "TrainingAborted"):
        from opensora_core.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
