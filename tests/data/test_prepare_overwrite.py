"""An existing output table is never replaced silently: merge, refuse, or replace with a backup."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pandas as pd
import pytest

from opensora_core.data.prepare import OutputExistsError, backup_path, main, prepare
from tests.data.media_factory import make_video

HAND_MADE = "path,text\nclip_a.mp4,a caption someone spent an afternoon on\nclip_b.mp4,another one\n"


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    d = tmp_path / "raw"
    d.mkdir()
    for name in ("clip_a", "clip_b", "clip_c"):
        make_video(d / f"{name}.mp4", num_frames=8, height=32, width=32)
        (d / f"{name}.txt").write_text(f"caption of {name}")
    return d


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.backup-*"))


def test_hand_made_table_in_the_input_folder_is_refused(raw: Path, capsys) -> None:
    curated = raw / "meta.csv"
    curated.write_text(HAND_MADE)
    with pytest.raises(OutputExistsError, match=r"meta\.csv.*not written by prepare.*--overwrite"):
        prepare(raw, curated, progress=False)
    assert curated.read_text() == HAND_MADE
    assert not (raw / "meta.quarantine.csv").exists()  # nothing written at all
    # the CLI says the same and exits 1
    assert main([str(raw), "--output", str(curated), "--workers", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(curated) in err and "--overwrite" in err
    assert curated.read_text() == HAND_MADE


def test_overwrite_replaces_and_keeps_a_backup(raw: Path) -> None:
    curated = raw / "meta.csv"
    curated.write_text(HAND_MADE)
    report = prepare(raw, curated, progress=False, overwrite=True)
    assert report.num_kept == 3 and len(pd.read_csv(curated)) == 3
    (backup,) = _backups(raw)
    assert report.backup == str(backup) and backup.read_text() == HAND_MADE
    assert backup.name.startswith("meta.backup-") and backup.suffix == ".csv"
    # the backup is metadata, not a sample: a re-run neither probes nor quarantines it
    again = prepare(raw, curated, progress=False)
    assert (again.num_kept, again.num_quarantined, again.num_reused) == (3, 0, 3)


def test_rerun_on_a_smaller_folder_is_refused(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.csv"
    prepare(raw, out, progress=False)
    before = out.read_bytes()
    (raw / "clip_c.mp4").unlink()
    with pytest.raises(
        OutputExistsError, match=r"1 of its 3 rows are files not in .*clip_c\.mp4.*--overwrite"
    ):
        prepare(raw, out, progress=False)
    assert out.read_bytes() == before and not _backups(tmp_path)
    report = prepare(raw, out, progress=False, overwrite=True)
    assert report.num_kept == 2 and len(pd.read_csv(out)) == 2
    (backup,) = _backups(tmp_path)
    assert backup.read_bytes() == before


def test_a_different_input_set_is_refused(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.parquet"
    prepare(raw, out, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    make_video(other / "x.mp4", num_frames=8)
    (other / "x.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="3 of its 3 rows"):
        prepare(other, out, progress=False)
    assert len(pd.read_parquet(out)) == 3


def test_growing_input_merges_and_keeps_the_previous_table(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.csv"
    first = prepare(raw, out, progress=False)
    assert first.backup is None
    unchanged = prepare(raw, out, progress=False)
    assert unchanged.backup is None and not _backups(tmp_path)  # same content: nothing replaced
    before = out.read_bytes()
    make_video(raw / "clip_d.mp4", num_frames=8)
    (raw / "clip_d.txt").write_text("caption of clip_d")
    grown = prepare(raw, out, progress=False)
    assert (grown.num_kept, grown.num_reused, grown.num_probed) == (4, 3, 1)
    assert {Path(p).name for p in pd.read_csv(out)["path"]} == {f"clip_{c}.mp4" for c in "abcd"}
    (backup,) = _backups(tmp_path)
    assert backup.read_bytes() == before


def test_unreadable_existing_output_is_refused(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "meta.parquet"
    out.write_bytes(b"not a parquet file")
    with pytest.raises(OutputExistsError, match="cannot be read"):
        prepare(raw, out, progress=False)
    assert out.read_bytes() == b"not a parquet file"


def test_backup_path_keeps_folder_and_extension() -> None:
    from datetime import datetime

    when = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert backup_path("s3://b/x/meta.parquet", when) == "s3://b/x/meta.backup-20250102T030405000006Z.parquet"
