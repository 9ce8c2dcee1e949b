"""Where a run's checkpoints go, and what they hold: `Saved`.

A save replaces the file at --save only while that file is the one this run expects there: none,
the --resume checkpoint that --save's check allowed, or the file this run saved last. Another file
there means another process wrote it since (a second run given the same --save): it is kept, and
this run saves beside it (`beside`) from then on, so that no run's epochs are lost. (A file written
between that check and the save's rename is not seen.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from topgrad_examples import checkpoint
from topgrad_examples.files import Identity, identity


@dataclass
class Saved:
    """What this run has saved, and where; filled in as the run goes (`main` keeps it, to say what
    was saved however the run stops)."""

    path: str | None = None  # where the next save goes: --save, or beside it (`check_path`); None: no --save
    expected: Identity | None = None  # the file at `path` that the next save may replace
    epoch: int | None = None  # the last epoch saved to `path`
    writing: int | None = None  # the epoch being saved: a Ctrl-C may land just after the file is replaced
    before: Identity | None = None  # the file at `path` as that unfinished save found it
    trained: int | None = None  # the last epoch this run finished (trained and evaluated), saved or not
    start: int | None = None  # the epoch training went on from (0, or --resume's); None: not begun yet
    resume: str | None = None  # the --resume checkpoint
    resumed: Identity | None = None  # the file at `resume` as this run found it

    def find_files(self, save: str | None, resume: str | None) -> None:
        """Before the checks of --save and the reading of --resume: the file now at --save (none,
        or the --resume checkpoint that --save's check allows) is the one the first save may
        replace, and the --resume file is the one whose epoch this run goes on from."""
        self.path, self.expected = save, identity(save) if save else None
        self.resume, self.resumed = resume, identity(resume) if resume else None

    def check_path(self) -> str:
        """Before a save: where another process has replaced the file at `path` since this run
        found or wrote it, `path` moves beside it; the note that says so, else ""."""
        assert self.path is not None
        now = identity(self.path)
        if now is None or now == self.expected:
            return ""
        old, self.path = self.path, beside(self.path)
        held = "" if self.epoch is None else f", which held this run's epoch {self.epoch},"
        self.epoch = self.expected = None  # what this run saved there is gone; the new path is free
        return (f"note: another process wrote {old}{held} during this run (another run with the same "
                f"--save?); it is left alone, and this run saves its epochs to {self.path} instead")

    def begin(self, epoch: int) -> None:
        """A save of `epoch` to `path` starts: note which file is there now."""
        assert self.path is not None
        self.writing, self.before = epoch, identity(self.path)

    def done(self, written: Identity | None) -> None:
        """The save begun is written (`written`: its file, as `checkpoint.save` returns it): its
        epoch is kept, and its file is the one the next save may replace."""
        self.epoch, self.writing, self.expected = self.writing, None, written

    def last(self) -> int | None:
        """The last epoch this run saved to `path` (None without --save), looking at the file only
        for an unfinished save: it counts once the file was replaced (the save writes a new file and
        renames it over the old) and holds that epoch; an older run's file at the same epoch does not."""
        if self.writing is not None and self.path and identity(self.path) not in (None, self.before):
            with contextlib.suppress(checkpoint.CheckpointError):
                if int(checkpoint.read(self.path)["meta/epoch"]) == self.writing:
                    return self.writing
        return self.epoch

    def resume_kept(self) -> bool:
        """Whether the file at `resume` is still the one this run found there (holding epoch `start`)."""
        return self.resume is not None and identity(self.resume) == self.resumed


def beside(path: str) -> str:
    """A free name next to `path` with this process's id and a random token before the suffix,
    run.npz -> run.4242-9f3a1c.npz: the id alone is not enough (in containers every run may be
    process 1, and share the folder over NFS)."""
    p = Path(path)
    for _ in range(100):
        candidate = p.with_name(f"{p.stem}.{os.getpid()}-{secrets.token_hex(3)}{p.suffix}")
        if not os.path.lexists(candidate):
            return str(candidate)
    raise FileExistsError(f"{path}: no free name beside it for this run's checkpoint")
