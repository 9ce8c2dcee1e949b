"""`topgrad-train MODEL`: train an example model on MNIST or Fashion-MNIST and report test accuracy.

    topgrad-train mlp                        # MNIST, the model's default recipe
    topgrad-train conv --dataset fashion-mnist --epochs 1 --save conv.npz
    topgrad-train conv --resume conv.npz     # finish an interrupted run (--epochs N: go on to N)

Each epoch shows its progress on stderr (loss, images per second: a bar on a terminal, a
plain line at each quarter elsewhere) and ends with the test accuracy; the last line printed
is `test accuracy: 0.9812`. A run is repeatable: the seed fixes the initialization and the
order of the batches of every epoch. A run whose loss becomes NaN or infinite stops, keeping
the last good checkpoint. Exit statuses: `topgrad-train --help` (`cli.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import topgrad

from topgrad_examples import checkpoint
from topgrad_examples.cli import EXIT_FAILURE, EXIT_OK, EXIT_OUTPUT_CLOSED, parse_args, stdout_to_devnull
from topgrad_examples.data import (
    BUNDLED,
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
from topgrad_examples.progress import EpochProgress
from topgrad_examples.resume import (
    check_same_data,
    check_same_run,
    recorded_folder_problem,
    resumed_data_not_found,
    what_divergence_left,
    what_was_saved,
)
from topgrad_examples.saving import Saved
from topgrad_examples.signals import interrupted, stop_like_ctrl_c

EVAL_BATCH = 500


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


def _run_warmup(recipe: TrainDefaults, n_train: int) -> int:
    """The warm-up steps a run of `n_train` images takes: the recipe's, capped as `train_epoch` caps it."""
    return warmup_steps(recipe.warmup_steps, recipe.epochs * math.ceil(n_train / recipe.batch_size))


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


class DivergedError(ArithmeticError):
    """The training loss, or a weight, became NaN or infinite; the message says where (`in epoch
    2/3, step 5/469: the training loss is nan (...)`)."""


def train_epoch(
    model: Module, optimizer: topgrad.optim.Optimizer, images: np.ndarray, labels: np.ndarray,
    recipe: TrainDefaults, seed: int, epoch: int, total_epochs: int, progress: bool = True,
) -> float:
    """One pass over the training set, its last batch partial where the batch size does not divide
    it; returns the mean training loss over the images (each batch's mean weighted by its size, as
    one loss over the whole set would be). A batch loss that is NaN or infinite stops it with
    DivergedError, naming the step and the last finite batch loss."""
    steps = math.ceil(len(labels) / recipe.batch_size)
    step = epoch * steps
    total_loss, seen, last = 0.0, 0, "at the epoch's first step"
    total = total_epochs * steps
    warmup = warmup_steps(recipe.warmup_steps, total)
    with EpochProgress(len(labels), f"epoch {epoch + 1}/{total_epochs}", enabled=progress) as shown:
        for i, index in enumerate(batches(len(labels), recipe.batch_size, seed, epoch)):
            optimizer.lr = learning_rate(step + i, total, recipe.lr, warmup)
            batch = topgrad.Tensor(images[index], requires_grad=False)  # an input: no gradient to compute
            loss = cross_entropy(model(batch, training=True), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):  # the progress display is closed before the message
                raise DivergedError(f"in epoch {epoch + 1}/{total_epochs}, step {i + 1}/{steps}: the "
                                    f"training loss is {value} ({last})")
            total_loss, seen = total_loss + value * len(index), seen + len(index)
            last = f"the last finite batch loss: {value:.4f}, step {i + 1}"
            shown.update(len(index), total_loss / seen, last=i == steps - 1)
    return total_loss / max(1, seen)


def non_finite_state(model: Module) -> str | None:
    """The name of the first parameter or buffer of `model` holding a NaN or an infinity, else None."""
    for name, tensor in model.state().items():
        if not np.isfinite(tensor.numpy()).all():
            return name
    return None


# ---- the command ------------------------------------------------------------------------
def _select_data(ds: Dataset, limit: int | None) -> tuple[np.ndarray, ...]:
    n_train, n_test = (len(ds.train_labels), len(ds.test_labels)) if limit is None else (limit, limit)
    return (normalize(ds.train_images[:n_train], ds.name), ds.train_labels[:n_train].astype(np.int64),
            normalize(ds.test_images[:n_test], ds.name), ds.test_labels[:n_test].astype(np.int64))


