"""Writing files safely: checking before a long run that a file could be written where the run
will write it, and replacing a file atomically, so that a failure never leaves half of one."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def try_writing(folder: Path, name: str) -> None:
    """Create and remove a hidden temporary file named after `name` in `folder`; OSError (a
    read-only folder, a full disk) where that is not possible."""
    fd, tmp = _new_file(folder, f".{name}.", ".tmp")
    os.close(fd)
    tmp.unlink()


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A hidden temporary file in `path`'s folder, open for writing; when the block ends it is moved
    to `path`, and removed if the block (or the move) fails: `path` holds the old file or the
    whole new one, never a part."""
    fd, tmp = _new_file(path.parent, f".{path.name}.", suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file of a random name, open for writing, with an ordinary new file's mode: mkstemp
    makes 0600, and reading the umask to widen that means setting it, process-wide."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows: as bytes
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: could not make a temporary file ({prefix}*{suffix} all taken)")
