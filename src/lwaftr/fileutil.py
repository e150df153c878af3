"""Small file helpers shared by the loaders."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

_STEP = 8 << 20


def write_atomic(path: str | os.PathLike, data: bytes | Sequence, *, fsync: bool = False,
                 progress: Callable[[float], None] | None = None) -> None:
    """Write ``data`` (bytes, or a sequence of bytes-like chunks written in
    order) to ``path`` through a temporary file and a rename, so a reader (or
    a crash) never sees a half-written file; keeps ``path``'s mode.
    ``progress`` gets the fraction written every 8 MiB."""
    path = Path(path)
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
    total = sum(len(c) for c in chunks) or 1
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            done = 0
            for c in chunks:
                for i in range(0, len(c), _STEP):
                    part = c[i:i + _STEP]
                    fh.write(part)
                    done += len(part)
                    if progress:
                        progress(done / total)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames and creations in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
