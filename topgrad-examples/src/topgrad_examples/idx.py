"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST, with every field checked.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data. Files may be gzipped;
that is detected from the content, not the name (and a file packed by xz, bzip2, zip or zstd
is named as such). Anything wrong raises `IDXError` naming the file, what is wrong with it and,
where there is one, what to do.
"""

from __future__ import annotations

import gzip
import math
import os
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # 2051: unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 0x00000801  # 2049: unsigned bytes, 1 dimension (count)
GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """A file that is not a valid IDX file of the expected kind."""


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's content, decompressed if it is gzipped. A file that exists but cannot be read
    (no permission, an I/O error) is an IDXError naming it; a missing one stays FileNotFoundError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IDXError(f"{path}: cannot read it ({exc.strerror or exc}){_read_fix(exc)}") from exc
    if not raw.startswith(GZIP_MAGIC):
        _refuse_other_compression(raw, path)
        return raw
    return _gunzip(raw, path)


def _read_fix(exc: OSError) -> str:
    """What to do about a file that cannot be read, worded as data.FolderUnreadableError is for a
    folder; "" where the system's reason is all there is to say (an I/O error)."""
    if isinstance(exc, PermissionError):
        return "; give the user running topgrad-train read access to it, or point at another folder"
    if isinstance(exc, IsADirectoryError):
        return "; it is a folder: put the IDX file itself there, under that name"
    return ""


OTHER_FORMATS = {  # magic bytes -> what the data is, and the command that unpacks it to stdout
    b"\xfd7zXZ\x00": ("xz-compressed data", "unxz -c"),
    b"BZh": ("bzip2-compressed data", "bunzip2 -c"),
    b"PK\x03\x04": ("a zip archive", "unzip -p"),
    b"\x28\xb5\x2f\xfd": ("zstd-compressed data", "unzstd -c"),
}


def _refuse_other_compression(raw: bytes, path: Path) -> None:
    """IDXError for a file packed by another tool than gzip (xz data named .gz, say): said as such,
    with the command that unpacks it, not as a bad magic number. No IDX file begins with these bytes."""
    for magic, (what, unpack) in OTHER_FORMATS.items():
        if not raw.startswith(magic):
            continue
        if path.suffix == ".gz":  # the raw IDX file, named without .gz, is read as well
            command = f"{unpack} {shlex.quote(str(path))} > {shlex.quote(str(path.with_suffix('')))}"
            raise IDXError(f"{path}: {what} named .gz, not gzip: unpack it ({command}) or get the "
                           "gzipped file again")
        raise IDXError(f"{path}: {what}, not an IDX file: unpack it ({unpack.split()[0]}) so that "
                       f"{path.name} holds the IDX data itself, or get the file again")


def _gunzip(raw: bytes, path: Path) -> bytes:
    """Decompress each gzip member of `raw` in turn, as gzip(1) does; zero bytes at the end are
    padding, ignored as gzip(1) ignores them. Other bytes after the gzip data (appended to the
    file) are an IDXError saying where the gzip data ends: `gzip.decompress` said "Not a gzipped file"."""
    parts, rest = [], raw
    while any(rest):  # stops at the first byte that is not zero: at once, for a gzip member
        inflate = zlib.decompressobj(wbits=31)  # one gzip member
        try:
            parts.append(inflate.decompress(rest))
            problem = "" if inflate.eof else "the file ends before the gzip stream does"
        except zlib.error as exc:
            problem = str(exc)
        if problem and rest is raw:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({problem})")
        if problem:
            end = len(raw) - len(rest)
            raise IDXError(f"{path}: valid gzip data (its first {end} bytes) followed by {len(rest)} stray "
                           "bytes: something was appended to the file; get the file again, or cut them off "
                           f"(truncate -s {end} {shlex.quote(str(path))})")
        rest = inflate.unused_data
    return b"".join(parts)


def parse(raw: bytes, magic: int, source: str) -> np.ndarray:
    """Check the header of IDX bytes against `magic` and return the data as a uint8 array."""
    if len(raw) < 4:
        raise IDXError(f"{source}: truncated: {len(raw)} bytes, too short for an IDX header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise IDXError(
            f"{source}: bad magic number {found} (0x{found:08x}); expected {magic} (0x{magic:08x}), "
            f"an IDX file of unsigned bytes with {magic & 0xFF} dimension(s)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{source}: truncated header: {len(raw)} bytes, expected at least {header}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    found_bytes = len(raw) - header
    size = "x".join(str(d) for d in dims) + (f" = {expected}" if len(dims) > 1 else "")  # 60000x28x28 = ...
    if found_bytes < expected:
        raise IDXError(
            f"{source}: truncated: the header announces {size} bytes of data, the file holds {found_bytes}"
        )
    if found_bytes > expected:
        raise IDXError(
            f"{source}: {found_bytes - expected} unexpected bytes after the {size} bytes of data the "
            "header announces"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_images(path: str | os.PathLike[str], size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """Images of an IDX3 file as a (N, rows, cols) uint8 array; rows and cols must equal `size`."""
    images = parse(read_bytes(path), IMAGES_MAGIC, str(path))
    if images.shape[1:] != size:
        raise IDXError(f"{path}: images of {images.shape[1]}x{images.shape[2]} pixels, expected "
                       f"{size[0]}x{size[1]}")
    return images


def read_labels(path: str | os.PathLike[str], num_classes: int = 10) -> np.ndarray:
    """Labels of an IDX1 file as a (N,) uint8 array; every label must be below `num_classes`."""
    labels = parse(read_bytes(path), LABELS_MAGIC, str(path))
    if labels.size and int(labels.max()) >= num_classes:
        raise IDXError(f"{path}: label {int(labels.max())} found, labels must lie in 0..{num_classes - 1}")
    return labels


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (1 or 3 dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (UBYTE << 8) | array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file, gzipped (reproducibly, no timestamp) if the name ends in .gz."""
    path = Path(path)
    data = encode(array)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
    return path
