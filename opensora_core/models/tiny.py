"""Tiny, deterministic, offline stand-ins for the pretrained VAE and text encoders (tests, demos, debugging).

Debug ids usable as ``from_pretrained``:

==========================  ===========================================================================
``debug/tiny-t5``           T5 encoder, d_model 32, 2 layers, 2 heads; unigram tokenizer trained in code
``debug/tiny-clip``         CLIP text model, hidden 32, 2 layers, 2 heads; byte-level BPE learned in code
``debug/tiny-vae``          diffusers ``AutoencoderKL``, 4 latent channels, 8x spatial downsampling
``debug/tiny-vae-temporal`` diffusers ``AutoencoderKLTemporalDecoder``, same latent layout
==========================  ===========================================================================

Weights come from a fixed seed (the global RNG is left untouched), tokenizers from a fixed sentence list, so the
same id gives bitwise the same weights and token ids in every process (same torch / sentencepiece versions).
Builds are cached in-process; callers get independent copies. ``save_tiny_*`` write ordinary Hugging Face
folders (``config.json`` + safetensors + ``tokenizer.json``) to exercise the local-folder loading path.
"""

from __future__ import annotations

import copy
import functools
import io
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from opensora_core.models.text_encoders import t5_tokenizer_from_sentencepiece

T = TypeVar("T")

TINY_SEED = 20240318

# Captions of the synthetic "coloured shape moving" clips plus a few generic video captions.
TINY_SENTENCES: tuple[str, ...] = (
    "a red circle moving left",
    "a red square moving right",
    "a red triangle moving up",
    "a red circle moving down",
    "a blue square",
    "a blue circle moving right",
    "a blue triangle moving left",
    "a blue square moving down",
    "a green triangle",
    "a green circle moving up",
    "a green square moving left",
    "a green triangle moving right",
    "a yellow circle",
    "a yellow square moving up",
    "a yellow triangle moving down",
    "a yellow circle moving left",
    "a white dot on a black background",
    "a small red square moves slowly to the left",
    "a large blue circle moves quickly to the right",
    "the green triangle goes up and then down",
    "up",
    "down",
    "left",
    "right",
    "red green blue yellow white black",
    "the camera pans over a city at night",
    "a dog runs on the beach at sunset",
    "waves crash on the rocks near the shore",
    "a timelapse of clouds over the mountains",
    "a person walks through a snowy forest",
    "a cat sleeps in the sun",
    "a car drives along a road in the rain",
    "aerial view of a river in autumn",
    "close up of a flower in the wind",
    "A Red Circle, a Blue Square, a Green Triangle and a Yellow Circle.",
    "Frames 0 1 2 3 4 5 6 7 8 9: the shape moves (slowly) from LEFT to RIGHT!",
)


def _seeded(build: Callable[[], T], seed: int = TINY_SEED) -> T:
    """Run ``build`` with torch's CPU RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ----------------------------------------------------------------------------------------------------- T5
def train_tiny_sentencepiece(vocab_size: int = 160) -> bytes:
    """Train a small unigram sentencepiece model on :data:`TINY_SENTENCES`; returns the serialized model.

    T5 layout: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, no BOS. Single-threaded training is deterministic.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_SENTENCES),
        model_writer=buffer,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    return buffer.getvalue()


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
def learn_bpe_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Learn byte-pair merges (CLIP style: the last symbol of a word carries ``</w>``) from ``words``.

    Ties between equally frequent pairs go to the lexicographically smallest pair, so the result is fixed.
    """
    counts = Counter(words)
    words_as_symbols = {w: [*w[:-1], w[-1] + "</w>"] for w in counts}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, symbols in words_as_symbols.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += counts[word]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for word, symbols in words_as_symbols.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            words_as_symbols[word] = merged
    return merges


def build_tiny_clip_tokenizer(num_merges: int = 400):
    """A ``CLIPTokenizer`` whose byte-level BPE vocabulary is learned from :data:`TINY_SENTENCES`.

    Every byte is in the vocabulary, so any text tokenizes without unknown tokens.
    """
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    words = [w for s in TINY_SENTENCES for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", s.lower())]
    merges = learn_bpe_merges(words, num_merges)
    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [c + "</w>" for c in alphabet]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


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


def load_debug_vae(name: str, kind: str) -> nn.Module:
    """The diffusers module for a debug VAE id; ``kind`` is the VAE ``type`` asking for it."""
    builders = {"debug/tiny-vae": build_tiny_vae, "debug/tiny-vae-temporal": build_tiny_temporal_vae}
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
    "TINY_SENTENCES",
    "build_tiny_clip",
    "build_tiny_clip_tokenizer",
    "build_tiny_t5",
    "build_tiny_temporal_vae",
    "build_tiny_vae",
    "debug_text_model_ids",
    "debug_vae_ids",
    "learn_bpe_merges",
    "load_debug_text_model",
    "load_debug_vae",
    "save_tiny_clip",
    "save_tiny_t5",
    "save_tiny_vae",
    "train_tiny_sentencepiece",
]
