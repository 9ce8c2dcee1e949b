"""Finding, downloading and loading MNIST and Fashion-MNIST.

`load_dataset(name)` looks, in order, in `data_dir` (given explicitly: it must hold the
files), `$TOPGRAD_DATA`, Debian's `/usr/share/datasets/<name>`, the user cache
(`$XDG_CACHE_HOME/topgrad/<name>`, by default `~/.cache/topgrad/<name>`), then downloads
into the cache from the dataset's mirrors, checking each file's published checksum and
showing its progress on stderr (an interrupted download leaves no partial file or new empty folder;
a cache that cannot be written is said before any mirror is contacted). A folder searched (not
`data_dir`) that holds the other dataset's files gets a note, and the search goes on.
If MNIST can be neither found nor fetched, it falls back to the small real subset
bundled with this package, and says so in one line.

A directory "holds" a dataset when it, or its subfolder `<name>`, has the four IDX files
(`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`), each gzipped or not, with `-idx` or `.idx` in the name. Where a
folder has more than one copy of a file, one is read, always the same: the first of
`X-idxN-ubyte`, `X-idxN-ubyte.gz`, `X.idxN-ubyte`, `X.idxN-ubyte.gz` (uncompressed first: it
reads faster). If that one is broken, the error names the other copies, which were not read.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from topgrad_examples import idx
from topgrad_examples.download import (
    DownloadError,
    FolderNotWritableError,
    check_destination,
    fetch_from_mirrors,
)

PARTS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
DEBIAN_DIR = Path("/usr/share/datasets")
DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}
"""The Debian packages that install a dataset under DEBIAN_DIR (Debian has none for MNIST)."""


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places looked at and could not be downloaded."""


class OtherDatasetError(DatasetNotFoundError):
    """A folder holds the other dataset's files (`other`, not `name`): an error for a folder named
    by --data-dir, a note for one searched (another place may hold the right dataset)."""

    def __init__(self, message: str, source: str, name: str, other: str) -> None:
        super().__init__(message)
        self.source, self.name, self.other = source, name, other


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and how to check and normalize it."""

    name: str
    mirrors: tuple[str, ...]
    checksums: dict[str, str]  # "<part>-idxN-ubyte.gz" -> "algorithm:hex" of the published file
    mean: float
    std: float
    first_train_labels: tuple[int, ...]  # of the published files: tells the two datasets apart
    first_test_labels: tuple[int, ...]  # ... and a folder mixing them, or one split for the other
    classes: tuple[str, ...] = field(default=tuple(str(d) for d in range(10)))


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        checksums={  # SHA-256 of the canonical files (shared/data/mnist/SOURCE.txt)
            "train-images-idx3-ubyte.gz":
                "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        mean=0.1307,
        std=0.3081,
        first_train_labels=(5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5),
        first_test_labels=(7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        checksums={  # the MD5s published in the upstream README (zalandoresearch/fashion-mnist)
            "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        mean=0.2860,
        std=0.3530,
        first_train_labels=(9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9),
        first_test_labels=(9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"),
    ),
}


@dataclass
class Dataset:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of both splits, and where they came from."""

    name: str
    source: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"source={self.source!r})")


# ---- files on disk ---------------------------------------------------------------
def file_names(part: str) -> list[str]:
    """The spellings accepted for one part, e.g. train-images-idx3-ubyte[.gz], train-images.idx3-ubyte,
    in the order they are looked for: the first one a folder has is read."""
    kind = "idx3" if part.endswith("images") else "idx1"
    stems = [f"{part}-{kind}-ubyte", f"{part}.{kind}-ubyte"]
    return [s + ext for s in stems for ext in ("", ".gz")]


class FolderUnreadableError(DatasetNotFoundError):
    """A folder that may hold a dataset cannot be looked into (no permission to read it)."""


def copies(folder: Path, part: str) -> list[Path]:
    """The spellings of `part` that `folder` holds, in `file_names` order (the first is the one read);
    FolderUnreadableError where `folder` cannot be looked into (Path.is_file raises there)."""
    try:
        return [folder / n for n in file_names(part) if (folder / n).is_file()]
    except PermissionError as exc:
        blocked = _unsearchable(folder)
        raise FolderUnreadableError(f"{blocked}: cannot read it ({exc.strerror}); give the user running "
                                    "topgrad-train read access, or point at another folder") from None


def _unsearchable(folder: Path) -> Path:
    """The folder on `folder`'s path that cannot be looked into: `folder`, or the parent that hides
    it (a subfolder probed inside an unreadable --data-dir does not exist to be given access)."""
    for path in (folder, *folder.parents):
        try:
            if path.is_dir():
                return path if not os.access(path, os.R_OK | os.X_OK) else folder
        except PermissionError:  # its parent cannot be searched: look there
            continue
    return folder


