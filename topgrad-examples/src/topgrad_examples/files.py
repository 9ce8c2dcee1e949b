"""Writing files safely: checking before a long run that a file could be written where the run
will write it, and replacing a file atomically and durably, so that a failure (a crash, a power
loss) never leaves half of one. The temporary files a killed writer could not remove are removed by
the next write of the same file, once they are an hour old."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

STALE_AFTER_S = 3600.0
"""A temporary file of `replacing` untouched this long was left by a writer that was killed (SIGKILL,
a power loss) before it could remove it: a live writer writes its file without pausing (a download
at least once per network timeout, 30 s by default)."""

TOKEN_BYTES = 4
"""The random part of a temporary file's name: this many bytes, as lower-case hex."""

Identity = tuple[int, int, int]
"""Which file is at a path: (inode, modification time in ns, size). A rename keeps all three, so
the identity of a temporary file taken before it is renamed into place is that of the file there."""


def identity(file: str | os.PathLike[str] | int) -> Identity | None:
    """The identity of the file at a path, or open as a descriptor; None where there is none."""
    try:
        st = os.fstat(file) if isinstance(file, int) else os.stat(file)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_folder(folder: Path, name: str) -> None:
    """OSError where a file named like `name` could not be written in `folder` (a read-only
    folder, a file where a folder should be); the folders made for the test are removed again."""
    missing = [p for p in (folder, *folder.parents) if not p.is_dir()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try_writing(folder, name)
    finally:
        for made in missing:
            with contextlib.suppress(OSError):
                made.rmdir()


def try_writing(folder: Path, name: str) -> None:
    """Create and remove a hidden temporary file named after `name` in `folder`; OSError (a
    read-only folder, a full disk) where that is not possible."""
    tmp: Path | None = None
    try:  # made inside the try: an interrupt (a stop signal) just after leaves no file behind
        fd, tmp = _new_file(folder, f".{name}.", ".tmp")
        os.close(fd)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A hidden temporary file in `path`'s folder, open for writing; when the block ends it is
    flushed to disk (fsync) and moved to `path`, and removed if the block (or the move) fails:
    `path` holds the old file or the whole new one, never a part, even after a power loss. Then the
    stale temporary files of earlier writers of `path`, killed mid-write, are removed."""
    tmp: Path | None = None
    try:  # made inside the try, as in `try_writing`
        fd, tmp = _new_file(path.parent, f".{path.name}.", suffix)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # else the rename can reach the disk before the data does
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    remove_stale_temporaries(path, suffix)


def remove_stale_temporaries(path: Path, suffix: str = ".tmp") -> None:
    """Remove the temporary files that writers of `path` killed mid-write left beside it: regular
    files named exactly as `replacing` names them for `path` (`.NAME.XXXXXXXX.tmp`), untouched for
    STALE_AFTER_S. Another live writer's file is recent, so kept. Best effort: never an error."""
    name = re.compile(re.escape(f".{path.name}.") + f"[0-9a-f]{{{2 * TOKEN_BYTES}}}" + re.escape(suffix))
    cutoff = time.time() - STALE_AFTER_S
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            if name.fullmatch(entry.name):
                with contextlib.suppress(OSError):  # gone meanwhile (removed by another run)
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                        os.unlink(entry.path)


def _sync_folder(folder: Path) -> None:
    """Flush `folder`'s entries (the rename) to disk; best effort: some systems (Windows, some
    network file systems) refuse to open or fsync a folder, and the file itself is safe already."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file of a random name, open for writing, with an ordinary new file's mode: mkstemp
    makes 0600, and reading the umask to widen that means setting it, process-wide."""
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(TOKEN_BYTES)}{suffix}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # Windows: as bytes
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: could not make a temporary file ({prefix}*{suffix} all taken)")
