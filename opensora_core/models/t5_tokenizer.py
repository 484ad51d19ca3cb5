"""T5 tokenizers from sentencepiece models: ``spiece.model`` bytes -> a transformers ``T5Tokenizer``.

Used to load ``spiece.model``-only folders (DeepFloyd/t5-v1_1-xxl, Open-Sora 1.0's ``t5_ckpts``) and to turn the
tiny in-code sentencepiece model of ``debug/tiny-t5`` into a tokenizer. No protobuf-generated code is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field_number, wire_type, value)`` of a serialized protobuf message (no schema needed)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} in sentencepiece model")
        yield field, wire, value


def sentencepiece_charsmap(model_proto: bytes) -> bytes | None:
    """The normalizer's ``precompiled_charsmap`` of a sentencepiece ``ModelProto`` (None when absent).

    Parsed from the wire format directly: the protobuf-generated sentencepiece module does not load with
    protobuf 6 (gencode/runtime mismatch), which is also why transformers 5 cannot convert ``spiece.model``.
    """
    for field, wire, value in _proto_fields(model_proto):
        if field == 3 and wire == 2:  # ModelProto.normalizer_spec
            for sub_field, sub_wire, sub_value in _proto_fields(value):
                if sub_field == 2 and sub_wire == 2:  # NormalizerSpec.precompiled_charsmap
                    return bytes(sub_value) or None
    return None


def t5_tokenizer_from_sentencepiece(
    model_proto: bytes, extra_ids: int = 100, model_max_length: int | None = None
):
    """Build a transformers 5 ``T5Tokenizer`` from the bytes of a sentencepiece unigram model (``spiece.model``).

    The vocabulary (pieces and scores) is read by sentencepiece itself, the normalizer charsmap from the proto;
    ``extra_ids`` sentinel tokens are appended in T5's order (``<extra_id_0>`` last). Token ids equal
    ``SentencePieceProcessor.encode`` ids plus the EOS that T5 appends.
    """
    import sentencepiece as spm
    from transformers import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    expected = {"pad": (sp.pad_id(), 0), "eos": (sp.eos_id(), 1), "unk": (sp.unk_id(), 2)}
    wrong = {k: v[0] for k, v in expected.items() if v[0] != v[1]}
    if wrong:
        raise ValueError(
            f"not a T5 sentencepiece model: T5 needs pad=0, eos=1, unk=2 but the model has {wrong}"
        )
    vocab = [(sp.id_to_piece(i), float(sp.get_score(i))) for i in range(sp.get_piece_size())]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    kwargs: dict[str, Any] = {}
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    return T5Tokenizer(
        vocab=vocab,
        eos_token=sp.id_to_piece(1),
        unk_token=sp.id_to_piece(2),
        pad_token=sp.id_to_piece(0),
        _spm_precompiled_charsmap=sentencepiece_charsmap(model_proto),
        extra_ids=extra_ids,
        **kwargs,
    )


__all__ = ["sentencepiece_charsmap", "t5_tokenizer_from_sentencepiece"]
