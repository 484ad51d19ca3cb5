"""Text encoders: T5 / CLIP / classes outputs, padding and truncation, dedupe, null captions, loading, errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from torch import nn

from opensora_core.config import ConfigError
from opensora_core.models import tiny
from opensora_core.models.pretrained import ModelNotFoundError
from opensora_core.models.t5_tokenizer import t5_tokenizer_from_sentencepiece
from opensora_core.models.text_encoders import (
    ClassEncoder,
    ClipTextEncoder,
    T5TextEncoder,
    build_text_encoder,
)
from opensora_core.testing.tokenizers import train_tiny_sentencepiece

L = 16


def t5(max_length: int = L, **kwargs) -> T5TextEncoder:
    return build_text_encoder(
        dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=max_length, **kwargs)
    )


def clip(**kwargs) -> ClipTextEncoder:
    return build_text_encoder(dict(type="clip", from_pretrained="debug/tiny-clip", **kwargs))


def test_t5_output_shapes_and_padding_mask():
    enc = t5()
    prompts = ["a red circle moving left", "blue square", "up"]
    out = enc.encode(prompts)
    assert enc.output_dim == 32 and enc.model_max_length == L
    assert out["y"].shape == (3, 1, L, 32) and out["mask"].shape == (3, L)
    counts = [len(enc.tokenizer(p).input_ids) for p in prompts]  # content tokens + EOS
    assert out["mask"].sum(dim=1).tolist() == counts
    ids, mask = enc.tokenize(prompts)
    for row, n in enumerate(counts):
        assert ids[row, n - 1].item() == enc.tokenizer.eos_token_id
        assert mask[row, :n].all() and not mask[row, n:].any()
        assert (ids[row, n:] == enc.tokenizer.pad_token_id).all()


def test_t5_truncates_at_model_max_length_and_keeps_eos():
    enc = t5(max_length=8)
    long_prompt = "a red circle moving left then a blue square moving right and up and down"
    assert len(enc.tokenizer(long_prompt).input_ids) > 8
    ids, mask = enc.tokenize([long_prompt])
    assert ids.shape == (1, 8) and mask.all()
    assert ids[0, -1].item() == enc.tokenizer.eos_token_id
    assert enc.encode([long_prompt])["y"].shape == (1, 1, 8, 32)


def test_identical_prompts_are_encoded_once():
    enc = t5()
    batches: list[int] = []
    enc.model.register_forward_hook(
        lambda module, args, kwargs, out: batches.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    prompts = ["a red circle", "a green triangle", "a red circle", "a red circle"]
    out = enc.encode(prompts)
    assert batches == [2]
    assert torch.equal(out["y"][0], out["y"][2]) and torch.equal(out["mask"][0], out["mask"][3])
    single = [enc.encode([p]) for p in prompts]
    torch.testing.assert_close(out["y"], torch.cat([s["y"] for s in single]), atol=1e-5, rtol=1e-5)
    assert torch.equal(out["mask"], torch.cat([s["mask"] for s in single]))


class _FakeDiffusionModel(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.y_embedder = nn.Module()
        self.y_embedder.y_embedding = nn.Parameter(torch.randn(length, dim))


def test_t5_null_uses_the_diffusion_models_y_embedding():
    enc = t5()
    model = _FakeDiffusionModel(L, 32)
    with pytest.raises(ValueError, match="set_null_from_model"):
        enc.null(2)
    assert torch.equal(enc.null(3, model), model.y_embedder.y_embedding[None].repeat(3, 1, 1)[:, None])
    enc.set_null_from_model(model)
    null = enc.null(2)
    assert null.shape == (2, 1, L, 32) and torch.equal(null[1, 0], model.y_embedder.y_embedding)
    with torch.no_grad():
        model.y_embedder.y_embedding.add_(1.0)  # tracked live (EMA / loaded weights)
    assert torch.equal(enc.null(1)[0, 0], model.y_embedder.y_embedding)
    with pytest.raises(ValueError, match="model_max_length=16"):
        enc.null(1, _FakeDiffusionModel(L + 1, 32))
    with pytest.raises(ValueError, match="no 'y_embedder'"):
        enc.set_null_from_model(nn.Linear(2, 2))


def test_t5_dtype_and_prompt_validation():
    cfg = dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=L)
    enc = build_text_encoder(cfg, dtype=torch.bfloat16)
    assert enc.encode(["a red circle"])["y"].dtype == torch.bfloat16
    with pytest.raises(TypeError, match="list of prompts"):
        enc.encode("a red circle")
    with pytest.raises(ValueError, match="empty"):
        enc.encode([])
    with pytest.raises(TypeError, match="strings"):
        enc.encode(["ok", 3])


def test_tiny_t5_tokenizer_matches_sentencepiece():
    proto = train_tiny_sentencepiece()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tok = t5_tokenizer_from_sentencepiece(proto, extra_ids=2)
    for text in [
        "a red circle moving left",
        "  A  Red   ｃｉｒｃｌｅ ",
        "ﬁsh café",
        "green\ttriangle\nup",
        "",
    ]:
        assert tok(text).input_ids == sp.encode(text) + [1], text
    assert tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>"]) == [len(tok) - 1, len(tok) - 2]
    # the caption words of the synthetic clips tokenize without <unk> and stay distinguishable
    words = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "up", "down", "left", "right"]
    encoded = [tuple(sp.encode(w)) for w in words]
    assert len(set(encoded)) == len(words) and all(sp.unk_id() not in e for e in encoded)


def test_local_folder_t5_and_clip_match_debug_ids(tmp_path):
    t5_dir = tiny.save_tiny_t5(tmp_path / "t5")
    clip_dir = tiny.save_tiny_clip(tmp_path / "clip")
    for d in (t5_dir, clip_dir):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in d.iterdir()}
    prompts = ["a yellow circle moving down", "a dog"]
    local = build_text_encoder(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L))
    ref = t5()
    assert torch.equal(local.encode(prompts)["y"], ref.encode(prompts)["y"])
    assert torch.equal(local.tokenize(prompts)[0], ref.tokenize(prompts)[0])
    local_clip = build_text_encoder(dict(type="clip", from_pretrained=str(clip_dir)))
    assert torch.equal(local_clip.encode(prompts)["y"], clip().encode(prompts)["y"])


def test_spiece_only_folder_loads_through_sentencepiece(tmp_path):
    """The DeepFloyd/t5-v1_1-xxl layout (spiece.model, no tokenizer.json), and Open-Sora 1.0's t5_ckpts/ parent."""
    folder = tmp_path / "t5_ckpts" / "t5-v1_1-xxl"
    model, _ = tiny.build_tiny_t5()
    model.save_pretrained(str(folder))
    proto = train_tiny_sentencepiece()
    (folder / "spiece.model").write_bytes(proto)
    (folder / "tokenizer_config.json").write_text(json.dumps({"extra_ids": 0}))
    enc = build_text_encoder(dict(type="t5", from_pretrained=str(tmp_path / "t5_ckpts"), model_max_length=L))
    sp = spm.SentencePieceProcessor(model_proto=proto)
    text = "a green triangle moving right"
    ids, mask = enc.tokenize([text])
    n = len(sp.encode(text)) + 1
    assert ids[0, :n].tolist() == sp.encode(text) + [1] and int(mask.sum()) == n
    assert torch.equal(enc.encode([text])["y"], t5().encode([text])["y"])


