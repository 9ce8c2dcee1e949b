"""The `topgrad-train` command line: its options, their checks, and the exit statuses.

Only this module's checks (and argparse's own) exit with status 2, the convention for a
command line that cannot be taken; everything that fails once the run has started is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from topgrad_examples.data import DATASETS
from topgrad_examples.models import MODELS
from topgrad_examples.plot import chart_path

EXIT_OK = 0
EXIT_FAILURE = 1  # the run failed: data, checkpoint, backend, plot, a diverged loss, unwritable output
EXIT_USAGE = 2  # argparse's status for a command line it cannot take
EXIT_INTERRUPTED = 130  # 128 + SIGINT, a shell's status for Ctrl-C
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, a shell's status when the reader of stdout exited
EXIT_HANGUP = 129  # 128 + SIGHUP: the terminal closed; stopped as by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM: docker stop, a batch system's preemption; stopped as by Ctrl-C

MAX_INT = 2**63 - 1  # a checkpoint stores the seed, the epochs and the batch size as int64
FLOAT32_SMALLEST_NORMAL = 2.0**-126  # below it a float32 learning rate loses precision, then is 0


def _model_defaults() -> str:
    """One line per model: the recipe its options default to."""
    lines = []
    for name, cls in MODELS.items():
        d = cls.defaults
        lines.append(f"  {name:<10} {d.optimizer}, --lr {d.lr:g}, --batch-size {d.batch_size}, "
                     f"--epochs {d.epochs}{d.extras()}")
    return "\n".join(lines)


EPILOG = f"""\
defaults per model:
{_model_defaults()}

data (without --data-dir): $TOPGRAD_DATA, then /usr/share/datasets/<dataset> (Debian's
  dataset-fashion-mnist package installs Fashion-MNIST there), then
  $XDG_CACHE_HOME/topgrad/<dataset> (~/.cache/topgrad/... by default), then a download into
  that cache; MNIST falls back to a bundled subset of 6,000 training and 1,000 test images

exit status:
  {EXIT_OK:<4} success: trained, evaluated, and printed the test accuracy
  {EXIT_FAILURE:<4} failure: a data, checkpoint, backend or plot error, a diverged loss
       (NaN/Inf), output that cannot be written; one line on stderr says why
  {EXIT_USAGE:<4} command-line usage error (an unknown option, a bad value: a --save or
       --plot path that is a folder is one)
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C), after saying which checkpoint holds the last epoch
  {EXIT_TERMINATED:<4} stopped by SIGTERM (docker stop, a batch system), as by Ctrl-C
  {EXIT_HANGUP:<4} stopped by SIGHUP (its terminal closed), as by Ctrl-C
  {EXIT_OUTPUT_CLOSED:<4} the reader of stdout exited (a closed pipe, e.g. `| head`)
"""


def build_parser() -> argparse.ArgumentParser:
    """The `topgrad-train` command line."""
    p = argparse.ArgumentParser(
        prog="topgrad-train", description="Train a topgrad example model and print its test accuracy.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=_Version, nargs=0,
                   help="print the installed packages' versions and exit")
    p.add_argument("model", choices=list(MODELS), help="which model to train")
    p.add_argument("--backend", help="topgrad backend (default: $TOPGRAD_BACKEND, else numpy, else the only "
                   "one installed)")
    p.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="default: the checkpoint's with --resume (another is refused), else mnist")
    p.add_argument("--data-dir", help="folder with the four IDX files (default: the checkpoint's folder "
                   "with --resume, else search, then download)")
    p.add_argument("--no-download", action="store_true",
                   help="never download: use what is installed (MNIST: else the bundled subset)")
    p.add_argument("--epochs", type=int, help="train until this many epochs in total; the learning rate "
                   "follows a cosine schedule over them (default: the checkpoint's, else per model)")
    p.add_argument("--batch-size", type=int, help="default: the checkpoint's with --resume, else per model")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the checkpoint's with --resume, "
                   "else per model)")
    p.add_argument("--seed", type=int, default=None, help="fixes initialization and batch order, on one "
                   "backend (each draws its own initial weights) (default: the checkpoint's with --resume "
                   "(another is refused), else 0)")
    p.add_argument("--limit", type=int, help="use only the first N training and N test images "
                   "(default: the checkpoint's with --resume, else all)")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint (.npz) after every epoch (a file "
                   "already at PATH is refused, unless it is the --resume checkpoint)")
    p.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save (add "
                   "--save PATH to keep saving)")
    p.add_argument("--plot", metavar="PATH", help="write a picture of loss and accuracy per epoch "
                   "(matplotlib; PNG, or the format PATH's suffix names: .svg, .pdf, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress display (a bar on a terminal, "
                   "else a plain line on stderr at each quarter of an epoch; a download's bytes too)")
    p.add_argument("--profile", action="store_true",
                   help="print time and saved memory per op type (topgrad.profile) after the first epoch")
    return p


class _Version(argparse.Action):
    """--version: the package metadata is read only when asked for, not on every start."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        if sys.stdout is None:  # `>&-`: nowhere to print it
            parser.exit(EXIT_FAILURE, "topgrad-train: error: stdout is closed; nowhere to print the "
                        "versions\n")
        try:  # on stdout, as argparse's own version action prints
            print(_versions(), flush=True)
        except BrokenPipeError:  # `| head -c0`: the reader left, as for the training's output
            stdout_to_devnull()
            parser.exit(EXIT_OUTPUT_CLOSED)
        except OSError as exc:  # a full disk, /dev/full
            stdout_to_devnull()
            parser.exit(EXIT_FAILURE, f"topgrad-train: error: cannot print the versions: "
                                      f"{exc.strerror or exc}\n")
        parser.exit()


