"""Checkpoints: model tensors, optimizer state, epoch and run settings in one .npz, no pickle.

Keys: `meta/*` (format, model, optimizer class, epoch), `config/*` (the run's settings),
`history` (one row per epoch: train loss, test accuracy, seconds), `model/<name>` (every
parameter and buffer) and `optim/<i>/<key>` (the optimizer state of parameter i). The file
is written to a temporary name and moved into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import topgrad
from topgrad import Tensor

from topgrad_examples.data import DATASETS
from topgrad_examples.files import Identity, check_folder, identity, replacing
from topgrad_examples.models import Module

FORMAT_NAME = "topgrad-examples-checkpoint"
FORMAT_VERSION = "1"
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model or optimizer given."""


class OtherFormatError(CheckpointError):
    """A topgrad-examples checkpoint of another format version (`version`): another release of
    this package wrote it, and only that one reads it."""

    def __init__(self, path: str | os.PathLike[str], version: str) -> None:
        super().__init__(f"{path}: a topgrad-examples checkpoint of format {version}; this version reads "
                         f"format {FORMAT_VERSION}: use the topgrad-examples version that wrote it")
        self.version = version


def _to_numpy(array: Any) -> np.ndarray:
    return np.asarray(topgrad.get_backend().to_numpy(array))