def _what_is_there(folder: Path, part: str) -> str:
    """For a part found missing: what stands at its names instead, where something does (a folder
    named like the file, a broken or looping symlink), since `ls` shows those names; else ""."""
    for n in file_names(part):
        path = folder / n
        if os.path.lexists(path):
            what = _broken_link(path) or ("a folder" if path.is_dir() else "no regular file")
            return f"{path} is {what}, not the file"
    return ""


def _broken_link(path: Path) -> str:
    """What a symlink that leads nowhere is ("a symlink loop", "a symlink to X, which does not
    exist"); "" for anything else."""
    if not path.is_symlink():
        return ""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11's word for a loop
        return "a symlink loop"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symlink loop"
        return f"a symlink to {os.readlink(path)}, which does not exist"
    return ""


def find_files(directory: str | os.PathLike[str], name: str | None = None) -> dict[str, Path] | None:
    """The four IDX files in `directory/name` or `directory`, or None if either lacks one."""
    root = Path(directory).expanduser()
    for folder in ([root / name] if name else []) + [root]:
        found = {}
        for part in PARTS:
            present = copies(folder, part)
            if present:
                found[part] = present[0]
        if len(found) == len(PARTS):
            return found
    return None


def _missing_parts(root: Path, name: str) -> list[str]:
    """The parts that neither `root/name` nor `root` has (the folder nearest complete decides)."""
    folders = [root / name, root]
    gaps = [[p for p in PARTS if not copies(f, p)] for f in folders]
    return min(gaps, key=len)


def load_files(files: dict[str, Path], name: str, source: str) -> Dataset:
    """Read and check the four IDX files: valid headers, sizes and matching image/label counts."""
    arrays = {}
    for part, path in files.items():
        try:
            arrays[part] = idx.read_images(path) if part.endswith("images") else idx.read_labels(path)
        except idx.IDXError as exc:
            others = [str(p) for p in copies(path.parent, part) if p.name != path.name]
            if not others:
                raise
            raise idx.IDXError(
                f"{exc}; {' and '.join(others)} {'is' if len(others) == 1 else 'are'} there too, but "
                f"{path.name} is read first (uncompressed before gzipped, -idx before .idx): remove or "
                "replace the broken one"
            ) from exc
    for split in ("train", "t10k"):
        n_images, n_labels = len(arrays[f"{split}-images"]), len(arrays[f"{split}-labels"])
        if n_images != n_labels:
            raise idx.IDXError(
                f"{files[f'{split}-labels']}: {n_labels} labels for the {n_images} images of "
                f"{files[f'{split}-images']}; the counts must match"
            )
        if n_images == 0:
            raise idx.IDXError(f"{files[f'{split}-images']}: no images (a dataset needs at least one "
                               f"{'training' if split == 'train' else 'test'} image)")
    _check_identity(name, arrays, files, source)
    return Dataset(name, source, arrays["train-images"], arrays["train-labels"],
                   arrays["t10k-images"], arrays["t10k-labels"])


def _check_identity(name: str, arrays: dict[str, np.ndarray], files: dict[str, Path], source: str) -> None:
    """Refuse the other dataset's files (MNIST and Fashion-MNIST share names and formats, so a
    folder of loose files would otherwise be taken for either), told apart by the first labels of
    each split: a whole folder of the other's, a folder mixing the two (its test accuracy would
    mean nothing), or the training and test files swapped."""
    train, test = (tuple(int(v) for v in arrays[part][:12]) for part in ("train-labels", "t10k-labels"))
    for other, info in DATASETS.items():
        if other != name and train == info.first_train_labels:
            raise OtherDatasetError(
                f"{source}: these IDX files are {other}, not {name} (their training labels begin as "
                f"{other}'s do); point --data-dir or $TOPGRAD_DATA at a {name} folder, or use "
                f"--dataset {other}", source, name, other
            )
        if other != name and test == info.first_test_labels:
            raise OtherDatasetError(
                f"{files['t10k-labels']}: these test labels are {other}'s, not {name}'s (they begin as "
                f"{other}'s do), beside {name} training files: the folder mixes the two datasets; "
                f"put {name}'s four files together", source, name, other
            )
    own = DATASETS[name]
    if train == own.first_test_labels or test == own.first_train_labels:
        raise idx.IDXError(f"{source}: the training and test files of {name} are swapped "
                           f"({files['train-labels']} begins as its test labels do, or the t10k files as "
                           "its training ones); "
                           "train-* files hold the 60,000 training images, t10k-* the 10,000 test images")


