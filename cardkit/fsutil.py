"""Small file-system helpers shared by the modules that write private or durable files (journal, keys, card
images, snapshots, reports)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO

__all__ = ["fsync_dir", "open_private_append", "write_private"]


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or a new file in it survives power loss (best effort: a directory that
    cannot be opened is skipped)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, then rename) with mode 0600
    whatever the umask — for every output that holds personal data or secrets. ``durable`` fsyncs the file
    and its folder before returning, so the new content survives power loss."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(folder)
    return target


def open_private_append(path: str | os.PathLike[str]) -> IO[str]:
    """Open a text file for appending, created with mode 0600 (APDU traces, logs with card data)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8")
