"""Downloading one file from a list of mirrors, checked against a published checksum.

The file is streamed into a temporary file next to its destination, hashed on the
way, and moved into place with `os.replace` only when the checksum matches: an
interrupted or corrupt download never leaves a file under the destination's name.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.client import HTTPException
from pathlib import Path

from topgrad_examples.files import replacing

CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror gave a file with the expected checksum; the message lists each attempt, and
    `served_other_file` says whether every mirror answered with a file whose checksum differs (so
    being online is not what is missing; a mirror that timed out might answer on a retry)."""

    def __init__(self, message: str, failures: Sequence[str] = (), served_other_file: bool = False) -> None:
        super().__init__(message)
        self.failures = list(failures) or [message]
        self.served_other_file = served_other_file


class ChecksumMismatchError(DownloadError):
    """A mirror served the whole file, but its checksum is not the published one."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split "sha256:HEX" (or "md5:HEX") into the algorithm and the lower-case digest."""
    algorithm, sep, digest = checksum.partition(":")
    if not sep or algorithm not in hashlib.algorithms_guaranteed:
        raise ValueError(f"checksum must read 'ALGORITHM:HEX' (e.g. sha256:...), got {checksum!r}")
    return algorithm, digest.lower()


def fetch(url: str, dest: Path, checksum: str, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` atomically; raise `DownloadError` if it is cut short or its hash differs."""
    algorithm, expected = parse_checksum(checksum)
    digest = hashlib.new(algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:  # `replacing` moves the file into place only if the block, checksum included, succeeds
        with replacing(dest, suffix=".part") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
            if length is not None and received != int(length):
                raise DownloadError(f"{url}: connection closed after {received} of {length} bytes")
            if digest.hexdigest() != expected:
                raise ChecksumMismatchError(
                    f"{url}: {algorithm} mismatch, the mirror served a different file (got "
                    f"{digest.hexdigest()[:12]}..., expected {expected[:12]}...)")
    except DownloadError:
        raise
    except (OSError, HTTPException, ValueError) as exc:  # URLError, timeouts, IncompleteRead, ...
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
    return dest


def fetch_from_mirrors(
    mirrors: Sequence[str], filename: str, dest: Path, checksum: str, timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Try `mirror + filename` for each mirror in turn; the first download whose checksum matches wins."""
    failures, mismatches = [], 0
    created = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        if log is not None:
            log(f"downloading {url}")
        try:
            return fetch(url, dest, checksum, timeout=timeout)
        except DownloadError as exc:
            failures.append(str(exc))
            mismatches += isinstance(exc, ChecksumMismatchError)
    for folder in created:  # deepest first: the folders this call made, while they stay empty
        try:
            folder.rmdir()
        except OSError:
            break
    tried = "; ".join(failures) if failures else "no mirrors given"
    raise DownloadError(f"could not download {filename}: {tried}", failures,
                        served_other_file=bool(failures) and mismatches == len(failures))