def load_dir(directory: str | os.PathLike[str], name: str = "mnist") -> Dataset:
    """Load a dataset from a directory that must hold it (see the module docstring)."""
    files = find_files(directory, name)
    if files is None:
        folder = Path(directory).expanduser()
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{directory}: {_why_not_there(directory, name)} (--data-dir names "
                                       "a folder with the four IDX files)")
        expected = ", ".join(file_names(p)[1] for p in PARTS)
        raise DatasetNotFoundError(f"{directory}: {_why_not_there(directory, name)}; expected the four IDX "
                                   f"files {expected} (gzipped or not)")
    return load_files(files, name, str(files["train-images"].parent.resolve()))  # absolute: --resume finds it


def _why_not_there(directory: str | os.PathLike[str], name: str) -> str:
    """Why a folder that was to hold a dataset does not: no such folder, or which files it lacks."""
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        return "not a folder" if folder.exists() else _broken_link(folder) or "no such folder"
    parts = _missing_parts(folder, name)
    missing = ", ".join(file_names(p)[1] for p in parts)
    found = "; ".join(filter(None, (_what_is_there(f, p) for p in parts for f in (folder / name, folder))))
    return (f"no complete {name} dataset there (nor in {Path(directory) / name}): {missing} missing"
            + (f" ({found})" if found else ""))


# ---- where to look ----------------------------------------------------------------
def cache_dir(name: str) -> Path:
    """The user cache directory for a dataset: $XDG_CACHE_HOME/topgrad/<name> or ~/.cache/topgrad/<name>.
    A relative $XDG_CACHE_HOME is ignored, as the XDG spec says: it would name another folder
    from each working directory (and a checkpoint would record a path --resume cannot find)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "topgrad" / name


def search_dirs(name: str) -> list[Path]:
    """Where an installed dataset is looked for, in order (without an explicit data_dir)."""
    dirs = []
    if os.environ.get("TOPGRAD_DATA"):
        dirs.append(Path(os.environ["TOPGRAD_DATA"]))
    dirs += [DEBIAN_DIR / name, cache_dir(name)]
    return dirs


def download(
    name: str, dest: Path | None = None, mirrors: Sequence[str] | None = None, timeout: float = 30.0,
    log: Callable[[str], None] | None = None, progress: bool = False,
) -> dict[str, Path]:
    """Fetch the four files of a dataset into `dest` (default: its cache directory), checksums checked;
    with `progress`, each file's bytes received are shown on stderr as they arrive."""
    info = DATASETS[name]
    dest = dest if dest is not None else cache_dir(name)
    mirrors = info.mirrors if mirrors is None else mirrors
    files = {part: dest / file_names(part)[1] for part in PARTS}
    missing = [path for path in files.values() if not path.is_file()]
    if missing:  # a read-only cache: said now, not after every mirror was contacted
        check_destination(dest, missing[0].name)
    if missing and log is not None:  # a network that drops packets makes each mirror wait in silence
        log(f"{name}: not installed; downloading it into {dest} (each mirror may take up to {timeout:g} s "
            "to answer; --no-download skips the download)")
    for path in missing:
        fetch_from_mirrors(mirrors, path.name, path, info.checksums[path.name], timeout=timeout, log=log,
                           progress=progress)
    return files


BUNDLED = "bundled MNIST subset"
"""The `Dataset.source` of the bundled subset (checkpoints record it as their data's source)."""


def bundled_subset() -> Dataset:
    """The small real MNIST subset shipped with this package (see topgrad-examples/scripts/make_subset.py)."""
    with resources.as_file(resources.files("topgrad_examples") / "subset") as folder:
        files = find_files(folder)
        if files is None:
            raise DatasetNotFoundError(f"the bundled MNIST subset is missing from {folder}")
        return load_files(files, "mnist", BUNDLED)


NO_RETRY = ("running again would not help while a mirror serves a file other than the published one: a "
            "proxy, or a changed upstream file, may be why")
"""After a checksum mismatch: being online is not what is missing (said instead of "run once online")."""

REFUSED = ("the mirrors are reachable but refused the file (HTTP errors above): running again would not "
           "help while they do; a proxy, or a moved upstream file, may be why")
