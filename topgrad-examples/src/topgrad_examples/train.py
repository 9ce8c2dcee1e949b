"""`topgrad-train MODEL`: train an example model on MNIST or Fashion-MNIST and report test accuracy.

    topgrad-train mlp                        # MNIST, the model's default recipe
    topgrad-train conv --dataset fashion-mnist --epochs 1 --save conv.npz
    topgrad-train conv --resume conv.npz     # finish an interrupted run (--epochs N: go on to N)

Each epoch shows a progress bar (loss, images per second) and ends with the test
accuracy; the last line printed is `test accuracy: 0.9812`. A run is repeatable: the
seed fixes the initialization and the order of the batches of every epoch.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import topgrad
from tqdm import tqdm

from topgrad_examples import checkpoint
from topgrad_examples.data import (
    BUNDLED,
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    bundled_subset,
    load_dataset,
    normalize,
)
from topgrad_examples.download import DownloadError
from topgrad_examples.idx import IDXError
from topgrad_examples.loss import accuracy, cross_entropy
from topgrad_examples.models import MODELS, Module, TrainDefaults, build
from topgrad_examples.plot import PlotError, chart_path, check_plot_path, plot_history

EVAL_BATCH = 500
MAX_INT = 2**63 - 1  # a checkpoint stores the seed, the epochs and the batch size as int64


def build_parser() -> argparse.ArgumentParser:
    """The `topgrad-train` command line."""
    p = argparse.ArgumentParser(
        prog="topgrad-train", description="Train a topgrad example model and print its test accuracy.")
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
    p.add_argument("--batch-size", type=int, help="default: per model")
    p.add_argument("--lr", type=float, help="peak learning rate (default: per model)")
    p.add_argument("--seed", type=int, default=None, help="fixes initialization and batch order, on one "
                   "backend (each draws its own initial weights) (default: the checkpoint's with --resume "
                   "(another is refused), else 0)")
    p.add_argument("--limit", type=int, help="use only the first N training and N test images")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint (.npz) after every epoch")
    p.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save (add "
                   "--save PATH to keep saving)")
    p.add_argument("--plot", metavar="PATH", help="write a picture of loss and accuracy per epoch "
                   "(matplotlib; PNG, or the format PATH's suffix names: .svg, .pdf, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true",
                   help="print time and saved memory per op type (topgrad.profile) after the first epoch")
    return p


# ---- pieces of the training loop ------------------------------------------------------
def make_optimizer(recipe: TrainDefaults, params: list[topgrad.Tensor]) -> topgrad.optim.Optimizer:
    """The optimizer a recipe names, with its learning rate and weight decay; `sgd` is SGD with
    Nesterov momentum (the recipe's `momentum`), or plain SGD when that is 0."""
    if recipe.optimizer == "adam":
        return topgrad.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return topgrad.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return topgrad.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                 weight_decay=recipe.weight_decay, nesterov=recipe.momentum > 0)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def learning_rate(step: int, total: int, peak: float, warmup: int = 0) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `peak` towards zero at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps(wanted: int, total: int) -> int:
    """The recipe's warm-up, at most a fifth of the run: a short run (--limit) still reaches the
    cosine decay instead of ending part-way up the ramp."""
    return min(wanted, total // 5)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Shuffled index batches; the order depends only on (seed, epoch), so resumed runs match."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def evaluate(model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Test accuracy in eval mode (BatchNorm uses its running statistics), without building a graph."""
    correct = 0
    with topgrad.no_grad():
        for start in range(0, len(labels), batch_size):
            batch = topgrad.Tensor(images[start:start + batch_size], requires_grad=False)
            logits = model(batch, training=False)
            correct += round(accuracy(logits, labels[start:start + batch_size]) * len(logits))
    return correct / max(1, len(labels))


def train_epoch(
    model: Module, optimizer: topgrad.optim.Optimizer, images: np.ndarray, labels: np.ndarray,
    recipe: TrainDefaults, seed: int, epoch: int, total_epochs: int, progress: bool = True,
) -> float:
    """One pass over the training set; returns the mean training loss."""
    steps = math.ceil(len(labels) / recipe.batch_size)
    step = epoch * steps
    total_loss = 0.0
    bar = tqdm(total=len(labels), desc=f"epoch {epoch + 1}/{total_epochs}", unit="img",
               disable=not progress, leave=False, dynamic_ncols=True)
    total = total_epochs * steps
    warmup = warmup_steps(recipe.warmup_steps, total)
    with bar:  # closed on Ctrl-C too: a message after it starts on a line of its own
        for i, index in enumerate(batches(len(labels), recipe.batch_size, seed, epoch)):
            optimizer.lr = learning_rate(step + i, total, recipe.lr, warmup)
            batch = topgrad.Tensor(images[index], requires_grad=False)  # an input: no gradient to compute
            loss = cross_entropy(model(batch, training=True), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            bar.update(len(index))
            bar.set_postfix(loss=f"{total_loss / (i + 1):.4f}", refresh=i == steps - 1)
    return total_loss / max(1, steps)


# ---- the command ------------------------------------------------------------------------
def _select_data(ds: Dataset, limit: int | None) -> tuple[np.ndarray, ...]:
    n_train, n_test = (len(ds.train_labels), len(ds.test_labels)) if limit is None else (limit, limit)
    return (normalize(ds.train_images[:n_train], ds.name), ds.train_labels[:n_train].astype(np.int64),
            normalize(ds.test_images[:n_test], ds.name), ds.test_labels[:n_test].astype(np.int64))


def _recipe(args: argparse.Namespace, saved: dict[str, Any]) -> TrainDefaults:
    """The model's defaults, overridden by the checkpoint's settings, overridden by the command line."""
    recipe = MODELS[args.model].defaults
    for field in ("batch_size", "lr", "epochs"):
        value = getattr(args, field)
        value = saved.get(field) if value is None else value
        if value is not None:
            recipe = replace(recipe, **{field: type(getattr(recipe, field))(value)})
    return recipe


class InterruptedTrainingError(Exception):
    """Ctrl-C during training: what was saved and how to go on."""


class _SaveFailedError(Exception):
    """--save could not write the checkpoint of a finished epoch (OSError): training stops."""

    def __init__(self, epoch: int, accuracy: float, error: OSError) -> None:
        super().__init__(epoch, accuracy, error)
        self.epoch, self.accuracy, self.error = epoch, accuracy, error


class OutputClosedError(Exception):
    """The reader of the output went away during training (`topgrad-train ... | head`), or the
    output could not be written (a full disk): what was saved and how to go on. `status` is the
    exit status: 141 (a shell's for SIGPIPE) for a closed pipe, else 1."""

    def __init__(self, message: str, status: int = 141) -> None:
        super().__init__(message)
        self.status = status


class _OutputFailedError(Exception):
    """A line could not be written to stdout for another reason than a closed pipe (a full disk,
    an I/O error); the message is the reason."""


def _say(text: str) -> None:
    """Print a line to stdout, flushed, so that a failure to write it is seen at once: a closed
    pipe stays BrokenPipeError, any other OSError is an _OutputFailedError."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputFailedError(exc.strerror or str(exc)) from exc


@dataclass
class _Saved:
    """What this run has written to --save: the last epoch saved, and the one being saved (a
    Ctrl-C may land just after the file is replaced); None: nothing yet."""

    epoch: int | None = None
    writing: int | None = None

    def last(self, path: str) -> int | None:
        """The last epoch this run saved to `path`, looking at the file only for an unfinished save."""
        if self.writing is not None:
            with contextlib.suppress(checkpoint.CheckpointError):
                if int(checkpoint.read(path)["meta/epoch"]) == self.writing:
                    return self.writing
        return self.epoch


def _check_same_data(path: str, saved: dict[str, Any], n_train: int, n_test: int, source: str) -> None:
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


def _check_same_run(path: str, saved: dict[str, Any], dataset: str | None, seed: int | None) -> None:
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


def _check_plot_spares_checkpoints(args: argparse.Namespace) -> None:
    """The chart is written after training: at the path of --save or --resume it would replace
    the checkpoint."""
    chart = chart_path(args.plot)
    for flag in ("save", "resume"):
        path = getattr(args, flag)
        if path and Path(path).resolve() == chart.resolve():
            raise PlotError(f"--plot {args.plot} is the --{flag} checkpoint's path; the chart would "
                            "replace it: give the plot another name")


def _backend_text(backend: topgrad.Backend) -> str:
    """The backend's name, with where it runs when it says (triton: "Triton interpreter on CPU:
    slow"), so that a slow run explains itself."""
    where = getattr(backend, "where", "")
    return f"{backend.name} ({where})" if where else backend.name


def _what_was_saved(args: argparse.Namespace, saved: _Saved, start: int, save_failed: bool = False) -> str:
    """After Ctrl-C (or a failed save): the epoch this run saved and how to go on, else where a
    resumed run can go on from, else that nothing was saved (a file already at --save is not
    this run's)."""
    path = args.save
    epoch = saved.last(path) if path else None
    if epoch is not None:
        return f"{path} holds epoch {epoch}: go on with --resume {path} --save {path}"
    if args.resume:  # the checkpoint still has its old settings: repeat the ones this command changed
        changed = [f" --{flag.replace('_', '-')} {getattr(args, flag)}"
                   for flag in ("epochs", "batch_size", "lr") if getattr(args, flag) is not None]
        keep = "".join(changed) + (f" --save {path}" if path else "")
        return (f"no epoch of this run {'was saved' if save_failed else 'finished'}; {args.resume} still "
                f"holds epoch {start}: go on with --resume {args.resume}{keep}")
    if save_failed:
        return "no epoch of this run was saved"
    if not path:
        return "nothing was saved (--save PATH keeps a checkpoint after every epoch)"
    return f"no epoch finished, so {path} was not written"


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def run(args: argparse.Namespace) -> float:
    """Train as the parsed arguments say; return the final test accuracy."""
    if args.backend:
        topgrad.set_backend(args.backend)
    else:  # resolve the default now: a missing backend fails before any data is read or downloaded
        topgrad.get_backend()
    if args.plot:
        check_plot_path(args.plot)
        _check_plot_spares_checkpoints(args)
    if args.save:
        checkpoint.check_writable(args.save)
    resumed = checkpoint.read(args.resume) if args.resume else None  # read once: settings, then state
    saved = checkpoint.config_of(resumed) if resumed is not None else {}
    if args.resume:
        _check_same_run(args.resume, saved, args.dataset, args.seed)
    dataset = args.dataset or str(saved.get("dataset") or "mnist")
    seed = args.seed if args.seed is not None else int(saved.get("seed", 0))
    limit = args.limit if args.limit is not None else int(saved["limit"]) if "limit" in saved else None
    recipe = _recipe(args, saved)

    data_dir, recorded = args.data_dir, str(saved.get("data_source") or "")
    if data_dir is None and args.resume and Path(recorded).is_absolute():  # a folder, not the subset
        if Path(recorded).is_dir():
            data_dir = recorded  # the folder the checkpoint's epochs trained on
        else:
            _say(f"note: the checkpoint's data folder {recorded} is gone; looking for {dataset} elsewhere "
                 "(--data-dir names one)")
    if data_dir is None and args.resume and recorded == BUNDLED:
        data = bundled_subset()  # what the checkpoint's epochs trained on, whatever else is installed
    else:
        data = load_dataset(dataset, data_dir, download_ok=not args.no_download)
    x_train, y_train, x_test, y_test = _select_data(data, limit)
    if limit is not None and limit > min(len(data.train_labels), len(data.test_labels)):
        _say(f"note: --limit {limit}: {data.source} has {len(data.train_labels):,} training and "
             f"{len(data.test_labels):,} test images; using at most that many")
    if args.resume:
        _check_same_data(args.resume, saved, len(y_train), len(y_test), data.source)
    model = build(args.model, seed=seed)
    optimizer = make_optimizer(recipe, model.parameters())
    start, history = 0, np.zeros((0, 3))
    if args.resume:
        start, _, history = checkpoint.load(args.resume, args.model, model, optimizer, resumed)
        _say(f"resumed from {args.resume} after epoch {start}")
    config = {"dataset": dataset, "seed": seed, "batch_size": recipe.batch_size, "lr": recipe.lr,
              "epochs": recipe.epochs, "train_images": len(y_train), "test_images": len(y_test),
              "data_source": data.source, **({} if limit is None else {"limit": int(limit)})}
    _say(f"{args.model} on {dataset} ({len(y_train):,} training, {len(y_test):,} test images from "
         f"{data.source}), backend {_backend_text(topgrad.get_backend())}, {recipe.optimizer} "
         f"lr {recipe.lr:g}, batch {recipe.batch_size}, {_epochs(recipe.epochs)}")
    if start >= recipe.epochs and args.resume:
        _say(f"the checkpoint is at epoch {start} already: nothing to train (--epochs N above {start} "
             "goes on)")
    elif start >= recipe.epochs:
        _say(f"nothing to train: --epochs {recipe.epochs}; evaluating the model as initialized"
             f"{' (nothing is saved)' if args.save else ''}")
    saved_now = _Saved()
    try:
        acc, history = _train(args, model, optimizer, recipe, seed, start, history, config,
                              (x_train, y_train, x_test, y_test), saved_now)
    except KeyboardInterrupt:
        raise InterruptedTrainingError(f"interrupted; {_what_was_saved(args, saved_now, start)}") from None
    except BrokenPipeError:
        raise OutputClosedError(f"the output closed (the program reading it exited), so training "
                                f"stopped; {_what_was_saved(args, saved_now, start)}") from None
    except _OutputFailedError as exc:
        raise OutputClosedError(f"the output could not be written ({exc}), so training stopped; "
                                f"{_what_was_saved(args, saved_now, start)}", status=1) from None
    except _SaveFailedError as exc:
        raise checkpoint.CheckpointError(
            f"epoch {exc.epoch} finished (test acc {exc.accuracy:.4f}) but its checkpoint could not be "
            f"written to {args.save} ({exc.error.strerror or exc.error}), so training stopped; "
            f"{_what_was_saved(args, saved_now, start, save_failed=True)}") from None
    try:
        if args.profile and start >= recipe.epochs:
            _say("no epoch ran, so there is no profile (--profile times the first epoch this run trains)")
        if args.plot and len(history) == 0:
            _say(f"no epoch to plot, so {args.plot} was not written")
        elif args.plot:
            written = plot_history(history, args.plot, title=f"{args.model} on {dataset}")
            _say(f"loss and accuracy curves: {written}")
        _say(f"test accuracy: {acc:.4f}")
    except KeyboardInterrupt:  # training is over: say so, and what it left, not "before training began"
        last = saved_now.last(args.save) if args.save else None
        kept = f"; {args.save} holds epoch {last}" if last is not None else ""
        plot = f", so {chart_path(args.plot)} may not be written" if args.plot and len(history) else ""
        raise InterruptedTrainingError(
            f"interrupted after training ended (test accuracy: {acc:.4f}){plot}{kept}") from None
    return acc


def _train(
    args: argparse.Namespace, model: Module, optimizer: topgrad.optim.Optimizer, recipe: TrainDefaults,
    seed: int, start: int, history: np.ndarray, config: dict[str, Any], data: tuple[np.ndarray, ...],
    saved: _Saved,
) -> tuple[float, np.ndarray]:
    """Epochs `start` to the recipe's last, each evaluated and saved (noted in `saved`); (test
    accuracy, history)."""
    x_train, y_train, x_test, y_test = data
    acc = None
    for epoch in range(start, recipe.epochs):
        began = time.perf_counter()
        profiling = args.profile and epoch == start
        with topgrad.profile() if profiling else contextlib.nullcontext() as profile:
            loss = train_epoch(model, optimizer, x_train, y_train, recipe, seed, epoch, recipe.epochs,
                               progress=not args.no_progress)
        seconds = time.perf_counter() - began
        acc = evaluate(model, x_test, y_test)
        history = np.vstack([history, [loss, acc, seconds]])
        if args.save:  # before printing: a closed output pipe must not lose a finished epoch
            saved.writing = epoch + 1
            try:
                checkpoint.save(args.save, args.model, model, optimizer, epoch + 1, config, history)
            except OSError as exc:  # a full disk, a folder removed or made read-only since the start
                saved.writing = None  # the save is atomic: the file at the path is as it was
                raise _SaveFailedError(epoch + 1, acc, exc) from exc
            saved.epoch, saved.writing = epoch + 1, None
        _say(f"epoch {epoch + 1}/{recipe.epochs}: train loss {loss:.4f}, test acc {acc:.4f}, "
             f"{seconds:.1f} s ({len(y_train) / seconds:,.0f} img/s)")
        if profile is not None:
            _say(f"profile of epoch {epoch + 1} (training steps only):\n{profile}")
        if not math.isfinite(loss) and math.isfinite(history[-2, 0] if len(history) > 1 else 0.0):
            _say(f"note: the training loss is {loss}: the run diverged (lr {recipe.lr:g}; a smaller "
                 "--lr may help)")
    if acc is None:
        acc = evaluate(model, x_test, y_test)
    return acc, history


def _output_closed(exc: Exception) -> int:
    """After stdout's reader exited, or stdout could not be written: say so on stderr (if it is
    still open) and return 141, a shell's status for SIGPIPE (1 for a failed write). stdout goes
    to devnull so that Python's exit flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor (captured)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if isinstance(exc, OutputClosedError):
        what, status = str(exc), exc.status
    elif isinstance(exc, _OutputFailedError):
        what, status = f"the output could not be written ({exc})", 1
    else:
        what, status = "the output closed (its reader exited)", 141
    with contextlib.suppress(OSError):
        print(f"topgrad-train: {what}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `topgrad-train`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, least in (("epochs", 0), ("seed", 0), ("limit", 1), ("batch_size", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
        if value is not None and value > MAX_INT:  # a checkpoint stores each as an int64
            parser.error(f"--{name.replace('_', '-')} must be at most 2**63 - 1, got {value}")
    for name in ("data_dir", "save", "resume", "plot"):
        if getattr(args, name) == "":
            parser.error(f"--{name.replace('_', '-')} needs a path, got an empty one")
    if args.lr is not None and not 0 < args.lr < 3.4e38:  # it multiplies float32 arrays
        parser.error(f"--lr must be a positive number below float32's largest (3.4e38), got {args.lr}")
    try:
        run(args)
    except InterruptedTrainingError as exc:
        print(f"topgrad-train: {exc}", file=sys.stderr)
        return 130
    except (OutputClosedError, BrokenPipeError, _OutputFailedError) as exc:
        return _output_closed(exc)
    except KeyboardInterrupt:  # before training: reading, searching or downloading the data
        print("topgrad-train: interrupted before training began; nothing was saved", file=sys.stderr)
        return 130
    except (DatasetNotFoundError, DownloadError, IDXError, checkpoint.CheckpointError, PlotError,
            topgrad.BackendNotFoundError, topgrad.BackendUnavailableError) as exc:
        print(f"topgrad-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