def save(
    path: str | os.PathLike[str], model_name: str, model: Module, optimizer: topgrad.optim.Optimizer,
    epoch: int, config: dict[str, str | int | float], history: np.ndarray,
) -> Identity | None:
    """Write a checkpoint atomically (temporary file in the same folder, then os.replace); return
    the identity of the file written, taken before the rename (after it, another process's file
    could be there already)."""
    path = Path(path)
    arrays: dict[str, Any] = {  # Any, not ndarray: for np.savez, **arrays could hold its allow_pickle flag
        "meta/format": np.array(FORMAT),
        "meta/model": np.array(model_name),
        "meta/optimizer": np.array(type(optimizer).__name__),
        "meta/epoch": np.array(epoch, dtype=np.int64),
        "history": np.asarray(history, dtype=np.float64).reshape(-1, 3),
    }
    arrays.update({f"config/{k}": np.array(v) for k, v in config.items()})
    arrays.update({f"model/{name}": _to_numpy(t.data) for name, t in model.state().items()})
    for i, state in enumerate(optimizer.state):
        for key, value in state.items():
            arrays[f"optim/{i}/{key}"] = (
                np.array(value, dtype=np.int64) if isinstance(value, int) else _to_numpy(value))
    if path.is_symlink():  # write through the link, to its target (latest.npz -> run1.npz), as editors do
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as f:
        np.savez(f, **arrays)
        f.flush()  # the rename keeps inode, modification time and size: they are the file's at `path`
        written = identity(f.fileno())
    return written


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail before training, not after its first epoch, where `save` could not write `path`.
    Folders made for the test are removed again: a run that fails later leaves nothing behind."""
    if Path(path).is_dir():
        raise CheckpointError(
            f"{path}: is a folder; give the checkpoint a file name, e.g. {Path(path) / 'run.npz'}")
    if os.path.lexists(path) and not os.path.islink(path) and not os.path.isfile(path):
        # a device (/dev/null), a FIFO or a socket: the save's rename would replace it with a file
        raise CheckpointError(f"{path}: is not a regular file (a device, a pipe or a socket), and saving "
                              "would replace it; give --save the path of a file")
    folder = Path(path).parent
    missing = [p for p in (folder, *folder.parents) if not p.is_dir()]  # innermost first
    blocker = next((p for p in missing if p.exists()), None)
    if blocker is not None:
        raise CheckpointError(f"{path}: cannot write a checkpoint there ({blocker} is a file, not a folder)")
    try:  # the folders made for the test are removed again: `save` makes them when it writes
        check_folder(folder, Path(path).name)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write a checkpoint there ({exc.strerror or exc})") from None


def check_not_taken(path: str | os.PathLike[str], resume: str | os.PathLike[str] | None) -> None:
    """Refuse a --save path where a file is already, unless it is the --resume checkpoint (the same
    file, however spelled): the first epoch's save would replace another run's work without a word."""
    if not os.path.isfile(path) or (resume is not None and os.path.isfile(resume)
                                    and os.path.samefile(path, resume)):
        return
    try:
        arrays = read(path)
    except OtherFormatError as exc:
        raise CheckpointError(
            f"--save {path}: the file is a topgrad-train checkpoint of format {exc.version}; this version "
            f"reads format {FORMAT_VERSION}: to continue that run use the topgrad-examples version that "
            f"wrote it; to start a new run give --save another path, or delete {path}") from None
    except CheckpointError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not os.access(path, os.R_OK):  # it may be a checkpoint: unknown
            raise CheckpointError(f"--save {path}: a file is there that cannot be read "
                                  f"({cause.strerror or cause}), so it may be another run's checkpoint; give "
                                  "--save another path, or delete the file") from None
        raise CheckpointError(f"--save {path}: the file exists and is not a topgrad-train checkpoint; give "
                              "--save another path, or delete the file") from None
    dataset = arrays.get("config/dataset")
    on = f" on {dataset.item()}" if dataset is not None else ""
    raise CheckpointError(
        f"--save {path}: the file holds epoch {int(arrays['meta/epoch'])} of a {arrays['meta/model'].item()} "
        f"run{on}; to continue that run add --resume {path} (keeping --save {path}); to start a new run "
        f"give --save another path, or delete {path}")


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of a checkpoint file, after checking that it is one."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file: one array, not a checkpoint
            raise CheckpointError(f"{path}: a single numpy array, not a .npz checkpoint written by "
                                  "topgrad-train --save")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except ValueError as exc:  # numpy's message advises allow_pickle: wrong for a file not ours
        raise CheckpointError(f"{path}: not a readable .npz checkpoint (not one written by "
                              "topgrad-train --save; Python objects in a file are never loaded)") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        detail = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."  # zipfile quotes raw bytes
        raise CheckpointError(
            f"{path}: not a readable .npz checkpoint ({type(exc).__name__}: {detail})") from exc
    _check_format(path, arrays.get("meta/format"))
    missing = [k for k in ("meta/model", "meta/optimizer", "meta/epoch", "history") if k not in arrays]
    epoch = arrays.get("meta/epoch", np.array(-1))
    if missing or epoch.ndim or epoch.dtype.kind not in "iu" or int(epoch) < 0:
        raise CheckpointError(f"{path}: a damaged checkpoint ({', '.join(missing) or 'meta/epoch'} "
                              "missing or invalid)")
    history = arrays["history"]
    if history.ndim != 2 or history.shape[1] != 3 or not np.issubdtype(history.dtype, np.floating):
        raise CheckpointError(f"{path}: a damaged checkpoint (history of shape {history.shape}, "
                              "expected (epochs, 3) floats)")
    for key, value in arrays.items():
        if key.startswith("config/") and not _valid_setting(key[len("config/"):], value):
            raise CheckpointError(f"{path}: a damaged checkpoint ({key} = {value!r} is not a valid setting)")
    return arrays


def _check_format(path: str | os.PathLike[str], stored: np.ndarray | None) -> None:
    """This version's format, else OtherFormatError for another version's (`NAME/VERSION`: said
    so, not "not a checkpoint") and CheckpointError for anything else."""
    text = str(stored) if stored is not None and stored.ndim == 0 and stored.dtype.kind == "U" else ""
    if text == FORMAT:
        return
    name, sep, version = text.partition("/")
    if name == FORMAT_NAME and sep and version:
        raise OtherFormatError(path, version if len(version) <= 20 else version[:20] + "...")
    raise CheckpointError(f"{path}: not a topgrad-examples checkpoint (no meta/format {FORMAT!r})")


CONFIG_KINDS = {"dataset": "U", "data_source": "U", "seed": "iu", "batch_size": "iu", "epochs": "iu",
                "train_images": "iu", "test_images": "iu", "limit": "iu", "lr": "fiu"}
"""The numpy dtype kinds of the run settings `save` stores (others are kept, unchecked)."""

_LEAST = {"batch_size": 1, "limit": 1}  # every other count may be 0


def _valid_setting(name: str, value: np.ndarray) -> bool:
    """A stored setting of the kind and range topgrad-train gives it (a 0-d array)."""
    if name not in CONFIG_KINDS:
        return True
    if value.ndim != 0 or value.dtype.kind not in CONFIG_KINDS[name]:
        return False
    if name == "lr":
        return bool(0 < float(value) < math.inf)
    if name == "dataset":  # resuming reads this dataset: one topgrad-train knows
        return str(value) in DATASETS
    return value.dtype.kind == "U" or int(value) >= _LEAST.get(name, 0)


def config_of(arrays: dict[str, np.ndarray]) -> dict[str, str | int | float]:
    """The run settings stored in a checkpoint, as Python scalars."""
    return {k.split("/", 1)[1]: v.item() for k, v in arrays.items() if k.startswith("config/")}


def check_model(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], model_name: str) -> None:
    """CheckpointError, with the command that resumes the file, where it holds another model
    (topgrad-train checks it before reading any data)."""
    saved_model = str(arrays["meta/model"])
    if saved_model != model_name:
        raise CheckpointError(f"{path}: saved for model {saved_model!r}, cannot resume {model_name!r}; "
                              f"to go on with it: topgrad-train {saved_model} --resume {path}")


def load(
    path: str | os.PathLike[str], model_name: str, model: Module,
    optimizer: topgrad.optim.Optimizer | None, arrays: dict[str, np.ndarray] | None = None,
) -> tuple[int, dict[str, str | int | float], np.ndarray]:
    """Restore model and optimizer in place; return (epoch, config, history). `optimizer` None:
    the model's weights and BatchNorm statistics only, to predict with. `arrays`: the file's
    contents when the caller has `read` them already."""
    arrays = read(path) if arrays is None else arrays
    check_model(path, arrays, model_name)
    saved_opt = str(arrays["meta/optimizer"])
    if optimizer is not None and saved_opt != type(optimizer).__name__:
        raise CheckpointError(
            f"{path}: saved with optimizer {saved_opt}, this run uses {type(optimizer).__name__}")
    state = model.state()
    saved = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("model/")}
    missing, unexpected = sorted(state.keys() - saved.keys()), sorted(saved.keys() - state.keys())
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match model {model_name!r}: missing {missing or 'none'}, "
                              f"unexpected {unexpected or 'none'}")
    for name, t in state.items():
        if tuple(saved[name].shape) != t.shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(saved[name].shape)} in the checkpoint, "
                                  f"{t.shape} in the model")
    try:  # every array made before anything changes, in its tensor's dtype (float64 stays float64)
        values = {name: Tensor(saved[name], dtype=t.dtype).data for name, t in state.items()}
    except TypeError as exc:  # text or objects where a weight belongs
        raise CheckpointError(f"{path}: a damaged checkpoint (a model array: {exc})") from None
    try:  # checks everything before it changes anything
        if optimizer is not None:
            optimizer.load_state_dict(_optimizer_state(path, arrays, optimizer))
    except ValueError as exc:
        why = str(exc).removeprefix(f"{type(optimizer).__name__}.load_state_dict: ")
        raise CheckpointError(f"{path}: a damaged checkpoint (its optimizer state: {why})") from None
    for name, t in state.items():  # nothing fails after the checks above
        t.data = values[name]
    return int(arrays["meta/epoch"]), config_of(arrays), arrays["history"]


def _optimizer_state(path: Any, arrays: dict[str, np.ndarray], optimizer: Any) -> dict[str, Any]:
    """The file's `optim/INDEX/NAME` arrays as the optimizer's `state_dict()` with this run's
    settings, for `load_state_dict` to check (step counts, shapes, dtypes, the keys it keeps)."""
    states: dict[int, dict[str, Any]] = {}
    for key, value in arrays.items():
        if not key.startswith("optim/"):
            continue
        parts = key.split("/", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise CheckpointError(f"{path}: a damaged checkpoint ({key} is not optim/INDEX/NAME)")
        count = value.ndim == 0 and value.dtype.kind in "iu"
        if value.dtype.kind == "f" and not np.isfinite(value).all():  # no save keeps a diverged state
            raise CheckpointError(f"{path}: a damaged checkpoint ({key} holds NaN or Inf)")
        states.setdefault(int(parts[1]), {})[parts[2]] = int(value) if count else value
    covered = 1 + max(states, default=-1)
    if covered > len(optimizer.params):
        raise CheckpointError(f"{path}: the checkpoint's optimizer state covers {covered} parameters, "
                              f"the model has {len(optimizer.params)}")
    return {"optimizer": type(optimizer).__name__,
            "settings": {name: getattr(optimizer, name) for name in optimizer.settings},
            "shapes": [tuple(p.shape) for p in optimizer.params], "state": states}
