"""Downloading one file from a list of mirrors, checked against a published checksum.

A destination folder that cannot be made (a file where a folder should be) is a
`FolderNotWritableError` before any mirror is contacted; `check_destination` finds a read-only
one too (`data.download` calls it once, before its first file). The file is streamed into a
temporary file next to its destination, hashed on the way, and moved into place with
`os.replace` only when the checksum matches: an interrupted or corrupt download never leaves a
file under the destination's name. The temporary file is removed when the download fails or is
interrupted (Ctrl-C), and so are the folders it made for the destination, while they are empty.
With `progress`, the bytes received are shown on stderr (see `progress.DownloadProgress`).
"""

from __future__ import annotations

import contextlib
import hashlib
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO

from topgrad_examples.files import check_folder, replacing
from topgrad_examples.progress import DownloadProgress

CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror gave a file with the expected checksum; the message lists each attempt, and
    `served_other_file` says whether every mirror answered with a file whose checksum differs, and
    `refused` whether every one answered with an HTTP error (404): either way being online is not
    what is missing (a mirror that timed out, or cut the file short, might answer on a retry)."""

    def __init__(self, message: str, failures: Sequence[str] = (), served_other_file: bool = False,
                 refused: bool = False) -> None:
        super().__init__(message)
        self.failures = list(failures) or [message]
        self.served_other_file, self.refused = served_other_file, refused


class RefusedError(DownloadError):
    """A mirror answered with an HTTP error status (404, 403): it is reachable, but gives no file."""


class ChecksumMismatchError(DownloadError):
    """A mirror served the whole file, but its checksum is not the published one."""


class FolderNotWritableError(DownloadError):
    """The folder a download is to be kept in cannot be made or written (a read-only cache, a
    file where a folder should be): found before any mirror is contacted, since being online would
    not help. `folder` is that folder, `reason` the system's word for why, and `blocker` the file
    on its path that stands where a folder should be (None where there is none)."""

    def __init__(self, folder: Path, error: OSError) -> None:
        self.folder, self.reason = folder, error.strerror or str(error)
        self.blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = self.reason if self.blocker is None else f"{self.blocker} is a file, not a folder"
        super().__init__(f"{folder}: cannot keep a download there ({why})")


def check_destination(folder: Path, name: str) -> None:
    """FolderNotWritableError where a file `name` could not be downloaded into `folder` (the
    folders made for the test are removed again)."""
    try:
        check_folder(folder, name)
    except OSError as exc:
        raise FolderNotWritableError(folder, exc) from None


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split "sha256:HEX" (or "md5:HEX") into the algorithm and the lower-case digest."""
    algorithm, sep, digest = checksum.partition(":")
    if not sep or algorithm not in hashlib.algorithms_guaranteed:
        raise ValueError(f"checksum must read 'ALGORITHM:HEX' (e.g. sha256:...), got {checksum!r}")
    return algorithm, digest.lower()


def fetch(url: str, dest: Path, checksum: str, timeout: float = 30.0, progress: bool = False) -> Path:
    """Download `url` to `dest` atomically; raise `DownloadError` if it is cut short or its hash differs."""
    algorithm, expected = parse_checksum(checksum)
    digest = hashlib.new(algorithm)
    stream = _GzipStream() if dest.name.endswith(".gz") else None

    def take(chunk: bytes) -> None:
        digest.update(chunk)
        if stream is not None:
            stream.feed(chunk)

    try:  # `replacing` moves the file into place only if the block, checksum included, succeeds;
        # the progress line ends after that move, so a failed one shows as "not kept"
        with _made_folders(dest.parent), urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = None if length is None else int(length)
            with (DownloadProgress(dest.name, total, enabled=progress) as shown,
                  replacing(dest, suffix=".part") as out):
                _copy(response, out, take, shown)
                if total is not None and shown.done != total:
                    raise DownloadError(f"{url}: connection closed after {shown.done} of {total} bytes")
                got = digest.hexdigest()
                if got != expected and stream is not None and stream.cut_short:
                    raise DownloadError(f"{url}: the connection closed after {shown.done} bytes, before "
                                        "the end of the gzip stream (the server sent no length)")
                if got != expected:
                    raise ChecksumMismatchError(
                        f"{url}: {algorithm} mismatch, the mirror served a different file (got "
                        f"{got[:12]}..., expected {expected[:12]}...)")
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:  # an answer, not a network failure
        raise RefusedError(f"{url}: {type(exc).__name__}: {exc}") from exc
    except (OSError, HTTPException, ValueError) as exc:  # URLError, timeouts, IncompleteRead, ...
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
    return dest


class _GzipStream:
    """Whether a gzip body, fed chunk by chunk, reached the end of its stream: one cut short
    without a Content-Length (HTTP/1.0) hashes wrong as another file would, but a retry may fix it."""

    def __init__(self) -> None:
        self._inflate, self._broken = zlib.decompressobj(wbits=31), False

    def feed(self, chunk: bytes) -> None:
        """Inflate the next chunk of the body (the output is not kept: only where the stream ends)."""
        if not (self._broken or self._inflate.eof):
            try:
                self._inflate.decompress(chunk)
            except zlib.error:  # not gzip at all (an HTML page): another file, not a short one
                self._broken = True

    @property
    def cut_short(self) -> bool:
        """A gzip stream, so far, that has not reached its end."""
        return not self._broken and not self._inflate.eof


def _copy(response: BinaryIO, out: BinaryIO, hash_update: Callable[[bytes], None],
          shown: DownloadProgress) -> None:
    """Stream the body into `out`, hashing and showing it on the way (`shown.done` counts the bytes)."""
    while chunk := response.read(CHUNK):
        out.write(chunk)
        hash_update(chunk)
        shown.update(len(chunk))


def fetch_from_mirrors(
    mirrors: Sequence[str], filename: str, dest: Path, checksum: str, timeout: float = 30.0,
    log: Callable[[str], None] | None = None, progress: bool = False,
) -> Path:
    """Try `mirror + filename` for each mirror in turn; the first download whose checksum matches
    wins. FolderNotWritableError, before any mirror is tried, where `dest`'s folder cannot be made
    (`check_destination` beforehand finds a read-only one too)."""
    failures, mismatches, refusals = [], 0, 0
    with _made_folders(dest.parent):  # kept only if one mirror succeeds
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename
            if log is not None:
                log(f"downloading {url}")
            try:
                return fetch(url, dest, checksum, timeout=timeout, progress=progress)
            except DownloadError as exc:
                failures.append(str(exc))
                mismatches += isinstance(exc, ChecksumMismatchError)
                refusals += isinstance(exc, RefusedError)
        tried = "; ".join(failures) if failures else "no mirrors given"
        raise DownloadError(f"could not download {filename}: {tried}", failures,
                            served_other_file=bool(failures) and mismatches == len(failures),
                            refused=bool(failures) and refusals == len(failures))


@contextlib.contextmanager
def _made_folders(folder: Path) -> Iterator[None]:
    """Make `folder` and its missing parents; if the block fails (Ctrl-C included), remove the ones
    made here, deepest first, while they stay empty: an offline or interrupted first run left an
    empty ~/.cache/topgrad/mnist behind. Folders that were there before are never removed."""
    created = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a DownloadError like every other failure: no traceback
            raise FolderNotWritableError(folder, exc) from None
        yield
    except BaseException:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # not empty (another file, or a file someone else wrote meanwhile)
                break
        raise