def test_missing_model_gives_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        build_text_encoder(dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", cache_dir=str(tmp_path)))
    message = str(info.value)
    assert "DeepFloyd/t5-v1_1-xxl" in message
    assert "hf download DeepFloyd/t5-v1_1-xxl --local-dir pretrained_models/t5-v1_1-xxl" in message
    assert "huggingface-cli download DeepFloyd/t5-v1_1-xxl" in message
    assert info.value.__suppress_context__ and len(message.splitlines()) < 8
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        build_text_encoder(dict(type="clip", from_pretrained=str(tmp_path / "nowhere")))
    # weights missing from an otherwise valid folder
    folder = tiny.save_tiny_t5(tmp_path / "t5")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match=str(folder)):
        build_text_encoder(dict(type="t5", from_pretrained=str(folder)))


def test_clip_pooled_output_and_null():
    enc = clip()
    assert enc.model_max_length == 77 and enc.output_dim == 32
    out = enc.encode(["a red circle moving left", "blue square", "a red circle moving left"])
    assert out["y"].shape == (3, 1, 1, 32) and "mask" not in out
    assert torch.equal(out["y"][0], out["y"][2])
    ids = enc.tokenizer(["a red circle moving left"]).input_ids[0]
    assert len(ids) == 2 + 5  # whole words in the learned BPE vocabulary + BOS/EOS
    assert torch.equal(enc.null(2), enc.encode(["", ""])["y"])
    model = _FakeDiffusionModel(1, 32)
    assert torch.equal(enc.null(2, model)[1, 0, 0], model.y_embedder.y_embedding[0])


