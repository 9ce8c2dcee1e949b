"""Going on from a checkpoint: whether this command may continue the checkpoint's run, and, when
a run stops early, which checkpoint holds its last good epoch and the command that goes on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from topgrad_examples import checkpoint
from topgrad_examples.data import BUNDLED, FolderUnreadableError, find_files
from topgrad_examples.saving import Saved


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


def recorded_folder_problem(recorded: str, dataset: str) -> str:
    """What keeps a resumed run from the folder its checkpoint's epochs trained on: "is gone", or
    "no longer holds the mnist files"; "" where it still holds them (or cannot be looked into: reading
    it says why)."""
    if not Path(recorded).is_dir():
        return "is gone"
    try:
        return "" if find_files(recorded, dataset) is not None else f"no longer holds the {dataset} files"
    except FolderUnreadableError:
        return ""


def resumed_data_not_found(resume: str, recorded: str, dataset: str, data_dir: str | None,
                           error: Exception) -> str:
    """Why a resumed run that trained on the folder `recorded` has no data (`error`, of the folder
    tried): of --data-dir when given (the folder the checkpoint names may still be there), else of
    the checkpoint's folder, which is gone, emptied or unreadable; the bundled subset never stands
    in for it (other images)."""
    problem = recorded_folder_problem(recorded, dataset)
    if data_dir is not None:
        named = Path(data_dir).expanduser().resolve()
        if named in (Path(recorded), Path(recorded).parent):  # the checkpoint's folder: the error says it
            return str(error)
        still = "is still there: drop --data-dir to go on with it"
        return f"{error}; {resume} trained on {recorded}, which {problem or still}"
    if not problem:  # the folder was read: its files are there but do not load
        return (f"{resume}: its epochs trained on {recorded}, whose images do not load now ({error}); put "
                "them back as they were, or pass the folder that holds them with --data-dir")
    return (f"{resume}: its epochs trained on {recorded}, which {problem}, and the bundled subset holds "
            f"other images: put the images back in {recorded}, or pass that data's folder with --data-dir "
            f"({error})")


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


def what_was_saved(args: argparse.Namespace, saved: Saved, save_failed: bool = False) -> str:
    """After Ctrl-C (or a failed save), once training began: the epoch this run saved and how to go
    on, else where a resumed run can go on from, else that nothing was saved (a file already at
    --save is not this run's)."""
    path, start = saved.path, saved.start or 0
    epoch = saved.last()
    if epoch is not None:
        return f"{path} holds epoch {epoch}: go on with --resume {path} --save {path}"
    if args.resume and not saved.resume_kept():
        return f"{_not_kept(saved, save_failed)}; {_replaced(args.resume, start)}"
    if args.resume:  # the checkpoint still has its old settings: repeat the ones this command changed
        return (f"{_not_kept(saved, save_failed)}; {args.resume} still holds epoch {start}: go on with "
                f"--resume {args.resume}{_changed(args, saved)}")
    if save_failed:
        return "no epoch of this run was saved"
    if not path:
        return "nothing was saved (--save PATH keeps a checkpoint after every epoch)"
    if saved.writing is not None:
        return f"epoch {saved.writing}'s save was cut short, so {path} was not written"
    return f"no epoch finished, so {path} was not written"


def _not_kept(saved: Saved, save_failed: bool) -> str:
    """Of a resumed run that saved nothing: which of its epochs finished all the same (with --save,
    every finished epoch is saved, or its save failed or was cut short)."""
    start = saved.start or 0
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


def _replaced(resume: str, start: int, good: str = "") -> str:
    """The --resume checkpoint, replaced (or removed) by another process since this run read it:
    it no longer holds the epoch to go on from."""
    return (f"{resume} held epoch {start}{good} when this run began, but another process has replaced it "
            "since (another run with the same --save?)")


def what_divergence_left(args: argparse.Namespace, saved: Saved) -> str:
    """After a diverged run: the checkpoint that holds the last good epoch (no epoch whose loss
    or weights were not finite is ever saved) and how to go on from it with another --lr."""
    path, start = saved.path, saved.start or 0
    epoch = saved.last()
    if epoch is not None:
        return (f"{path} keeps epoch {epoch}, the last good one: go on from it with --resume {path} "
                f"--save {path} --lr LOWER")
    if args.resume and not saved.resume_kept():
        return _replaced(args.resume, start, good=", the last good one,")
    if args.resume:
        return (f"{args.resume} still holds epoch {start}, the last good one: go on from it with --resume "
                f"{args.resume}{_changed(args, saved, but='lr')} --lr LOWER")
    return "nothing was saved"


def _changed(args: argparse.Namespace, saved: Saved, but: str = "") -> str:
    """The settings this command changes from its checkpoint's, as flags, to repeat when going on
    from that checkpoint (without them it would go on with the old ones), and --save: where this
    run saves (--save, or the file beside it), else the checkpoint's own, so that the next run
    keeps its epochs."""
    changed = [f" --{flag.replace('_', '-')} {getattr(args, flag)}"
               for flag in ("epochs", "batch_size", "lr") if flag != but and getattr(args, flag) is not None]
    return "".join(changed) + f" --save {saved.path or args.resume}"