def stdout_to_devnull() -> None:
    """Point stdout's file descriptor at devnull after a write to it failed, so that Python's
    flush at exit does not fail a second time (with a traceback)."""
    if sys.stdout is not None:  # None: no stdout at all (`>&-`), nothing to flush
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor (captured)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _versions() -> str:
    """topgrad-train's version line: this package's, topgrad's and each installed backend
    package's (the distributions with a `topgrad` entry point; none is loaded)."""
    from importlib.metadata import PackageNotFoundError, entry_points, version

    found = []
    for package in ("topgrad-examples", "topgrad-core"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed as a package)")
    plugins = {(ep.dist.name, ep.dist.version) for ep in entry_points(group="topgrad") if ep.dist is not None}
    found += [f"{name} {v}" for name, v in sorted(plugins) if name != "topgrad-core"]
    return "topgrad-train: " + ", ".join(found)


def _folder_in_the_way(name: str, path: str | None) -> str:
    """Where --save or --plot names a folder (or --plot one at the chart's file, `taken` for a folder
    `taken.png`): what is wrong, as with `out/` a bad value, status 2, before anything runs."""
    if name not in ("save", "plot") or not path:
        return ""
    if os.path.isdir(path):
        what, example = ("the checkpoint", "run.npz") if name == "save" else ("the chart", "curves.png")
        return f"--{name} {path}: is a folder; give {what} a file name, e.g. {os.path.join(path, example)}"
    chart = chart_path(path)
    if name == "plot" and chart.is_dir():
        return f"--plot {path}: the chart's file {chart} is a folder; give another name"
    return ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line, its numbers and paths checked; a usage error exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, least in (("epochs", 0), ("seed", 0), ("limit", 1), ("batch_size", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
        if value is not None and value > MAX_INT:  # a checkpoint stores each as an int64
            parser.error(f"--{name.replace('_', '-')} must be at most 2**63 - 1, got {value}")
    if args.backend == "":
        parser.error("--backend needs a name (numpy, triton, ...; topgrad.available_backends() lists "
                     "them), got an empty one")
    for name in ("data_dir", "save", "resume", "plot"):
        if getattr(args, name) == "":
            parser.error(f"--{name.replace('_', '-')} needs a path, got an empty one")
        if getattr(args, name):  # `--save=~/x` keeps its `~` in the shell: expanded here, once for all
            setattr(args, name, os.path.expanduser(getattr(args, name)))
        path = getattr(args, name)
        if name in ("save", "plot") and path and path.endswith((os.sep, os.altsep or os.sep)):
            # a file is written there: "out/" would be written as the file "out", over what is there
            example = os.path.join(path, "run.npz" if name == "save" else "curves.png")
            parser.error(f"--{name} names a file to write, got {path!r}, a folder path (it ends in a "
                         f"separator); give the file's name: {example}")
        folder = _folder_in_the_way(name, path)
        if folder:
            parser.error(folder)
    if args.lr is not None and not FLOAT32_SMALLEST_NORMAL <= args.lr < 3.4e38:  # it scales float32 arrays
        parser.error(f"--lr must be a positive number from float32's smallest normal "
                     f"({FLOAT32_SMALLEST_NORMAL:.3g}; smaller rounds the updates to 0) to below its largest "
                     f"(3.4e38), got {args.lr}")
    return args
