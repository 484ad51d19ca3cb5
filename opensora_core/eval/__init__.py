"""Evaluation of trained checkpoints: sampling an evaluation prompt set, metrics, MLflow logging.

    from opensora_core.eval import evaluate, score_caption_agreement, synthetic_prompts, video_statistics
    result = evaluate(checkpoint_dir, "outputs/eval", weights=("ema", "untrained"))
    result.metrics["colour_accuracy"], result.metrics["untrained/colour_accuracy"]

- ``metrics``: caption agreement on the synthetic set (colour and motion direction of the shape against the
  caption; chance 25% each) and prompt-independent video statistics. Cheap to import (numpy only).
- ``evaluate``: ``evaluate(checkpoint, output_dir, prompts=None, ...) -> EvalResult`` (torch loaded lazily,
  so importing this package stays cheap).
- ``clip_score`` (CLIPScore per prompt with a CLIP model, ``clip_model=``) and ``fvd`` (Fréchet video distance to
  the held-out clips with a TorchScript or transformers video feature extractor, ``fvd_extractor=``); ``frechet``
  the distance, ``val_loss`` the validation loss, ``gate`` the promotion rules.
"""

from __future__ import annotations

from opensora_core.eval.evaluate import EvalResult, evaluate
from opensora_core.eval.metrics import (
    CHANCE_COLOUR,
    CHANCE_DIRECTION,
    CaptionAgreement,
    ClipVerdict,
    is_synthetic_prompt,
    score_caption_agreement,
    synthetic_prompts,
    video_statistics,
)

__all__ = [
    "CHANCE_COLOUR",
    "CHANCE_DIRECTION",
    "CaptionAgreement",
    "ClipVerdict",
    "EvalResult",
    "evaluate",
    "is_synthetic_prompt",
    "score_caption_agreement",
    "synthetic_prompts",
    "video_statistics",
]