def test_class_encoder():
    enc = build_text_encoder(dict(type="classes", num_classes=10))
    assert isinstance(enc, ClassEncoder)
    y = enc.encode(["1", " 7 ", "0"])["y"]
    assert y.dtype == torch.long and y.tolist() == [1, 7, 0]
    assert enc.null(2).tolist() == [10, 10]
    with pytest.raises(ValueError, match="'a red circle', not an integer"):
        enc.encode(["3", "a red circle"])
    with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
        enc.encode(["10"])


def test_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'model_max_length'"):
        build_text_encoder(dict(type="t5", from_pretrained="debug/tiny-t5", max_length=10))
    with pytest.raises(ConfigError, match="Did you mean 't5'"):
        build_text_encoder(dict(type="T5"))
    with pytest.raises(ConfigError, match=r"text_encoder\.num_classes") as info:
        build_text_encoder(dict(type="classes"))
    assert info.value.source == "text_encoder (type='classes')"  # the config package's one ConfigError
    with pytest.raises(ValueError, match="cannot use it"):
        build_text_encoder(dict(type="t5", from_pretrained="debug/tiny-clip"))
    # Open-Sora keys that only matter for ColossalAI / old layouts are accepted
    enc = build_text_encoder(
        dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=8, shardformer=True)
    )
    assert enc.model_max_length == 8


def test_tiny_builds_are_deterministic_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    fresh, _ = tiny._tiny_t5.__wrapped__()
    assert torch.equal(torch.get_rng_state(), state)
    cached, _ = tiny.build_tiny_t5()
    for (k, a), (_, b) in zip(fresh.state_dict().items(), cached.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    a, b = tiny.build_tiny_t5()[0], tiny.build_tiny_t5()[0]
    assert a is not b  # callers get independent copies of the cached build


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_tiny_and_text_encoders_do_not_import_each_other():
    # text_encoders resolves debug ids through tiny; tiny builds on the tokenizer helpers only
    assert not {m for m in _imports(Path(tiny.__file__)) if "text_encoders" in m}
    testing = Path(tiny.__file__).parents[1] / "testing"
    for module in testing.glob("*.py"):  # test scaffolding depends on nothing of the library
        assert not {m for m in _imports(module) if m.startswith("opensora_core")}, module.name


_HASH_CODE = """
import hashlib, json, torch
from opensora_core.models import tiny
from opensora_core.models.text_encoders import build_text_encoder
from opensora_core.models.vae import build_vae

def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()

def debug_hashes():
    prompts = ["a red circle moving left", "a dog runs on the beach"]
    t5 = build_text_encoder(dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=16))
    clip = build_text_encoder(dict(type="clip", from_pretrained="debug/tiny-clip"))
    vae = build_vae(dict(type="VideoAutoencoderKL", from_pretrained="debug/tiny-vae"))
    out = t5.encode(prompts)
    return {
        "t5": digest(out["y"], out["mask"], *t5.model.state_dict().values()),
        "t5_ids": t5.tokenize(prompts)[0].tolist(),
        "clip": digest(clip.encode(prompts)["y"], *clip.model.state_dict().values()),
        "clip_ids": clip.tokenizer(prompts).input_ids,
        "vae": digest(*vae.module.state_dict().values()),
    }
"""


@pytest.mark.integration
def test_debug_ids_are_identical_across_processes():
    namespace: dict = {}
    exec(_HASH_CODE, namespace)
    here = namespace["debug_hashes"]()
    code = _HASH_CODE + "\nprint(json.dumps(debug_hashes()))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    there = json.loads(res.stdout.strip().splitlines()[-1])
    assert there == here
