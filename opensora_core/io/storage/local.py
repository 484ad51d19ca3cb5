"""Local-disk helpers: atomic writes, folder fsync, checksummed copies and ranged reads."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .checksums import _COPY_CHUNK
from .errors import ObjectNotFoundError, StorageError
from .objects import UploadResult


@contextlib.contextmanager
def atomic_write_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temp file next to ``path`` for writing; on success fsync it and rename it over ``path``.

    If the block raises, the temp file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_local(src: Path, dest: Path) -> UploadResult:
    if not src.is_file():
        raise ObjectNotFoundError(f"{src} is not a file")
    if dest.exists() and os.path.samefile(src, dest):
        raise StorageError(f"source and destination are the same file: {src}")
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, atomic_write_file(dest) as fout:
        for chunk in iter(lambda: fin.read(_COPY_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
            fout.write(chunk)
    return UploadResult(uri=str(dest), size=size, etag=md5.hexdigest(), sha256=sha.hexdigest())


class _LimitedReader(io.RawIOBase):
    """At most ``limit`` bytes of an open binary file (local ranged reads)."""

    def __init__(self, f: BinaryIO, limit: int):
        self._f, self._left = f, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buf[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()
