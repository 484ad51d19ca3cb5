"""opensora_core.eval.fvd: TorchScript and transformers extractors, held-out clips, FVD against a closed form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from opensora_core.eval.fvd import fvd, fvd_reference, held_out_clips, load_video_extractor


class ChannelMean(nn.Module):
    """An I3D-shaped stand-in: ``[B, 3, T, H, W]`` -> per-channel means ``[B, 3]`` (features) or ``[B, 1]``."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> torch.Tensor:
        feats = x.mean(dim=(2, 3, 4))
        if return_features:
            return feats
        return feats.sum(dim=1, keepdim=True)


def scripted_extractor(folder: Path) -> Path:
    """A tiny TorchScript extractor saved like the common ``i3d_torchscript.pt``."""
    path = folder / "tiny_i3d.pt"
    torch.jit.script(ChannelMean()).save(str(path))
    return path


def _videos(n: int, seed: int, frames: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 200, (frames, 20, 28, 3), dtype=np.uint8) for _ in range(n)]


def test_fvd_of_shifted_features_is_the_squared_mean_shift(tmp_path):
    extractor = load_video_extractor(str(scripted_extractor(tmp_path)), "cpu")
    generated = _videos(6, seed=0)
    offset = np.array([50, 20, 0], dtype=np.uint8)
    real = [
        v + offset for v in generated
    ]  # same clips shifted: equal covariances, means apart by 2*offset/255
    feats_g, feats_r = extractor.features(generated), extractor.features(real)
    assert feats_g.shape == (6, 3)  # return_features=True reached the scripted forward
    # features: per-channel mean of the clip mapped to [-1, 1] (resizing and cropping keep a constant shift)
    np.testing.assert_allclose(feats_r - feats_g, np.tile(2 * offset / 255, (6, 1)), atol=1e-5)
    assert fvd(feats_g, feats_r) == pytest.approx(float(np.sum((2 * offset / 255) ** 2)), abs=1e-5)
    assert fvd(feats_g, feats_g) == pytest.approx(0.0, abs=1e-9)


def test_preprocessing_resizes_the_shorter_side_and_centre_crops(tmp_path):
    extractor = load_video_extractor(str(scripted_extractor(tmp_path)), "cpu")
    middle, left = np.zeros((2, 10, 30, 3), np.uint8), np.zeros((2, 10, 30, 3), np.uint8)
    middle[:, :, 8:22] = 255  # white beyond the middle third: the centre crop (columns 10-20) is all white
    left[:, :, :8] = 255  # white only in the left third: cropped away
    x = extractor.preprocess(middle)
    assert x.shape == (3, 2, 224, 224)  # 10x30 -> shorter side 224 -> 224x672 -> centre 224x224
    assert float(x.min()) == pytest.approx(1.0)  # in [-1, 1]: white is 1
    assert float(extractor.preprocess(left).max()) == pytest.approx(-1.0)


def test_a_traced_plain_forward_and_bad_files(tmp_path):
    traced = torch.jit.trace(
        nn.Sequential(nn.Flatten(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(1)), torch.zeros(1, 3, 2, 4, 4)
    )
    traced.save(str(tmp_path / "plain.pt"))
    extractor = load_video_extractor(str(tmp_path / "plain.pt"), "cpu")
    assert extractor.features(_videos(3, seed=1)).shape == (3, 3)
    with pytest.raises(FileNotFoundError, match="fvd_extractor .* does not exist"):
        load_video_extractor(str(tmp_path / "i3d_torchscript.pt"))
    torch.save(ChannelMean().state_dict(), tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        load_video_extractor(str(tmp_path / "weights.pth"))


def test_a_transformers_video_model_is_mean_pooled(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEModel
    from transformers.models.videomae import VideoMAEImageProcessorPil

    config = VideoMAEConfig(
        image_size=32,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(0)
    VideoMAEModel(config).save_pretrained(tmp_path / "videomae")
    VideoMAEImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path / "videomae")
    extractor = load_video_extractor(str(tmp_path / "videomae"), "cpu")
    videos = _videos(3, seed=2, frames=7)  # resampled to the model's 4 frames
    feats = extractor.features(videos)
    assert feats.shape == (3, 32) and np.isfinite(feats).all()
    pixels = extractor.processor([list(videos[0][[0, 2, 4, 6]])], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = extractor.model(pixel_values=pixels).last_hidden_state.mean(dim=1)[0].double().numpy()
    np.testing.assert_allclose(feats[0], expected, rtol=1e-5, atol=1e-6)


def test_held_out_clips_are_deterministic_and_short_ones_are_skipped(tmp_path):
    from opensora_core.data.synthetic import generate

    generate(tmp_path / "held", 3, size=16, num_frames=8, seed=0)
    table = str(tmp_path / "held" / "meta.csv")
    skipped: list[str] = []
    first = list(held_out_clips(table, 4, 2, seed=0, skipped=skipped))
    again = list(held_out_clips(table, 4, 2, seed=0))
    assert len(first) == 3 and skipped == []
    assert all(c.shape == (4, 16, 16, 3) for c in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert list(held_out_clips(table, 9, 1, seed=0, skipped=skipped)) == []  # 9 frames from 8-frame clips
    assert len(skipped) == 3
    ref = fvd_reference(str(scripted_extractor(tmp_path)), table, 4, 2, seed=0, device="cpu")
    assert ref.real.shape == (3, 3) and ref.distance(first) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="fixed num_frames"):
        fvd_reference(str(scripted_extractor(tmp_path)), table, None, 2, seed=0, device="cpu")
    with pytest.raises(ValueError, match="at least 2 held-out clips"):
        fvd_reference(str(scripted_extractor(tmp_path)), table, 9, 1, seed=0, device="cpu")
