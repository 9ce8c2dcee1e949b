"""Downloading one file from a list of mirrors, checked against a published checksum.

The file is streamed into a temporary file next to its destination, hashed on the
way, and moved into place with `os.replace` only when the checksum matches: an
interrupted or corrupt download never leaves a file under the destination's name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.client import HTTPException
from pathlib import Path

CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror gave a file with the expected checksum; the message lists each attempt."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures) or [message]


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
            if length is not None and received != int(length):
                raise DownloadError(f"{url}: connection closed after {received} of {length} bytes")
        if digest.hexdigest() != expected:
            raise DownloadError(
                f"{url}: {algorithm} mismatch: got {digest.hexdigest()}, expected {expected}"
            )
        os.replace(tmp_name, dest)
    except DownloadError:
        _remove(tmp_name)
        raise
    except (OSError, HTTPException, ValueError) as exc:  # URLError, timeouts, IncompleteRead, ...
        _remove(tmp_name)
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        _remove(tmp_name)
        raise
    return dest


def fetch_from_mirrors(
    mirrors: Sequence[str], filename: str, dest: Path, checksum: str, timeout: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Try `mirror + filename` for each mirror in turn; the first download whose checksum matches wins."""
    failures = []
    created = [folder for folder in (dest.parent, *dest.parent.parents) if not folder.exists()]
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        if log is not None:
            log(f"downloading {url}")
        try:
            return fetch(url, dest, checksum, timeout=timeout)
        except DownloadError as exc:
            failures.append(str(exc))
    for folder in created:  # deepest first: the folders this call made, while they stay empty
        try:
            folder.rmdir()
        except OSError:
            break
    tried = "; ".join(failures) if failures else "no mirrors given"
    raise DownloadError(f"could not download {filename}: {tried}", failures)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
