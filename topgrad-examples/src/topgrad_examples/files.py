"""Writing files safely: checking before a long run that a file could be written where the run
will write it, and replacing a file atomically, so that a failure never leaves half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def try_writing(folder: Path, name: str) -> None:
    """Create and remove a hidden temporary file named after `name` in `folder`; OSError (a
    read-only folder, a full disk) where that is not possible."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    Path(tmp).unlink()


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A hidden temporary file in `path`'s folder, open for writing; when the block ends it is moved
    to `path` with an ordinary new file's mode (mkstemp makes 0600), and removed if the block (or the
    move) fails: `path` holds the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
