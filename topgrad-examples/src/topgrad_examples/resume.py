"""Going on from a checkpoint: whether this command may continue the checkpoint's run, and, when
a run stops early, which checkpoint holds its last good epoch and the command that goes on."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topgrad_examples import checkpoint
from topgrad_examples.data import BUNDLED

Identity = tuple[int, int, int]
"""Which file is at a path: (inode, modification time in ns, size)."""


@dataclass
class Saved:
    """What this run has written to --save: the last epoch saved, and the one being saved (a
    Ctrl-C may land just after the file is replaced); None: nothing yet. `trained`: the last epoch
    this run finished (trained and evaluated), saved or not."""

    epoch: int | None = None
    writing: int | None = None
    before: Identity | None = None  # the file at --save as the unfinished save found it
    trained: int | None = None
    expected: Identity | None = None  # the file this run may replace at --save (see `save_path`)

    @classmethod
    def at_start(cls, path: str | None) -> Saved:
        """Before training: the file now at --save (none, or the --resume checkpoint that --save's
        check allows) is the one the first save may replace."""
        return cls(expected=_identity(path) if path else None)

    def begin(self, epoch: int, path: str) -> None:
        """A save of `epoch` to `path` starts: note which file is there now."""
        self.writing, self.before = epoch, _identity(path)

    def done(self, path: str) -> None:
        """The save begun is written: its epoch is kept, and its file is the one the next save may replace."""
        self.epoch, self.writing, self.expected = self.writing, None, _identity(path)

    def last(self, path: str | None) -> int | None:
        """The last epoch this run saved to `path` (None without --save), looking at the file only
        for an unfinished save: it counts once the file was replaced (the save writes a new file and
        renames it over the old) and holds that epoch; an older run's file at the same epoch does not."""
        if self.writing is not None and path and _identity(path) not in (None, self.before):
            with contextlib.suppress(checkpoint.CheckpointError):
                if int(checkpoint.read(path)["meta/epoch"]) == self.writing:
                    return self.writing
        return self.epoch


def save_path(saved: Saved, path: str) -> tuple[str, str]:
    """Where the next save goes, and a note to show where that is not `path` (else "").

    `path` while the file there is the one this run may replace: the one it wrote last (at the
    first save: what --save's check allowed before training, nothing or the --resume file), or
    none. Another file there means another process wrote it since (a second run given the same
    --save): it is kept, and this run saves beside it, to `NAME.PID.SUFFIX`, from then on: no
    run's epochs are lost. (A file written between this check and the save's rename is not seen.)"""
    now = _identity(path)
    if now is None or now == saved.expected:
        return path, ""
    target = _beside(path)
    held = "" if saved.epoch is None else f", which held this run's epoch {saved.epoch},"
    saved.epoch = saved.expected = None  # what this run saved there is gone; `target` is new
    return target, (f"note: another process wrote {path}{held} during this run (another run with the same "
                    f"--save?); it is left alone, and this run saves its epochs to {target} instead")


def _beside(path: str) -> str:
    """A free name next to `path` with this process's id before the suffix: run.npz -> run.4242.npz."""
    p = Path(path)
    for n in range(1, 1000):
        candidate = p.with_name(f"{p.stem}.{os.getpid()}{'' if n == 1 else f'-{n}'}{p.suffix}")
        if not os.path.lexists(candidate):
            return str(candidate)
    raise FileExistsError(f"{path}: no free name beside it for this run's checkpoint")


