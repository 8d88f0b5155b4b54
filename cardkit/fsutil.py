"""Small file-system helpers shared by the modules that write durable files (journal, keys, ledger keys)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


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
