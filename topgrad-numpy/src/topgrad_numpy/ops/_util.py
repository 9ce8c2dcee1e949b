"""Small helpers shared by the ops: float32 operands, axis normalization, un-broadcasting."""

from __future__ import annotations

from typing import Any

import numpy as np

F32 = np.dtype(np.float32)
ndarray = np.ndarray


def arr(x: Any) -> np.ndarray:
    """`x` as an ndarray: ufuncs turn 0-d results into numpy scalars, this turns them back."""
    return x if type(x) is ndarray else np.asarray(x, dtype=F32)


def operand(x: Any) -> Any:
    """A float32 array, or a Python float that numpy treats as weakly typed (stays float32)."""
    if type(x) is ndarray:
        return x if x.dtype == F32 else x.astype(F32)
    if isinstance(x, (bool, int, float, np.number)):
        return float(x)
    return np.asarray(x, dtype=F32)


def shape_of(x: Any) -> tuple[int, ...]:
    return x.shape if type(x) is ndarray else ()


def axes(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """Normalize `axis` (None, int or sequence, negatives allowed) to sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    seq = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in seq:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for an array with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (leading and size-1 axes)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    summed = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and grad.shape[i + lead] != 1
    )
    return arr(grad.sum(axis=summed).reshape(shape)) if summed else grad.reshape(shape)


def expand(grad: Any, shape: tuple[int, ...], axs: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """A fresh (writable, contiguous) array of `shape` holding `grad` broadcast over `axs`."""
    grad = arr(grad)
    if not keepdims:
        kept = list(shape)
        for a in axs:
            kept[a] = 1
        grad = grad.reshape(kept)
    out = np.empty(shape, dtype=grad.dtype)
    out[...] = grad
    return out


def colsum(a2: np.ndarray) -> np.ndarray:
    """Column sums of a 2-d array as one BLAS matrix-vector product (several times faster than
    `a2.sum(axis=0)`, whose inner loop runs over a short row)."""
    return np.ones(a2.shape[0], dtype=a2.dtype) @ a2


def rowsum(a: np.ndarray) -> np.ndarray:
    """Sums over the last axis, kept as a size-1 axis, as one BLAS matrix-vector product."""
    return (a @ np.ones(a.shape[-1], dtype=a.dtype))[..., None]