def _identity(path: str) -> Identity | None:
    """Which file is at `path` (inode, modification time, size), or None where there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_same_data(path: str, saved: dict[str, Any], n_train: int, n_test: int, source: str) -> None:
    """A resumed run must train on the data the checkpoint's epochs saw (checkpoints written
    before these settings were kept are not checked)."""
    if "train_images" not in saved:
        return
    recorded = str(saved.get("data_source", ""))
    if recorded and (recorded == BUNDLED) != (source == BUNDLED):  # the same counts, other images
        way = ("drop --data-dir: a resumed run without one takes the subset" if recorded == BUNDLED
               else f"put the images back in {recorded}, or pass that data's folder with --data-dir")
        raise checkpoint.CheckpointError(
            f"{path}: its epochs trained on {recorded}; this run found {source}, other images. Resume "
            f"with the same data: {way}"
        )
    if (int(saved["train_images"]), int(saved["test_images"])) != (n_train, n_test):
        raise checkpoint.CheckpointError(
            f"{path}: its epochs trained on {int(saved['train_images']):,} training and "
            f"{int(saved['test_images']):,} test images ({saved.get('data_source', '?')}); this run found "
            f"{n_train:,} and {n_test:,} ({source}). Resume with the same data (--data-dir, --limit)"
        )


def check_same_run(path: str, saved: dict[str, Any], dataset: str | None, seed: int | None) -> None:
    """An explicit --dataset or --seed must be the checkpoint's: its epochs trained on that dataset,
    in that seed's batch order, from that seed's initialization (flags not given take its values)."""
    asked = {"dataset": dataset, "seed": seed}
    clashes = [(key, saved[key], value) for key, value in asked.items()
               if value is not None and key in saved and str(saved[key]) != str(value)]
    if clashes:
        has = ", ".join(f"--{key} {old}" for key, old, _ in clashes)
        given = ", ".join(f"--{key} {new}" for key, _, new in clashes)
        drop = " and ".join(f"--{key}" for key, _, _ in clashes)
        raise checkpoint.CheckpointError(
            f"{path}: the checkpoint's run has {has}, this command gives {given}. To go on with the "
            f"checkpoint's run, drop {drop} (a resumed run takes the checkpoint's); to train with the "
            "new settings, start a new run without --resume"
        )


def what_was_saved(args: argparse.Namespace, saved: Saved, start: int, save_failed: bool = False) -> str:
    """After Ctrl-C (or a failed save): the epoch this run saved and how to go on, else where a
    resumed run can go on from, else that nothing was saved (a file already at --save is not
    this run's)."""
    path = args.save
    epoch = saved.last(path)
    if epoch is not None:
        return f"{path} holds epoch {epoch}: go on with --resume {path} --save {path}"
    if args.resume:  # the checkpoint still has its old settings: repeat the ones this command changed
        return (f"{_not_kept(saved, start, save_failed)}; {args.resume} still holds epoch {start}: go "
                f"on with --resume {args.resume}{_changed(args)}")
    if save_failed:
        return "no epoch of this run was saved"
    if not path:
        return "nothing was saved (--save PATH keeps a checkpoint after every epoch)"
    if saved.writing is not None:
        return f"epoch {saved.writing}'s save was cut short, so {path} was not written"
    return f"no epoch finished, so {path} was not written"


def _not_kept(saved: Saved, start: int, save_failed: bool) -> str:
    """Of a resumed run that saved nothing: which of its epochs finished all the same (with --save,
    every finished epoch is saved, or its save failed or was cut short)."""
    if save_failed:
        return "no epoch of this run was saved"
    if saved.writing is not None:
        return f"epoch {saved.writing}'s save was cut short"
    if saved.trained is None or saved.trained <= start:
        return "no epoch of this run finished"
    first, last = start + 1, saved.trained
    if first == last:
        return f"epoch {last} finished but was not saved (no --save)"
    return f"epochs {first}-{last} finished but were not saved (no --save)"


def what_divergence_left(args: argparse.Namespace, saved: Saved, start: int) -> str:
    """After a diverged run: the checkpoint that holds the last good epoch (no epoch whose loss
    or weights were not finite is ever saved) and how to go on from it with another --lr."""
    path = args.save
    epoch = saved.last(path)
    if epoch is not None:
        return (f"{path} keeps epoch {epoch}, the last good one: go on from it with --resume {path} "
                f"--save {path} --lr LOWER")
    if args.resume:
        return (f"{args.resume} still holds epoch {start}, the last good one: go on from it with --resume "
                f"{args.resume}{_changed(args, but='lr')} --lr LOWER")
    return "nothing was saved"


def _changed(args: argparse.Namespace, but: str = "") -> str:
    """The settings this command changes from its checkpoint's, as flags, to repeat when going on
    from that checkpoint (without them it would go on with the old ones), and --save: this
    command's path, else the checkpoint's own, so that the next run keeps its epochs."""
    changed = [f" --{flag.replace('_', '-')} {getattr(args, flag)}"
               for flag in ("epochs", "batch_size", "lr") if flag != but and getattr(args, flag) is not None]
    return "".join(changed) + f" --save {args.save or args.resume}"
