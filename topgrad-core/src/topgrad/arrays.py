"""Reading backend arrays without knowing the backend: shape, dtype name, bytes.

numpy and torch arrays (and a third-party backend's) answer alike here. A leaf module, so the
engine (`tensor.py`), the backend base class and the observers all import it at the top.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

FLOAT32_MAX = 3.4028234663852886e38  # float32's largest finite value


def nbytes(obj: Any) -> int:
    """Bytes held by a backend array (numpy, torch, ...), or by a tuple/list of them; 0 otherwise."""
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    n = getattr(obj, "nbytes", None)
    if isinstance(n, int):
        return n
    shape = getattr(obj, "shape", None)
    if shape is None:
        return 0
    numel = getattr(obj, "numel", None)
    element_size = getattr(obj, "element_size", None)
    if callable(numel) and callable(element_size):  # torch.Tensor
        return int(numel()) * int(element_size())
    return math.prod(int(s) for s in shape) * itemsize(getattr(obj, "dtype", None))


def itemsize(dtype: Any) -> int:
    """Bytes per element of a dtype: its `.itemsize` (numpy, torch), else the bit count its name
    ends with ('float64' -> 8, for a backend whose dtype is a name); 0 when neither tells."""
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    bits = re.search(r"(\d+)$", str(dtype))
    return int(bits.group(1)) // 8 if bits else 0


def is_array(obj: Any) -> bool:
    """True for backend arrays: anything with a shape and a dtype."""
    return hasattr(obj, "shape") and hasattr(obj, "dtype")


def shape_of(obj: Any) -> tuple[int, ...] | None:
    """The shape of an array or Tensor as a tuple of ints, else None."""
    shape = getattr(obj, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(obj: Any) -> str:
    """'float32', 'int64', ... for numpy and torch dtypes alike."""
    dtype = getattr(obj, "dtype", None)
    if dtype is None:
        return "?"
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype object
        name = str(dtype).removeprefix("torch.")
        with contextlib.suppress(TypeError):
            _DTYPE_NAMES[dtype] = name
        return name
