"""The ``text_area`` score: how much of a frame burned-in text (captions, watermarks, titles) covers.

Per frame: RapidOCR's bundled PP-OCRv6 small models, run offline from the files inside the ``rapidocr`` wheel
(nothing is downloaded). The text detector proposes line boxes; a box counts when the recognizer reads at least
:data:`MIN_CHARS` letters or digits in it with confidence >= :data:`MIN_CONFIDENCE`. The detector alone also
fires on plain high-contrast shapes (a filled circle or rectangle on a dark background comes back as a "text"
box covering 18-25 % of the frame), and reading the few boxes it proposes costs little next to detection.
The frame's score is the share of its area inside the union of the counted boxes (polygons, clipped to the
frame), in ``[0, 1]``; 0.0 when none. The clip's score is the maximum over its sampled frames, so a caption
burned in for one second counts.

Frames are analysed with the longer side at most ``max_side`` px (640 by default; the detector's
``limit_type="max"``, ``limit_side_len=max_side``); the score is a share of the frame, comparable across
sizes, and a larger ``max_side`` finds smaller text at more cost (about quadratic). One onnxruntime thread per
scorer (parallelism comes from the stage's worker processes). Direction classification is off (upside-down text
is not looked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opensora_core.data.curate.common import shrink_frames

# The files the rapidocr wheel ships (rapidocr==3.10.0, requirements.txt).
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
MIN_CONFIDENCE = 0.5  # recognizer confidence of a box's text (rapidocr's own default text_score)
MIN_CHARS = 2  # letters or digits read in a box (str.isalnum: also CJK and other scripts)
INSTALL_HINT = "pip install rapidocr==3.10.0 onnxruntime==1.32.0 (pinned in requirements.txt)"


def require_rapidocr() -> Path:
    """The folder of rapidocr's bundled models; a clear error when the package or its engine is missing."""
    try:
        import onnxruntime  # noqa: F401 - rapidocr does not declare its engine
        import rapidocr
    except ImportError as exc:
        raise ImportError(
            f"the text_area score needs rapidocr and onnxruntime ({exc}); {INSTALL_HINT}"
        ) from exc
    models = Path(rapidocr.__file__).parent / "models"
    missing = [name for name in (DET_MODEL, REC_MODEL) if not (models / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"rapidocr {getattr(rapidocr, '__version__', '?')} at {models} lacks its bundled models {missing}; "
            f"{INSTALL_HINT}"
        )
    return models


class TextAreaScorer:
    """``scorer(frames)`` -> the clip's ``text_area`` (see the module docstring) of uint8 RGB ``[N, H, W, 3]``."""

    def __init__(self, max_side: int = 640) -> None:
        from rapidocr import RapidOCR

        models = require_rapidocr()
        self.max_side = max_side
        params: dict[str, Any] = {
            "Global.use_cls": False,
            "Global.text_score": MIN_CONFIDENCE,
            "Global.log_level": "error",  # not a warning per frame without text
            "Det.model_path": str(models / DET_MODEL),
            "Det.limit_type": "max",
            "Det.limit_side_len": max_side,
            "Rec.model_path": str(models / REC_MODEL),
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self.engine = RapidOCR(params=params)

    def boxes(self, frame: np.ndarray) -> list[np.ndarray]:
        """The counted text boxes of one uint8 RGB ``[H, W, 3]`` frame: float ``[4, 2]`` (x, y) corners each."""
        out = self.engine(frame, use_det=True, use_cls=False, use_rec=True)
        if getattr(out, "txts", None) is None or out.boxes is None:
            return []  # nothing detected, or nothing read
        return [
            np.asarray(box, dtype=np.float32)
            for box, text in zip(out.boxes, out.txts, strict=True)
            if sum(c.isalnum() for c in text) >= MIN_CHARS
        ]

    def frame_area(self, frame: np.ndarray) -> float:
        """Share of ``frame`` inside the union of its counted text boxes, in ``[0, 1]``."""
        import cv2

        frame = shrink_frames(frame[None], self.max_side)[0]
        boxes = self.boxes(frame)
        if not boxes:
            return 0.0
        mask = np.zeros(frame.shape[:2], np.uint8)  # [H, W]; fillPoly clips to it, overlaps count once
        cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
        return float(mask.mean())

    def __call__(self, frames: np.ndarray) -> float:
        return max((self.frame_area(f) for f in frames), default=0.0)
