"""opensora_core.models.clip: the one CLIP loader (debug id, local folder), embeddings, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opensora_core.models.clip import clip_score, load_clip
from opensora_core.models.pretrained import ModelNotFoundError
from opensora_core.models.tiny import build_tiny_clip, save_tiny_clip_model


@pytest.fixture(scope="module")
def clip():
    return load_clip("debug/tiny-clip", "cpu")


def _frames(seed: int = 0, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 24, 40, 3), dtype=np.uint8)


def test_embeddings_are_unit_length_and_layouts_agree(clip):
    frames = _frames()
    img = clip.embed_images(frames)
    assert img.shape == (3, clip.dim) and torch.allclose(img.norm(dim=-1), torch.ones(3))
    as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # [N, 3, H, W] in [0, 1]
    assert torch.allclose(clip.embed_images(as_float), img, atol=1e-6)
    assert torch.equal(clip.embed_images(torch.from_numpy(frames)), img)
    txt = clip.embed_texts(["a red square moving left", "a cat sleeps in the sun"])
    assert txt.shape == (2, clip.dim) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
    long = clip.embed_texts(["word " * 500])  # truncated to 77 tokens, not an error
    assert torch.isfinite(long).all()


def test_text_tower_is_the_debug_text_encoder(clip):
    text_model, _ = build_tiny_clip()
    mine = clip.model.text_model.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in text_model.state_dict().items())


def test_text_frame_score_is_the_clamped_mean(clip):
    frames, text = _frames(1), "a blue circle moving right"
    cos = (clip.embed_images(frames) @ clip.embed_texts([text])[0]).tolist()
    expected = float(np.mean([100 * max(c, 0.0) for c in cos]))
    assert clip.text_frame_score(frames, text) == pytest.approx(expected, rel=1e-6)
    assert clip_score(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), torch.tensor([1.0, 0.0])) == 50.0


def test_local_folder_loads_the_same_model(clip, tmp_path):
    folder = save_tiny_clip_model(tmp_path / "clip")
    loaded = load_clip(str(folder), "cpu")
    frames = _frames(2)
    assert torch.allclose(loaded.embed_images(frames), clip.embed_images(frames), atol=1e-6)
    assert torch.allclose(loaded.embed_texts(["a cat"]), clip.embed_texts(["a cat"]), atol=1e-6)


def test_bad_models_and_inputs_name_the_problem(clip, tmp_path, monkeypatch):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModelWithProjection(vision).save_pretrained(tmp_path / "vision")
    with pytest.raises(ValueError, match="'clip_vision_model' model; CLIP scores need both towers"):
        load_clip(str(tmp_path / "vision"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_clip(str(tmp_path / "missing"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hf download opensora-test/no-such-clip"):
        load_clip("opensora-test/no-such-clip")  # not in the hub cache, offline: one actionable error
    with pytest.raises(ValueError, match="debug id is 'debug/tiny-clip'"):
        load_clip("debug/tiny-t5")
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        clip.embed_images(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="non-empty list"):
        clip.embed_texts("a cat")
