"""numpy's bundled OpenBLAS, through ctypes: which kernels it runs, and its thread count. Where
numpy uses another BLAS (or the library cannot be loaded) every answer says so, and the
backend keeps its plain paths.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from typing import Any

import numpy as np


def _names(function: str) -> tuple[str, ...]:
    """How builds spell an OpenBLAS function: numpy's wheels prefix `scipy_` and suffix `64_`
    (64-bit integers), other builds do not."""
    return f"scipy_{function}64_", f"scipy_{function}", function


_CORENAME = _names("openblas_get_corename")
_GET_THREADS = _names("openblas_get_num_threads")
_SET_THREADS = _names("openblas_set_num_threads")


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The OpenBLAS that numpy's wheel bundles, or None."""
    root = os.path.dirname(np.__file__)
    for path in glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*openblas*")) + glob.glob(
        os.path.join(root, ".dylibs", "*openblas*")
    ):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _function(names: tuple[str, ...]) -> Any:
    lib = _library()
    for name in names:
        found = getattr(lib, name, None) if lib is not None else None
        if found is not None:
            return found
    return None


@functools.cache
def corename() -> str:
    """The kernel family OpenBLAS chose at load time, lowercased (e.g. 'skylakex'); '' if unknown."""
    function = _function(_CORENAME)
    if function is None:
        return ""
    function.restype = ctypes.c_char_p
    return (function() or b"").decode(errors="replace").lower()


def threads() -> int | None:
    """OpenBLAS's thread count (for every caller: numpy's BLAS is one library), or None."""
    function = _function(_GET_THREADS)
    return None if function is None else int(function())


def set_threads(n: int) -> bool:
    """Set OpenBLAS's thread count for the whole process; False where it cannot be set."""
    function = _function(_SET_THREADS)
    if function is None:
        return False
    function.argtypes = [ctypes.c_int]
    function(n)
    return True