"""After every mirror answered with an HTTP error: being online is not what is missing either."""


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    download_ok: bool = True,
    subset_ok: bool = True,
    timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> Dataset:
    """Find (or download) a dataset; see the module docstring for the order of places. Without
    `subset_ok` (resuming a run that trained on the full set) MNIST does not fall back to the
    bundled subset: not finding the set is an error, as it is for Fashion-MNIST. A download shows
    its progress on stderr unless `progress` is False."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    log = log if log is not None else _stderr
    if data_dir is not None:
        return load_dir(data_dir, name)
    chosen = os.environ.get("TOPGRAD_DATA")
    for directory in search_dirs(name):
        try:
            files = find_files(directory, name)
        except FolderUnreadableError as exc:  # searched, not named: say so and look further
            log(f"{name}: {exc}; looking in the other places")
            continue
        if files is not None:  # the source as an absolute path: --resume from elsewhere finds it
            try:
                return _load_found(files, name, str(files["train-images"].parent.resolve()))
            except OtherDatasetError as exc:  # searched, not named: the right set may be further on
                log(f"{name}: {exc.source} holds {exc.other}, not {name}; looking in the other places")
                continue
        if chosen and directory == Path(chosen):  # set on purpose, so a wrong one is said at once
            log(f"{name}: $TOPGRAD_DATA={chosen}: {_why_not_there(chosen, name)}; looking in the other "
                "places")
    looked = ", ".join(str(d) for d in search_dirs(name))
    problem, other_file, unwritable = "downloading is turned off", "", ""  # other_file: why not online
    online = "run once online" if download_ok else "run without --no-download, online,"
    if download_ok:
        try:
            files = download(name, mirrors=mirrors, timeout=timeout, log=log, progress=progress)
            return _load_found(files, name, str(files["train-images"].parent.resolve()))
        except OtherDatasetError as exc:  # all four files there, of the other set: nothing to fetch
            problem = f"its download folder {exc.source} holds {exc.other}"
            unwritable = f"move the {exc.other} files out of {exc.source} and run again to download them"
        except FolderNotWritableError as exc:  # being online is not what is missing
            if exc.blocker is not None:  # no folder can be made below a file: naming it says why
                problem = f"its download folder {exc.folder} cannot be made ({exc.blocker} is a file)"
                fix = f"or move the file {exc.blocker} out of the way"
            else:
                problem = f"its download folder {exc.folder} cannot be written ({exc.reason})"
                fix = f"or make {exc.folder} writable"
            unwritable = (f"set $XDG_CACHE_HOME to a folder you can write ({fix}) and run "
                          "again to download them")
        except DownloadError as exc:
            problem = f"the download failed ({'; '.join(exc.failures)})"
            other_file = NO_RETRY if exc.served_other_file else REFUSED if exc.refused else ""
    folder = "pass --data-dir DIR or set $TOPGRAD_DATA to a folder with the four IDX files"
    if name == "mnist" and subset_ok:
        subset = bundled_subset()
        how = (f"{folder} ({other_file})" if other_file else f"{folder}, or {unwritable}" if unwritable else
               f"{folder}, or {online} to download them into {cache_dir(name)}"
               f"{' (--no-download skips the download attempt)' if download_ok else ''}")
        log(f"mnist: not found in {looked} and {problem}; using the bundled subset "
            f"({len(subset.train_labels):,} training, {len(subset.test_labels):,} test images). For the "
            f"full set {how}.")
        return subset
    debian = f"install Debian's {DEBIAN_PACKAGES[name]} package" if name in DEBIAN_PACKAGES else ""
    if other_file:
        how = f"{folder} or {debian} ({other_file})" if debian else f"{folder} ({other_file})"
    else:
        how = f"{folder}, {debian + ', ' if debian else ''}or {unwritable or online.rstrip(',')}"
    raise DatasetNotFoundError(f"{name}: not found in {looked} and {problem}. {how[0].upper()}{how[1:]}.")


def _load_found(files: dict[str, Path], name: str, source: str) -> Dataset:
    """`load_files`, where a broken file in the download cache says how to get it again: deleting
    it makes the next run download it (a file in the cache is never downloaded again)."""
    try:
        return load_files(files, name, source)
    except idx.IDXError as exc:
        folder = files["train-images"].parent
        if folder != cache_dir(name):
            raise
        broken = next((p.name for p in files.values() if str(exc).startswith(f"{p}: ")), "the broken file")
        raise idx.IDXError(f"{exc}; {folder} is Topgrad's download cache: delete {broken} there and the next "
                           "run downloads it again") from exc


def normalize(images: np.ndarray, name: str = "mnist") -> np.ndarray:
    """uint8 (N, 28, 28) images as float32 NHWC (N, 28, 28, 1), standardized with the dataset's statistics."""
    info = DATASETS[name]
    x = images.astype(np.float32)[..., None] / np.float32(255.0)
    return (x - np.float32(info.mean)) / np.float32(info.std)


def _stderr(message: str) -> None:
    """A note on stderr; none where stderr is closed (`2>&-`: print would write it to stdout)."""
    if sys.stderr is not None:
        print(message, file=sys.stderr)
