"""Checking, before a long run, that a file could be written where the run will write it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def try_writing(folder: Path, name: str) -> None:
    """Create and remove a hidden temporary file named after `name` in `folder`; OSError (a
    read-only folder, a full disk) where that is not possible."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    Path(tmp).unlink()