def _limit_note(limit: int, source: str, n_train: int, n_test: int) -> str:
    """The note for a --limit above a split's size, naming the split it caps: "using at most that
    many" read as if a limit of 20,000 were too large for MNIST's 60,000 training images."""
    if limit > n_train and limit > n_test:
        return (f"note: --limit {limit}: {source} has {n_train:,} training and {n_test:,} test images; "
                "using all of them")
    split, n, other, used = ("test", n_test, "training", "testing") if limit > n_test else (
        "training", n_train, "test", "training")
    return (f"note: --limit {limit}: {source} has {n:,} {split} images; {used} on all of them "
            f"({limit:,} {other} images)")


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


class RunDivergedError(Exception):
    """The run stopped because it diverged: where, the last finite loss, a hint and what was kept."""


class _SaveFailedError(Exception):
    """--save could not write the checkpoint of a finished epoch (OSError): training stops."""

    def __init__(self, epoch: int, accuracy: float, error: OSError) -> None:
        super().__init__(epoch, accuracy, error)
        self.epoch, self.accuracy, self.error = epoch, accuracy, error


class OutputClosedError(Exception):
    """The reader of the output went away during training (`topgrad-train ... | head`), or the
    output could not be written (a full disk): what was saved and how to go on. `status` is the
    exit status: 141 (a shell's for SIGPIPE) for a closed pipe, else 1."""

    def __init__(self, message: str, status: int = EXIT_OUTPUT_CLOSED) -> None:
        super().__init__(message)
        self.status = status


class _OutputFailedError(Exception):
    """A line could not be written to stdout for another reason than a closed pipe (a full disk,
    an I/O error); the message is the reason."""


STDOUT_CLOSED = "stdout is closed"


def _say(text: str) -> None:
    """Print a line to stdout, flushed, so that a failure to write it is seen at once: a closed
    pipe stays BrokenPipeError, any other OSError is an _OutputFailedError, and so is a closed
    stdout (`>&-`: sys.stdout is None, and print() would drop the line without a word)."""
    if sys.stdout is None:
        raise _OutputFailedError(STDOUT_CLOSED)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputFailedError(exc.strerror or str(exc)) from exc


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


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _load_data(args: argparse.Namespace, dataset: str, data_dir: str | None, recorded: str) -> Dataset:
    """The dataset, as load_dataset finds it; a resumed run that trained on a folder never falls
    back to the bundled subset (other images): it said "using the bundled subset", then refused."""
    folder = bool(args.resume) and Path(recorded).is_absolute()
    try:
        return load_dataset(dataset, data_dir, download_ok=not args.no_download, subset_ok=not folder,
                            progress=not args.no_progress)
    except DatasetNotFoundError as exc:
        if not folder:
            raise
        raise DatasetNotFoundError(resumed_data_not_found(args.resume, recorded, dataset, args.data_dir,
                                                          exc)) from None


