"""Tokenizers trained in code on a fixed caption list, for the tiny debug text encoders.

``debug/tiny-t5`` uses :func:`train_tiny_sentencepiece` (a unigram sentencepiece model) and ``debug/tiny-clip``
:func:`build_tiny_clip_tokenizer` (a byte-level BPE learned by :func:`learn_bpe_merges`). Both are deterministic:
the same corpus gives the same vocabulary and token ids in every process (same sentencepiece / tokenizers
versions).
"""

from __future__ import annotations

import io
import re
from collections import Counter

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


__all__ = ["TINY_SENTENCES", "build_tiny_clip_tokenizer", "learn_bpe_merges", "train_tiny_sentencepiece"]
