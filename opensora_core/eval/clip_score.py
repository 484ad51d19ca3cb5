"""CLIPScore of generated videos: how well each video matches its prompt, by a CLIP model.

    from opensora_core.eval.clip_score import clip_scores
    from opensora_core.models.clip import load_clip
    scores = clip_scores(load_clip("openai/clip-vit-base-patch32"), videos, prompts)   # one per prompt

Per prompt: the mean over the video's frames of ``100 * max(cos(image, text), 0)`` with unit-length CLIP
embeddings (:func:`opensora_core.models.clip.clip_score`; torchmetrics' ``CLIPScore`` of each frame, averaged).
Deterministic: CLIP runs in eval mode on fixed inputs. Higher is better (0 to 100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLIP_SCORE = "clip_score"


def clip_scores(clip: Any, videos: Sequence[Any], prompts: Sequence[str]) -> list[float]:
    """CLIPScore of ``videos[i]`` (uint8 ``[T, H, W, 3]``) against ``prompts[i]``; ``clip`` is a
    :class:`~opensora_core.models.clip.ClipEmbedder`."""
    from opensora_core.models.clip import clip_score

    if len(videos) != len(prompts) or not prompts:
        raise ValueError(f"{len(videos)} videos and {len(prompts)} prompts: pass one prompt per video")
    texts = clip.embed_texts(list(prompts))  # [N, D]
    return [clip_score(clip.embed_images(video), text) for video, text in zip(videos, texts, strict=True)]