def run(args: argparse.Namespace, saved_now: Saved | None = None) -> float:
    """Train as the parsed arguments say; return the final test accuracy. `saved_now` (filled in
    as the run goes): whether training began, and what it saved where."""
    saved_now = Saved() if saved_now is None else saved_now
    if args.backend:
        topgrad.set_backend(args.backend)
    else:  # resolve the default now: a missing backend fails before any data is read or downloaded
        topgrad.get_backend()
    if args.plot:
        check_plot_path(args.plot)
        _check_plot_spares_checkpoints(args)
    if args.save:
        checkpoint.check_writable(args.save)
    saved_now.find_files(args.save, args.resume)  # before they are checked or read: no file missed
    resumed = checkpoint.read(args.resume) if args.resume else None  # read once: settings, then state
    if args.save:  # after the --resume file's own errors: they say more
        checkpoint.check_not_taken(args.save, args.resume)
    saved = checkpoint.config_of(resumed) if resumed is not None else {}
    if resumed is not None:
        checkpoint.check_model(args.resume, resumed, args.model)  # before the data, which takes a while
        check_same_run(args.resume, saved, args.dataset, args.seed)
    dataset = args.dataset or str(saved.get("dataset") or "mnist")
    seed = args.seed if args.seed is not None else int(saved.get("seed", 0))
    limit = args.limit if args.limit is not None else int(saved["limit"]) if "limit" in saved else None
    recipe = _recipe(args, saved)

    data_dir, recorded = args.data_dir, str(saved.get("data_source") or "")
    if data_dir is None and args.resume and Path(recorded).is_absolute():  # a folder, not the subset
        problem = recorded_folder_problem(recorded, dataset)
        if not problem:
            data_dir = recorded  # the folder the checkpoint's epochs trained on
        else:
            _stderr(f"note: the checkpoint's data folder {recorded} {problem}; looking for {dataset} "
                    "elsewhere (--data-dir names one)")
    if data_dir is None and args.resume and recorded == BUNDLED:
        data = bundled_subset()  # what the checkpoint's epochs trained on, whatever else is installed
    else:
        data = _load_data(args, dataset, data_dir, recorded)
    x_train, y_train, x_test, y_test = _select_data(data, limit)
    if limit is not None and limit > min(len(data.train_labels), len(data.test_labels)):
        _stderr(_limit_note(limit, data.source, len(data.train_labels), len(data.test_labels)))
    if args.resume:
        check_same_data(args.resume, saved, len(y_train), len(y_test), data.source)
    model = build(args.model, seed=seed)
    optimizer = make_optimizer(recipe, model.parameters())
    start, history = 0, np.zeros((0, 3))
    if args.resume:
        start, _, history = checkpoint.load(args.resume, args.model, model, optimizer, resumed)
        bad = non_finite_state(model)
        if bad is not None:  # written before diverged epochs were refused
            raise checkpoint.CheckpointError(
                f"{args.resume}: {bad} is NaN or infinite: the run that saved it had diverged; go on from "
                "an earlier checkpoint, or start again with a lower --lr")
        unsaved = "" if args.save or start >= recipe.epochs else (
            f" (the epochs trained now are not saved: add --save {args.resume} to keep them)")
        _say(f"resumed from {args.resume} after epoch {start}{unsaved}")
        _note_new_schedule(saved, recipe.epochs, start)
    config = {"dataset": dataset, "seed": seed, "batch_size": recipe.batch_size, "lr": recipe.lr,
              "epochs": recipe.epochs, "train_images": len(y_train), "test_images": len(y_test),
              "data_source": data.source, **({} if limit is None else {"limit": int(limit)})}
    _say(f"{args.model} on {dataset} ({len(y_train):,} training, {len(y_test):,} test images from "
         f"{data.source}), backend {_backend_text(topgrad.get_backend())}, {recipe.optimizer} "
         f"lr {recipe.lr:g}, batch {recipe.batch_size}, {_epochs(recipe.epochs)}"
         f"{recipe.extras(_run_warmup(recipe, len(y_train)))}")
    if start >= recipe.epochs and args.resume:
        _say(f"the checkpoint is at epoch {start} already: nothing to train (--epochs N above {start} "
             "goes on)")
    elif start >= recipe.epochs:
        _say(f"nothing to train: --epochs {recipe.epochs}; evaluating the model as initialized"
             f"{' (nothing is saved)' if args.save else ''}")
    saved_now.start = start  # training begins: from here on, an interrupt says what was saved
    try:
        acc, history = _train(args, model, optimizer, recipe, seed, start, history, config,
                              (x_train, y_train, x_test, y_test), saved_now)
    except KeyboardInterrupt:
        raise InterruptedTrainingError(f"interrupted; {what_was_saved(args, saved_now)}") from None
    except BrokenPipeError:
        raise OutputClosedError(f"the output closed (the program reading it exited), so training "
                                f"stopped; {what_was_saved(args, saved_now)}") from None
    except _OutputFailedError as exc:
        raise OutputClosedError(f"the output could not be written ({exc}), so training stopped; "
                                f"{what_was_saved(args, saved_now)}", status=EXIT_FAILURE) from None
    except _SaveFailedError as exc:
        raise checkpoint.CheckpointError(
            f"epoch {exc.epoch} finished (test acc {exc.accuracy:.4f}) but its checkpoint could not be "
            f"written to {saved_now.path} ({exc.error.strerror or exc.error}), so training stopped; "
            f"{what_was_saved(args, saved_now, save_failed=True)}") from None
    except DivergedError as exc:
        raise RunDivergedError(f"the run diverged {exc}; try a lower --lr than {recipe.lr:g}; "
                               f"{what_divergence_left(args, saved_now)}") from None
    try:
        if args.profile and start >= recipe.epochs:
            _say("no epoch ran, so there is no profile (--profile times the first epoch this run trains)")
        if args.plot and len(history) == 0:
            _say(f"no epoch to plot, so {args.plot} was not written")
        plot_failed = None
        if args.plot and len(history):
            try:
                written = plot_history(history, args.plot, title=f"{args.model} on {dataset}")
                _say(f"loss and accuracy curves: {written}")
            except PlotError as exc:  # the result still comes, last, as always; the failure after it
                plot_failed = exc
        _say(f"test accuracy: {acc:.4f}")
        if plot_failed is not None:
            raise plot_failed
    except KeyboardInterrupt:  # training is over: say so, and what it left, not "before training began"
        last = saved_now.last()
        kept = f"; {saved_now.path} holds epoch {last}" if last is not None else ""
        plot = f", so {chart_path(args.plot)} may not be written" if args.plot and len(history) else ""
        raise InterruptedTrainingError(
            f"interrupted after training ended (test accuracy: {acc:.4f}){plot}{kept}") from None
    return acc


