"""CLIP image and text embeddings: the one CLIP loader of evaluation's CLIPScore and curation's scores.

    from opensora_core.models.clip import load_clip
    clip = load_clip("openai/clip-vit-large-patch14")   # hub id, local folder, or debug/tiny-clip
    img = clip.embed_images(frames)                     # uint8 [N, H, W, 3] -> [N, D], unit length
    txt = clip.embed_texts(["a cat on a sofa"])         # [M, D], unit length
    clip.text_frame_score(frames, "a cat on a sofa")    # clip_score: mean over frames of 100 * max(cos, 0)

The model is transformers' ``CLIPModel`` (both towers; ``config.json`` with ``model_type`` ``"clip"``) loaded
from a local folder or a hub id like the text encoders (:mod:`opensora_core.models.pretrained`: one clear error
when missing, ``HF_HUB_OFFLINE`` honoured): weights only (safetensors when the folder has them, otherwise a
``weights_only`` torch load), never ``trust_remote_code``. ``debug/tiny-clip`` is a tiny CLIP built in code
(:func:`opensora_core.models.tiny.build_tiny_clip_model`; its text tower is the ``debug/tiny-clip`` text
encoder). Images go through CLIP's own preprocessing (the processor's resize of the shorter side, centre crop
and normalisation, PIL backend, so results do not depend on whether torchvision is installed); texts are
truncated to the tokenizer's maximum length (77 for CLIP). Embeddings are the projected features
(``get_image_features`` / ``get_text_features``) divided by their L2 norm, float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from opensora_core.models.pretrained import (
    call_hub,
    hub_kwargs,
    is_debug_id,
    looks_like_local_path,
    resolve_local_folder,
)

DEBUG_CLIP = "debug/tiny-clip"
BATCH = 64  # images or texts per forward pass


@dataclass
class ClipEmbedder:
    """A loaded CLIP model with its image processor and tokenizer (see the module docstring)."""

    model: Any  # transformers CLIPModel, eval mode
    processor: Any  # CLIPImageProcessorPil
    tokenizer: Any
    device: torch.device
    name: str = ""

    @property
    def dim(self) -> int:
        """Embedding width (the projection dimension)."""
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed_images(self, frames: Any) -> torch.Tensor:
        """Unit-length image embeddings ``[N, D]`` of ``frames``: uint8 ``[N, H, W, 3]`` (array or tensor) or
        float ``[N, 3, H, W]`` in [0, 1]."""
        images, rescale = _image_batch(frames)
        out = []
        for i in range(0, len(images), BATCH):
            pixels = self.processor(images=images[i : i + BATCH], return_tensors="pt", do_rescale=rescale)
            feats = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
            out.append(_unit(feats))
        return torch.cat(out)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings ``[M, D]`` (each text truncated to the tokenizer's maximum length)."""
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
        out = []
        for i in range(0, len(texts), BATCH):
            tokens = self.tokenizer(
                list(texts[i : i + BATCH]), padding=True, truncation=True, return_tensors="pt"
            )
            feats = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
            out.append(_unit(feats))
        return torch.cat(out)

    def text_frame_score(self, frames: Any, text: str) -> float:
        """:func:`clip_score` of ``frames`` against one text."""
        return clip_score(self.embed_images(frames), self.embed_texts([text])[0])


def clip_score(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> float:
    """CLIPScore of images ``[N, D]`` against one text ``[D]`` (unit-length embeddings): the mean over the images
    of ``100 * max(cos(image, text), 0)`` (torchmetrics' ``CLIPScore`` of each image, averaged)."""
    cos = image_embeds @ text_embed  # [N]
    return float((100.0 * cos.clamp(min=0)).mean())


def _unit(features: Any) -> torch.Tensor:
    """Projected features (a tensor, or transformers 5's output with ``pooler_output``) -> float32 CPU ``[N, D]``
    of unit length."""
    x = features if isinstance(features, torch.Tensor) else features.pooler_output
    x = x.float().cpu()
    return x / x.norm(dim=-1, keepdim=True)


def _image_batch(frames: Any) -> tuple[list[Any], bool]:
    """``(list of images, do_rescale)`` for the processor; ValueError for any other layout."""
    arr = frames.detach().cpu() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    shape = tuple(arr.shape)
    if len(shape) != 4 or shape[0] == 0:
        raise ValueError(f"frames must be [N, H, W, 3] uint8 or [N, 3, H, W] float, got shape {shape}")
    if arr.dtype in (np.uint8, torch.uint8):
        if shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [N, H, W, 3] (RGB last), got shape {shape}")
        return [np.asarray(f) for f in arr], True
    if shape[1] != 3:
        raise ValueError(f"float frames must be [N, 3, H, W] in [0, 1], got shape {shape}")
    return [np.asarray(f, dtype=np.float32) for f in arr], False


def load_clip(
    name: str,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> ClipEmbedder:
    """Load the CLIP model ``name`` (hub id, local folder or ``debug/tiny-clip``) on ``device`` (None: CUDA when
    available, else the CPU).

    Raises :class:`~opensora_core.models.pretrained.ModelNotFoundError` when it cannot be found and ValueError
    when it is not a full CLIP model (e.g. a vision-only ``CLIPVisionModelWithProjection`` folder).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if is_debug_id(name):
        if name != DEBUG_CLIP:
            raise ValueError(f"unknown debug CLIP model {name!r}; the debug id is {DEBUG_CLIP!r}")
        from opensora_core.models.tiny import build_tiny_clip_model

        model, processor, tokenizer = build_tiny_clip_model()
        return ClipEmbedder(model.eval().to(dev), processor, tokenizer, dev, name)
    from transformers import AutoConfig, CLIPModel
    from transformers.models.clip import CLIPImageProcessorPil

    from opensora_core.models.text_encoders import load_tokenizer

    what = "CLIP model"
    if looks_like_local_path(name):
        source, kwargs = str(resolve_local_folder(name, None, what)), {}
    else:
        source, kwargs = name, hub_kwargs(cache_dir, local_files_only, None)
    config = call_hub(AutoConfig.from_pretrained, source, what, **kwargs)
    if config.model_type != "clip":
        raise ValueError(
            f"{what} {name!r} is a {config.model_type!r} model; CLIP scores need both towers of a CLIPModel "
            "(model_type 'clip'), e.g. openai/clip-vit-large-patch14"
        )
    model = call_hub(CLIPModel.from_pretrained, source, what, config=config, **kwargs)
    processor = call_hub(CLIPImageProcessorPil.from_pretrained, source, what, **kwargs)
    tokenizer = load_tokenizer(name, what, cache_dir, local_files_only)
    return ClipEmbedder(model.eval().to(dev), processor, tokenizer, dev, name)


__all__ = ["DEBUG_CLIP", "ClipEmbedder", "clip_score", "load_clip"]
