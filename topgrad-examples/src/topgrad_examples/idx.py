"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST, with every field checked.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data. Files may be gzipped;
that is detected from the content, not the name. Anything wrong raises `IDXError`
naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import os
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
        raise IDXError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


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