def _train(
    args: argparse.Namespace, model: Module, optimizer: topgrad.optim.Optimizer, recipe: TrainDefaults,
    seed: int, start: int, history: np.ndarray, config: dict[str, Any], data: tuple[np.ndarray, ...],
    saved: Saved,
) -> tuple[float, np.ndarray]:
    """Epochs `start` to the recipe's last, each evaluated and saved (noted in `saved`); (test
    accuracy, history). An epoch whose loss or weights are not finite is neither evaluated nor
    saved: DivergedError, and the checkpoint keeps the last good epoch."""
    x_train, y_train, x_test, y_test = data
    acc = None
    for epoch in range(start, recipe.epochs):
        began = time.perf_counter()
        profiling = args.profile and epoch == start
        # numpy's overflow warnings say less than the divergence check below, which stops the run
        with np.errstate(over="ignore", invalid="ignore"), \
                topgrad.profile() if profiling else contextlib.nullcontext() as profile:
            loss = train_epoch(model, optimizer, x_train, y_train, recipe, seed, epoch, recipe.epochs,
                               progress=not args.no_progress)
        seconds = time.perf_counter() - began
        where = f"in epoch {epoch + 1}/{recipe.epochs}"
        if not math.isfinite(loss):
            raise DivergedError(f"{where}: the training loss is {loss}")
        bad = non_finite_state(model)
        if bad is not None:  # every batch loss was finite, but the last step broke the weights
            raise DivergedError(f"{where}: {bad} is NaN or infinite after its last step (train loss "
                                f"{loss:.4f})")
        acc = evaluate(model, x_test, y_test)
        history = np.vstack([history, [loss, acc, seconds]])
        saved.trained = epoch + 1
        if args.save:  # before printing: a closed output pipe must not lose a finished epoch
            _save(args.model, saved, (model, optimizer), epoch + 1, acc, config, history)
        kept = f", saved to {saved.path}" if args.save else ""
        _say(f"epoch {epoch + 1}/{recipe.epochs}: train loss {loss:.4f}, test acc {acc:.4f}, "
             f"{seconds:.1f} s ({len(y_train) / seconds:,.0f} img/s){kept}")
        if profile is not None:
            _say(f"profile of epoch {epoch + 1} (training steps only):\n{profile}")
    if acc is None:
        acc = evaluate(model, x_test, y_test)
    return acc, history


def _save(
    model_name: str, saved: Saved, trained: tuple[Module, topgrad.optim.Optimizer], epoch: int,
    acc: float, config: dict[str, Any], history: np.ndarray,
) -> None:
    """Save `epoch` to `saved.path`: --save, or beside it where another process replaced that file
    during this run (`Saved.check_path`: every later save and message then names the new file);
    noted in `saved`. _SaveFailedError where it cannot be written."""
    try:
        moved = saved.check_path()
        if moved:
            _stderr(moved)
        saved.begin(epoch)
        assert saved.path is not None  # --save was given
        written = checkpoint.save(saved.path, model_name, *trained, epoch, config, history)
    except OSError as exc:  # a full disk, a folder removed or made read-only since the start
        saved.writing = None  # the save is atomic: the file at the path is as it was
        raise _SaveFailedError(epoch, acc, exc) from exc
    saved.done(written)


