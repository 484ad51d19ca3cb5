"""The ``text_area`` score (burned-in text, rapidocr's bundled models): frames with and without rendered text,
the ``score`` CLI column, a filter rule on it, the report's histogram and the sharded stage cache."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from opensora_core.data.curate import scores
from opensora_core.data.curate.cli import main as cli_main
from opensora_core.data.curate.filter import filter_table
from opensora_core.data.curate.merge import run_curation
from opensora_core.data.curate.report import dataset_report
from opensora_core.data.curate.text_area import TextAreaScorer
from opensora_core.data.prepare import prepare
from opensora_core.data.video_io import write_video

FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = 20  # dark grey


def _frame(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), BACKGROUND, np.uint8)


def _with_text(frame: np.ndarray, text: str, scale: float, thickness: int) -> float:
    """Draw white ``text`` near the bottom-left (a burned-in caption); returns the share of the frame covered by
    OpenCV's own text box (width x (height + baseline))."""
    h, w = frame.shape[:2]
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    cv2.putText(frame, text, (w // 30, h - h // 10), FONT, scale, (255, 255, 255), thickness)
    return tw * (th + base) / (h * w)


@pytest.fixture(scope="module")
def scorer() -> TextAreaScorer:
    return TextAreaScorer(max_side=640)


@pytest.mark.parametrize(
    ("size", "text", "scale", "thickness"),
    [
        ((360, 640), "BREAKING NEWS", 1.5, 3),
        ((720, 1280), "Hello 2026", 2.0, 4),
        ((180, 320), "SUBTITLE", 1.0, 2),
    ],
)
def test_rendered_text_covers_about_its_box(
    scorer: TextAreaScorer, size: tuple[int, int], text: str, scale: float, thickness: int
) -> None:
    frame = _frame(*size)
    known = _with_text(frame, text, scale, thickness)
    got = scorer.frame_area(frame)
    # Measured: 0.99-1.35x OpenCV's box (the detector's boxes are expanded around the glyphs).
    assert 0.7 * known < got < 1.6 * known, (got, known)


def test_frames_without_text_score_zero(scorer: TextAreaScorer) -> None:
    h, w = 360, 640
    blank = _frame(h, w)
    circle = _frame(h, w)
    cv2.circle(circle, (w // 2, h // 2), h // 3, (200, 100, 50), -1)  # the detector alone calls this text
    rect = _frame(h, w)
    cv2.rectangle(rect, (w // 6, h // 4), (w // 2, 3 * h // 4), (50, 200, 50), -1)
    gradient = np.repeat(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], h, 0).repeat(3, 2)
    for frame in (blank, circle, rect, gradient):
        assert scorer.frame_area(frame) < 0.001
    assert scorer(np.stack([blank, circle])) == 0.0


def test_clip_score_is_the_max_over_frames(scorer: TextAreaScorer) -> None:
    text = _frame(360, 640)
    _with_text(text, "LIVE 24/7", 1.5, 3)
    alone = scorer.frame_area(text)
    assert alone > 0.01
    assert scorer(np.stack([_frame(360, 640), text, _frame(360, 640)])) == pytest.approx(alone)
    big = np.kron(text, np.ones((3, 3, 1), np.uint8))  # 1080 x 1920, analysed at 640 px: about the same share
    assert scorer.frame_area(big) == pytest.approx(alone, rel=0.2)


def _clips(raw: Path) -> None:
    """``caption.mp4``: 12 frames, a caption burned into the middle 4 only; ``plain.mp4``: a moving square."""
    raw.mkdir()
    frames = np.stack([_frame(180, 320) for _ in range(12)])
    for i in range(4, 8):
        _with_text(frames[i], "BREAKING NEWS", 0.9, 2)
    write_video(raw / "caption.mp4", frames, fps=8)
    plain = np.stack([_frame(180, 320) for _ in range(12)])
    for i, f in enumerate(plain):
        cv2.rectangle(f, (40 + 8 * i, 50), (120 + 8 * i, 130), (60, 180, 90), -1)
    write_video(raw / "plain.mp4", plain, fps=8)


def test_score_cli_filter_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _clips(tmp_path / "raw")
    prepare(tmp_path / "raw", tmp_path / "meta.csv", allow_missing_captions=True, progress=False)
    argv = ["score", str(tmp_path / "meta.csv"), "-o", str(tmp_path / "scored.csv"), "--no-motion", "--text"]
    assert cli_main(argv) == 0, capsys.readouterr().err  # 3 frames sampled: 2, 6, 10; frame 6 has the caption
    table = pd.read_csv(tmp_path / "scored.csv").set_index(pd.Series(["caption", "plain"]))
    assert "motion" not in table.columns
    assert table.loc["caption", "text_area"] > 0.02 and table.loc["plain", "text_area"] < 0.001
    kept = filter_table(
        tmp_path / "scored.csv", tmp_path / "kept.csv", {"scores": {"text_area": {"max": 0.02}}}
    )
    ((path, rule),) = kept.dropped
    assert Path(path).name == "caption.mp4" and rule.startswith("text_area > 0.02 (")
    assert [Path(p).name for p in pd.read_csv(tmp_path / "kept.csv")["path"]] == ["plain.mp4"]
    report = dataset_report(tmp_path / "scored.csv", tmp_path / "report")
    assert any(p.endswith("hist_text_area.png") for p in report["plots"])
    assert report["columns"]["text_area"]["max"] == pytest.approx(table.loc["caption", "text_area"])


def test_missing_rapidocr_fails_the_stage_with_the_install_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _clips(tmp_path / "raw")
    prepare(tmp_path / "raw", tmp_path / "meta.csv", allow_missing_captions=True, progress=False)
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # `import rapidocr` raises ImportError
    with pytest.raises(ImportError, match=r"needs rapidocr .*pip install rapidocr==3\.10\.0"):
        scores.score(tmp_path / "meta.csv", tmp_path / "scored.csv", text=True, progress=False)
    assert not (tmp_path / "scored.csv").exists()  # failed before any clip, nothing written
    argv = ["score", str(tmp_path / "meta.csv"), "-o", str(tmp_path / "scored.csv"), "--text"]
    assert cli_main(argv) == 1
    assert "pip install rapidocr==3.10.0 onnxruntime==1.32.0" in capsys.readouterr().err
    report = scores.score(tmp_path / "meta.csv", tmp_path / "scored.csv", progress=False)  # not requested
    assert report.num_out == 2


def test_sharded_curation_caches_by_the_text_settings(tmp_path: Path) -> None:
    _clips(tmp_path / "raw")
    config = {
        "scenes": None,
        "score": {"motion": False, "text": True},
        "filter": {"scores": {"text_area": {"max": 0.02}}},
        "caption": None,
        "dedup": None,
    }
    first = run_curation(tmp_path / "raw", tmp_path / "root", config, progress=False)
    assert first["rows"] == 1 and [(Path(p).name, s) for p, s, _ in first["dropped"]] == [
        ("caption.mp4", "filter")
    ]
    again = run_curation(tmp_path / "raw", tmp_path / "root", config, progress=False)
    assert {s["stage"]: s["cached_shards"] for s in again["stages"]}["score"] == 1
    config["score"]["text_size"] = 320  # another setting of the text score: scored again
    changed = run_curation(tmp_path / "raw", tmp_path / "root", config, progress=False)
    assert {s["stage"]: s["cached_shards"] for s in changed["stages"]}["score"] == 0
