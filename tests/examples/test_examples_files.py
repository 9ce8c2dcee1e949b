"""`files`: an interrupt (Ctrl-C, or a stop signal raised as one) never leaves a temporary file, and
the ones a killed writer left are removed by the next write of the same file."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest
from topgrad_examples import files


def _interrupt_once_a_file_is_made(code: CodeType, folder: Path) -> Callable[..., Any]:
    """A trace function raising KeyboardInterrupt at the first line `code` runs once `folder` holds a
    file: as a signal arriving just after the file was made (a signal's handler runs between lines)."""
    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and any(folder.iterdir()):
            raise KeyboardInterrupt
        return local

    return lambda frame, event, arg: local if frame.f_code is code else None


def _write(folder: Path) -> None:
    with files.replacing(folder / "run.npz") as f:
        f.write(b"a checkpoint")


@pytest.mark.parametrize(("made_in", "action"), [
    (files.try_writing, lambda folder: files.try_writing(folder, "run.npz")),
    (files.replacing.__wrapped__, _write),  # type: ignore[attr-defined]
], ids=["try_writing", "replacing"])
def test_an_interrupt_just_after_the_temporary_file_is_made_removes_it(
    made_in: Callable[..., Any], action: Callable[[Path], None], tmp_path: Path,
) -> None:
    """The probe of `try_writing` (before training: is --save writable?) and the file `replacing`
    writes were made before the `try` that removes them: a SIGTERM there left `.run.npz.XXXX.tmp`."""
    previous = sys.gettrace()
    sys.settrace(_interrupt_once_a_file_is_made(made_in.__code__, tmp_path))
    try:
        with pytest.raises(KeyboardInterrupt):
            action(tmp_path)
    finally:
        sys.settrace(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_write_removes_the_stale_temporary_files_of_killed_writers_of_the_same_file(tmp_path: Path) -> None:
    """A save killed by SIGKILL left `.run.npz.XXXXXXXX.tmp` beside the checkpoint forever. The next
    save of run.npz removes such files once an hour old; a recent one (another run saving right
    now), one of another file or suffix, one named otherwise, and a folder are all kept."""
    old = time.time() - 2 * 3600  # two hours ago
    stale = [".run.npz.0123abcd.tmp", ".run.npz.ffffffff.tmp"]
    kept = [".run.npz.0123abcd.part", ".other.npz.0123abcd.tmp", ".run.npz.0123abc.tmp",
            ".run.npz.0123ABCD.tmp", ".run.npz.0123abcd.tmp.bak", "run.npz.0123abcd.tmp", ".run.npz.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half a checkpoint")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / ".run.npz.89abcdef.tmp").write_bytes(b"being written")  # recent: a live writer's
    (tmp_path / ".run.npz.fedcba98.tmp").mkdir()
    os.utime(tmp_path / ".run.npz.fedcba98.tmp", (old, old))
    _write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, ".run.npz.89abcdef.tmp", ".run.npz.fedcba98.tmp", "run.npz"])
    assert (tmp_path / "run.npz").read_bytes() == b"a checkpoint"