def _note_new_schedule(saved: dict[str, Any], epochs: int, start: int) -> None:
    """A resumed run given another --epochs than its checkpoint's: its learning rate follows a
    cosine schedule over the new total, not the one the checkpoint's epochs followed."""
    planned = saved.get("epochs")
    if planned is not None and int(planned) != epochs and start < epochs:
        _stderr(f"note: --epochs {epochs}, the checkpoint's run planned {planned}: the cosine "
                f"learning-rate schedule is recomputed over the new total of {_epochs(epochs)} from epoch "
                f"{start + 1} on, so the result differs from a straight {epochs}-epoch run")


def _stderr(text: str) -> None:
    """A line on stderr, flushed: a note, or `topgrad-train: ...` as the run ends. None where there
    is no stderr (`2>&-` makes sys.stderr None, and print would then write to stdout) or it cannot
    be written."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError):
            print(text, file=sys.stderr, flush=True)


def _output_closed(exc: Exception) -> int:
    """After stdout's reader exited, or stdout could not be written: say so on stderr (if it is
    still open) and return 141, a shell's status for SIGPIPE (1 for a failed write). stdout goes
    to devnull so that Python's exit flush stays quiet."""
    stdout_to_devnull()
    if isinstance(exc, OutputClosedError):
        what, status = str(exc), exc.status
    elif isinstance(exc, _OutputFailedError):
        what, status = f"the output could not be written ({exc})", EXIT_FAILURE
    else:
        what, status = "the output closed (its reader exited)", EXIT_OUTPUT_CLOSED
    _stderr(f"topgrad-train: {what}")
    return status


RUN_ERRORS = (DatasetNotFoundError, DownloadError, IDXError, checkpoint.CheckpointError, PlotError,
              RunDivergedError, topgrad.BackendNotFoundError, topgrad.BackendUnavailableError,
              topgrad.BackendConflictError, topgrad.OpConflictError)
"""The failures of a run that `main` reports in one line (`topgrad-train: error: ...`), status 1: a
backend that cannot be used (missing, broken, or two plugins clashing over it or one of its ops) too,
as the conformance kit's LOAD_ERRORS."""


def _interrupted(text: str, received: list[int]) -> int:
    """Say why the run stopped (`signals.interrupted`: which signal); its exit status."""
    line, status = interrupted(text, received)
    _stderr(f"topgrad-train: {line}")
    return status


def _interrupted_outside_training(args: argparse.Namespace, saved: Saved) -> str:
    """An interrupt that `run` did not turn into its own message: before training began (reading,
    searching or downloading the data), or one landing while a message was composed."""
    if saved.start is None:
        return "interrupted before training began; nothing was saved"
    return f"interrupted; {what_was_saved(args, saved)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `topgrad-train`; returns the exit status (listed in `cli.EPILOG`): 0, 1 for a
    run that failed, 130 for Ctrl-C (143 for SIGTERM, 129 for SIGHUP), 141 when stdout's reader
    exited. A usage error exits with argparse's status 2 (SystemExit) before anything runs."""
    args = parse_args(argv)
    if sys.stdout is None:  # `>&-`: the result could not be printed; say so before any work is done
        _stderr(f"topgrad-train: {STDOUT_CLOSED} (>&-): the test accuracy could not be printed, so nothing "
                "was run; send stdout somewhere, e.g. > train.log")
        return EXIT_FAILURE
    saved = Saved()
    with stop_like_ctrl_c() as received:
        try:
            run(args, saved)
        except InterruptedTrainingError as exc:
            return _interrupted(str(exc), received)
        except (OutputClosedError, BrokenPipeError, _OutputFailedError) as exc:
            return _output_closed(exc)
        except KeyboardInterrupt:
            return _interrupted(_interrupted_outside_training(args, saved), received)
        except RUN_ERRORS as exc:
            _stderr(f"topgrad-train: error: {exc}")
            return EXIT_FAILURE
        except MemoryError:  # numpy's failed allocation: one line, as for every other failure
            left = "nothing was saved" if saved.start is None else what_was_saved(args, saved)
            _stderr("topgrad-train: error: out of memory; a smaller --batch-size (or --limit) needs less, "
                    f"and --batch-size 1 the least; {left}")
            return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
