"""Caption generation with an image-text-to-text model: a tiny BLIP (random weights, tiny config, a 16-word
tokenizer) built in the test and loaded back by path, as a user's model folder would be."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from opensora_core.data.curate.captions import Captioner, caption
from opensora_core.data.prepare import main
from tests.data.curate.media import make_scene_video

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "video", "of", "the", "cat", "dog", "runs", "sky"]


def _tiny_blip(folder: Path, word: str = "cat") -> Path:
    """A BLIP captioner whose decoder always prefers ``word`` (a large output bias): its caption is known."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[CLS]")
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = BlipConfig(
        text_config={"vocab_size": len(WORDS), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 2,
                     "sep_token_id": 3, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[WORDS.index(word)] = 100.0
    model.save_pretrained(folder)
    return folder


def test_missing_captions_are_generated_cleaned_and_existing_ones_kept(tmp_path: Path) -> None:
    model = _tiny_blip(tmp_path / "blip")
    clips = tmp_path / "clips"
    for name in ("has", "sidecar", "missing", "also_missing"):
        make_scene_video(clips / f"{name}.mp4", [8], seed=len(name))
    (clips / "sidecar.txt").write_text("  from the   sidecar ")
    (clips / "broken.mp4").write_bytes(b"not a video")
    rows = [
        {"path": f"clips/{n}.mp4", "num_frames": 8, "text": t}
        for n, t in [("has", "a hand written caption"), ("sidecar", ""), ("missing", ""), ("also_missing", None),
                     ("broken", "")]
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "kept.csv", index=False)

    report = caption(
        tmp_path / "kept.csv",
        tmp_path / "out.csv",
        max_words=5,
        model=str(model),
        max_new_tokens=12,
        batch_size=2,
    )
    out = pd.read_csv(tmp_path / "out.csv").set_index("path")
    text = {Path(p).stem: t for p, t in out["text"].items()}
    assert text["has"] == "a hand written caption"  # kept as it was
    assert text["sidecar"] == "from the sidecar"  # sidecar captions still win over generation
    assert text["missing"] == text["also_missing"] == "cat cat cat cat cat"  # generated, cut to max_words
    assert set(out["text_len"]) == {4, 3, 5}
    assert [(Path(p).name, r.split(":")[0]) for p, r in report.dropped] == [
        ("broken.mp4", "caption generation failed")
    ]
    assert report.details["generated"] == 2 and report.details["generation_failed"] == 1


def test_prompt_prefix_is_cut_and_cli_generates(tmp_path: Path) -> None:
    model = _tiny_blip(tmp_path / "blip", word="dog")
    video = make_scene_video(tmp_path / "clip.mp4", [6])
    captioner = Captioner(str(model), prompt="a video of", max_new_tokens=4, device="cpu")
    frames = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    assert captioner(list(frames)) == ["dog dog dog dog"] * 2  # "a video of" echoed by BLIP, then cut

    pd.DataFrame([{"path": str(video), "num_frames": 6, "text": ""}]).to_csv(tmp_path / "in.csv", index=False)
    argv = ["caption", str(tmp_path / "in.csv"), "-o", str(tmp_path / "c.csv"), "--model", str(model)]
    assert main([*argv, "--max-new-tokens", "3", "--frames", "2"]) == 0
    assert pd.read_csv(tmp_path / "c.csv")["text"].tolist() == ["dog dog dog"]
    assert json.loads((tmp_path / "c.report.json").read_text())["details"]["generated"] == 1
    with pytest.raises(ValueError, match="image-text-to-text"):
        Captioner(str(tmp_path / "no-such-model"))
