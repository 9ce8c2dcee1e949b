"""Shape arithmetic in plain Python: broadcasting, axis normalization, collapsing strided dims."""

from __future__ import annotations

import math
from collections.abc import Sequence

from topgrad.arguments import normal_axes


def broadcast_shape(op: str, a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """NumPy broadcasting of two shapes; ValueError naming `op` and both shapes when incompatible."""
    n = max(len(a), len(b))
    pa, pb = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(pa, pb):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{op}: shapes {tuple(a)} and {tuple(b)} cannot be broadcast together")
        out.append(y if x == 1 else x)
    return tuple(out)


def broadcast_strides(shape: Sequence[int], strides: Sequence[int], out: Sequence[int]) -> list[int]:
    """Strides that read an array of `shape` as if broadcast to `out` (0 along broadcast dims)."""
    pad = len(out) - len(shape)
    result = [0] * pad
    for size, stride, target in zip(shape, strides, out[pad:]):
        result.append(stride if size == target and size != 1 else 0)
    return result


normalize_axes = normal_axes
"""`normalize_axes(op, axis, ndim)`: a reduction's axes, sorted and non-negative (core's `normal_axes`)."""


def kept_shape(shape: Sequence[int], axes: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced `axes` kept as size 1: a reduction's keepdims shape."""
    return tuple(1 if d in axes else s for d, s in enumerate(shape))


def collapse(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent dims that every stride list walks as one, and drop size-1 dims.

    Returns the collapsed shape and each operand's collapsed strides (at least one dim).
    """
    dims = [i for i, s in enumerate(shape) if s != 1]
    out_shape: list[int] = []
    out_strides: list[list[int]] = [[] for _ in strides]
    for i in dims:
        if out_shape and all(st[-1] == s[i] * shape[i] for st, s in zip(out_strides, strides)):
            out_shape[-1] *= shape[i]
            for st, s in zip(out_strides, strides):
                st[-1] = s[i]
            continue
        out_shape.append(shape[i])
        for st, s in zip(out_strides, strides):
            st.append(s[i])
    if not out_shape:
        return [1], [[0] for _ in strides]
    return out_shape, out_strides


def single_stride(shape: Sequence[int], strides: Sequence[int]) -> tuple[int, int] | None:
    """(size, stride) if dims `shape` with `strides` walk memory as one strided dim, else None."""
    cs, (cst,) = collapse(shape, strides)
    if len(cs) != 1:
        return None
    return math.prod(shape), cst[0]


def distinct_elements(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether no two elements of a view with `shape` and `strides` share memory, so that writing it
    is well defined (False for a broadcast view, stride 0). Sufficient, not necessary: the dims of
    size > 1, by increasing stride, must each step past all the memory the smaller ones span."""
    span = 0  # how far past its first element the smaller dims reach
    for size, stride in sorted(((s, abs(st)) for s, st in zip(shape, strides) if s > 1), key=lambda d: d[1]):
        if stride <= span:
            return False
        span += (size - 1) * stride
    return True
