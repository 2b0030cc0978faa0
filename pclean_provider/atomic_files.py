"""The one way this project writes files: readers see the old version or the new one, never half.

Everything goes to a temporary name in the destination's own folder (the same filesystem, so the
rename is atomic), is flushed to disk, and is renamed over the final name. Folders (CASA images,
MeasurementSets) are swapped in by rename too, the old one removed only after the new one is in
place. Standard library only, so every layer (CASA runtime, engine, pipeline, Airflow hooks) can use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replacing(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write; it becomes ``path`` if the block succeeds.

    For writers that want a file name rather than bytes (astropy, CASA); on an error the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes the file private; SLURM jobs, other users and archive readers need to read it.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    return write_text(path, json.dumps(data, **dumps_kwargs) + "\n")


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put folder `src` at `dst`, replacing what was there; the old one is removed only afterwards."""
    src, dst = os.fspath(src), os.fspath(dst)
    old = None
    if os.path.exists(dst):
        old = f"{dst}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
    os.rename(src, dst)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (the directory entry itself must reach the disk)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
