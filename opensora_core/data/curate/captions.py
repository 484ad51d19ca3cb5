"""Caption stage: each row keeps its caption from the table, else from a same-name sidecar ``.txt`` (of the clip,
then of its ``source_path``), else from a ``path,text`` captions table; captions are cleaned (whitespace
collapsed, cut to ``max_words``), ``text_len`` is recomputed, and rows with fewer than ``min_words`` words are
dropped (reported as ``missing caption`` or ``caption too short``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from opensora_core.data.curate.common import StageReport, kept_rows, read_stage_input, write_stage
from opensora_core.data.prepare import _exists, _load_captions, _read_text


def clean_caption(text: str, max_words: int) -> str:
    """Collapse whitespace and keep at most ``max_words`` words."""
    return " ".join(text.split()[:max_words])


def _sidecar(path: str) -> str | None:
    txt = os.path.splitext(path)[0] + ".txt"
    return _read_text(txt) if _exists(txt) else None


def _caption_of(row: dict[str, Any], table: dict[str, str]) -> str:
    text = row.get("text")
    if isinstance(text, str) and text.strip():
        return text
    for candidate in (str(row["path"]), row.get("source_path")):
        if isinstance(candidate, str) and candidate:
            found = _sidecar(candidate)
            if found is None:
                found = table.get(candidate, table.get(os.path.basename(candidate)))
            if found and found.strip():
                return found
    return ""


def caption(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    captions: str | os.PathLike[str] | None = None,
    min_words: int = 1,
    max_words: int = 200,
    overwrite: bool = False,
) -> StageReport:
    """Fill, clean and check the ``text`` column of ``input`` (see the module docstring)."""
    t0 = time.perf_counter()
    if min_words < 1 or max_words < min_words:
        raise ValueError(
            f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}"
        )
    src, out = os.fspath(input), os.fspath(output)
    df = read_stage_input(src)
    folder = os.path.dirname(os.path.abspath(src))
    table = _load_captions(os.fspath(captions), folder) if captions else {}
    texts = [clean_caption(_caption_of(r, table), max_words) for r in df.to_dict("records")]
    rules = []
    for text in texts:
        words = len(text.split())
        rules.append(None if words >= min_words else "missing caption" if words == 0 else "caption too short")
    df["text"] = texts
    df["text_len"] = [len(t.split()) for t in texts]
    dropped = [(str(p), r) for p, r in zip(df["path"], rules, strict=True) if r]
    kept = kept_rows(df, rules)
    return write_stage("caption", src, out, kept, len(df), dropped, t0, overwrite, {"max_words": max_words})
