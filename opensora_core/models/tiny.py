"""Tiny, deterministic, offline stand-ins for the pretrained VAE and text encoders (tests, demos, debugging).

Debug ids usable as ``from_pretrained``:

==========================  ===========================================================================
``debug/tiny-t5``           T5 encoder, d_model 32, 2 layers, 2 heads; unigram tokenizer trained in code
``debug/tiny-clip``         CLIP text model, hidden 32, 2 layers, 2 heads; byte-level BPE learned in code
                            (both tokenizers: :mod:`opensora_core.testing.tokenizers`). As a full CLIP
                            (:mod:`opensora_core.models.clip`): that text tower plus a ViT of 32-px images,
                            8-px patches, width 32, 2 layers; projections to 32
``debug/tiny-vae``          diffusers ``AutoencoderKL``, 4 latent channels, 8x spatial downsampling
``debug/tiny-vae-temporal`` diffusers ``AutoencoderKLTemporalDecoder``, same latent layout
``debug/tiny-vae-v1-2``     Open-Sora 1.2 VAE (``OpenSoraVAE_V1_2``): ``debug/tiny-vae`` then a ``VAE_Temporal``
                            of width 8 with the official 4x temporal compression (17 frames -> 5)
==========================  ===========================================================================

Weights come from a fixed seed (the global RNG is left untouched), tokenizers from a fixed sentence list, so the
same id gives bitwise the same weights and token ids in every process (same torch / sentencepiece versions).
Builds are cached in-process; callers get independent copies. ``save_tiny_*`` write ordinary Hugging Face
folders (``config.json`` + safetensors + ``tokenizer.json``) to exercise the local-folder loading path.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from opensora_core.models.t5_tokenizer import t5_tokenizer_from_sentencepiece
from opensora_core.testing.tokenizers import build_tiny_clip_tokenizer, train_tiny_sentencepiece

T = TypeVar("T")

TINY_SEED = 20240318


def _seeded(build: Callable[[], T], seed: int = TINY_SEED) -> T:
    """Run ``build`` with torch's CPU RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------------------------------- T5
@functools.lru_cache(maxsize=1)
def _tiny_t5() -> tuple[nn.Module, Any]:
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer_from_sentencepiece(train_tiny_sentencepiece(), extra_ids=0, model_max_length=120)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",  # as in T5 v1.1 (DeepFloyd/t5-v1_1-xxl)
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(lambda: T5EncoderModel(config))
    return model.eval(), tokenizer


def build_tiny_t5() -> tuple[nn.Module, Any]:
    """``(T5EncoderModel, T5Tokenizer)`` of ``debug/tiny-t5`` (fresh copies of a cached build)."""
    model, tokenizer = _tiny_t5()
    return copy.deepcopy(model), copy.deepcopy(tokenizer)


# --------------------------------------------------------------------------------------------------- CLIP
@functools.lru_cache(maxsize=1)
def _tiny_clip() -> tuple[nn.Module, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(lambda: CLIPTextModel(config))
    return model.eval(), tokenizer


def build_tiny_clip() -> tuple[nn.Module, Any]:
    """``(CLIPTextModel, CLIPTokenizer)`` of ``debug/tiny-clip`` (fresh copies of a cached build)."""
    model, tokenizer = _tiny_clip()
    return copy.deepcopy(model), copy.deepcopy(tokenizer)


@functools.lru_cache(maxsize=1)
def _tiny_clip_model() -> tuple[nn.Module, Any, Any]:
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig
    from transformers.models.clip import CLIPImageProcessorPil

    text, tokenizer = _tiny_clip()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = CLIPConfig(text_config=text.config.to_dict(), vision_config=vision.to_dict(), projection_dim=32)
    model = _seeded(lambda: CLIPModel(config), seed=TINY_SEED + 3)  # cosines of both signs: the clamp shows
    model.text_model.load_state_dict(text.state_dict())  # the text encoder's debug/tiny-clip
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model.eval(), processor, tokenizer


def build_tiny_clip_model() -> tuple[nn.Module, Any, Any]:
    """``(CLIPModel, CLIPImageProcessorPil, CLIPTokenizer)`` of ``debug/tiny-clip`` as a full CLIP (both towers;
    the text tower is :func:`build_tiny_clip`'s model), fresh copies of a cached build."""
    model, processor, tokenizer = _tiny_clip_model()
    return copy.deepcopy(model), copy.deepcopy(processor), copy.deepcopy(tokenizer)


# ---------------------------------------------------------------------------------------------------- VAE
@functools.lru_cache(maxsize=1)
def _tiny_vae() -> nn.Module:
    from diffusers import AutoencoderKL

    def build() -> nn.Module:
        # 4 blocks -> 3 downsamplings -> H/8, W/8 (the SD-VAE layout with tiny widths).
        return AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=64,
        )

    return _seeded(build).eval()


@functools.lru_cache(maxsize=1)
def _tiny_temporal_vae() -> nn.Module:
    from diffusers import AutoencoderKLTemporalDecoder

    def build() -> nn.Module:
        # The temporal decoder's group norms use 32 groups, hence widths of 32.
        return AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(32, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
        )

    return _seeded(build).eval()


