"""The dtypes Linear, Conv2d and Attention compute raw operands in: float32 or float64 only.

A Tensor's array is float32 or float64, but these ops also take raw numpy arrays. numpy's own
promotion would compute a long double (float128) operand in float128, whose backward the engine
then refuses (it names neither op nor operand), and makes int64 but not int16 or bool arrays
float64. Here every raw array counts as one dtype, as the README says: an integer or bool
array as float64, float16 as float32, a float wider than float64 (long double) as float64. A mix
of float32 and float64 then computes in float64, as before. An array of anything else (complex
numbers, text, dates) is refused naming the op and operand: numpy's matmul made Attention's
output complex and failed in Conv2d in its own words."""

from __future__ import annotations

from typing import Any

import numpy as np

from topgrad_numpy.ops._util import F32, F64, REAL_KINDS, not_real


def computed(op: str, names: tuple[str, ...], *operands: Any) -> tuple[Any, ...]:
    """`operands` of `op` (arrays, or None for a missing bias; `names` for messages) with each
    array in the dtype it counts as: float32 and float64 arrays as given (no copy, the common
    case: ~0.35 us a call), the rest converted (`_counted`). What is no array is passed on for
    the op's own checks to refuse."""
    for a in operands:
        if a is not None and (type(a) is not np.ndarray or (a.dtype is not F32 and a.dtype is not F64)):
            return tuple(_counted(op, name, b) for name, b in zip(names, operands, strict=True))
    return operands


def _counted(op: str, name: str, a: Any) -> Any:
    """One operand in the dtype it counts as: an integer or bool array as float64, a float array
    as float32 up to 4 bytes (float16, a float32 of the other byte order) and float64 beyond, an
    array of no real numbers a TypeError; anything else (float32, float64, lists, None) as given."""
    if type(a) is not np.ndarray or a.dtype == F32 or a.dtype == F64:
        return a
    kind = a.dtype.kind
    if kind == "f":
        return a.astype(F32 if a.dtype.itemsize <= 4 else F64)
    if kind in REAL_KINDS:
        return a.astype(F64)  # bool or integers
    raise not_real(f"{op} ({name})", a.dtype)
