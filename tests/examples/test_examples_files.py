"""`files`: an interrupt (Ctrl-C, or a stop signal raised as one) never leaves a temporary file."""

from __future__ import annotations

import sys
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