# VAE_Temporal arguments of debug/tiny-vae-v1-2: VAE_Temporal_SD's layout (4 channels, frames / 4), tiny widths.
TINY_VAE_TEMPORAL: dict[str, Any] = dict(
    in_out_channels=4,
    latent_embed_dim=4,
    embed_dim=4,
    filters=8,
    num_res_blocks=1,
    channel_multipliers=(1, 2, 2),
    temporal_downsample=(True, True),
    num_groups=4,
)


@functools.lru_cache(maxsize=1)
def _tiny_vae_temporal() -> nn.Module:
    from opensora_core.models.vae_temporal import VAE_Temporal

    return _seeded(lambda: VAE_Temporal(**TINY_VAE_TEMPORAL), seed=TINY_SEED + 12).eval()


def build_tiny_vae_v1_2() -> tuple[nn.Module, nn.Module]:
    """``(spatial AutoencoderKL, VAE_Temporal)`` of ``debug/tiny-vae-v1-2`` (fresh copies)."""
    return build_tiny_vae(), copy.deepcopy(_tiny_vae_temporal())


def build_tiny_vae() -> nn.Module:
    """diffusers ``AutoencoderKL`` of ``debug/tiny-vae`` (a fresh copy)."""
    return copy.deepcopy(_tiny_vae())


def build_tiny_temporal_vae() -> nn.Module:
    """diffusers ``AutoencoderKLTemporalDecoder`` of ``debug/tiny-vae-temporal`` (a fresh copy)."""
    return copy.deepcopy(_tiny_temporal_vae())


# ------------------------------------------------------------------------------------------- debug ids
def debug_text_model_ids() -> dict[str, str]:
    """Debug text-model ids and the encoder ``type`` each belongs to."""
    return {"debug/tiny-t5": "t5", "debug/tiny-clip": "clip"}


def debug_vae_ids() -> dict[str, str]:
    """Debug VAE ids and the VAE ``type`` each belongs to."""
    return {
        "debug/tiny-vae": "VideoAutoencoderKL",
        "debug/tiny-vae-temporal": "VideoAutoencoderKLTemporalDecoder",
        "debug/tiny-vae-v1-2": "OpenSoraVAE_V1_2",
    }


def load_debug_text_model(name: str, kind: str) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` for a debug text-model id; ``kind`` is the encoder type asking for it."""
    builders = {"debug/tiny-t5": build_tiny_t5, "debug/tiny-clip": build_tiny_clip}
    ids = debug_text_model_ids()
    if name not in builders:
        raise ValueError(f"unknown debug text model '{name}'; known debug ids: {sorted(ids)}")
    if ids[name] != kind:
        raise ValueError(f"'{name}' is a {ids[name]} model; a '{kind}' text encoder cannot use it")
    return builders[name]()


def load_debug_vae(name: str, kind: str) -> Any:
    """The module(s) for a debug VAE id (a diffusers module; for the 1.2 VAE its two parts); ``kind`` is the VAE
    ``type`` asking for it."""
    builders: dict[str, Callable[[], Any]] = {
        "debug/tiny-vae": build_tiny_vae,
        "debug/tiny-vae-temporal": build_tiny_temporal_vae,
        "debug/tiny-vae-v1-2": build_tiny_vae_v1_2,
    }
    ids = debug_vae_ids()
    if name not in builders:
        raise ValueError(f"unknown debug VAE '{name}'; known debug ids: {sorted(ids)}")
    if ids[name] != kind:
        raise ValueError(f"'{name}' is a {ids[name]} VAE; type '{kind}' cannot use it")
    return builders[name]()


# ------------------------------------------------------------------------------------------------ saving
def save_tiny_t5(directory: str | Path) -> Path:
    """Write ``debug/tiny-t5`` as a Hugging Face folder (config.json, model.safetensors, tokenizer.json)."""
    model, tokenizer = build_tiny_t5()
    return _save(directory, model, tokenizer)


def save_tiny_clip(directory: str | Path) -> Path:
    """Write ``debug/tiny-clip`` as a Hugging Face folder (config.json, model.safetensors, tokenizer.json)."""
    model, tokenizer = build_tiny_clip()
    return _save(directory, model, tokenizer)


def save_tiny_clip_model(directory: str | Path) -> Path:
    """Write the full ``debug/tiny-clip`` as a Hugging Face folder (config.json, model.safetensors, tokenizer and
    preprocessor files), loadable by :func:`opensora_core.models.clip.load_clip`."""
    model, processor, tokenizer = build_tiny_clip_model()
    path = _save(directory, model, tokenizer)
    processor.save_pretrained(str(path))
    return path


def save_tiny_vae(directory: str | Path, temporal: bool = False) -> Path:
    """Write ``debug/tiny-vae`` (or the temporal decoder) as a diffusers folder (config.json + safetensors)."""
    return _save(directory, build_tiny_temporal_vae() if temporal else build_tiny_vae(), None)


def _save(directory: str | Path, model: Any, tokenizer: Any) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


__all__ = [
    "build_tiny_clip",
    "build_tiny_clip_model",
    "build_tiny_t5",
    "build_tiny_temporal_vae",
    "build_tiny_vae",
    "build_tiny_vae_v1_2",
    "debug_text_model_ids",
    "debug_vae_ids",
    "load_debug_text_model",
    "load_debug_vae",
    "save_tiny_clip",
    "save_tiny_clip_model",
    "save_tiny_t5",
    "save_tiny_vae",
]
