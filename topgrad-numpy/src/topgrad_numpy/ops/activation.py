"""Pointwise activations and normalized exponentials: ReLU, LogSoftmax and Softmax."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from topgrad_numpy.ops._util import (
    BUFFER,
    ROWS_BYTES,
    NumpyOp,
    arr,
    axes,
    flat_blocks,
    int_like,
    row_blocks,
    rowsum,
    select,
)


@functools.lru_cache(maxsize=8)
def _zeros(size: int, dtype: Any) -> np.ndarray:
    """A cached read-only zeros vector: `np.maximum(x, 0.0)` takes numpy's ~3x slower scalar
    path, and calloc'd pages that are only read cost no memory."""
    z = np.zeros(size, dtype=dtype)
    z.flags.writeable = False
    return z


def _max_with_zeros(x: np.ndarray) -> np.ndarray:
    """max(x, 0) against an array of zeros. A contiguous x whose size a numpy buffer (8192
    elements) divides is viewed as rows that long, against one cached row of zeros that stays
    in cache (~15% faster than a full-size zeros array); any other x meets a full-size one.
    Zeros come first: on a tie numpy keeps the second operand, so -0.0 stays -0.0, as in PyTorch."""
    if x.flags.c_contiguous and x.size % BUFFER == 0:
        return np.maximum(_zeros(BUFFER, x.dtype), x.reshape(-1, BUFFER)).reshape(x.shape)
    return np.maximum(_zeros(x.size, x.dtype).reshape(x.shape), x)


class ReLU(NumpyOp):
    """max(x, 0), gradient 0 at 0; saves its output (usually kept by the next op anyway).

    Backward is PyTorch's select, bit for bit: the gradient passes where the output is not 0
    (NaN included: the output is never negative, so `out != 0` keeps NaN's gradient, which
    `out > 0` would not) and is +0.0 elsewhere, even where NaN or Inf flows in (0 * NaN would
    be NaN): `_util.select`, which multiplies bit patterns as integers in two flat passes."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """max(x, 0) (large float arrays take a faster path); saves the output."""
        if type(x) is np.ndarray and x.size >= 4096 and x.dtype.kind == "f":
            out = _max_with_zeros(x)
        else:
            out = arr(np.maximum(0.0, x))
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad where the output is not 0, else +0.0 (PyTorch's select, bit for bit)."""
        (out,) = self._intermediate
        dtype = np.result_type(grad, out)
        if dtype.kind != "f":
            return (np.where(out != 0.0, grad, 0.0),)
        gx = np.empty(np.broadcast_shapes(np.shape(grad), out.shape), int_like(dtype))
        for y, g, gxb in flat_blocks(out, np.asarray(grad, dtype), gx):  # both passes in cache
            select(np.not_equal, y, 0.0, g, gxb)
        return (gx.view(dtype),)


class LogSoftmax(NumpyOp):
    """x - logsumexp(x) along `axis`, shifted by the max for stability; saves its output. Along
    the last axis, row blocks of ~256 KiB at a time, as Softmax."""

    def forward(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """x - max - log(sum(exp(x - max))) along `axis`; a 0-d x gives 0 (NaN where x is NaN or
        infinite), as in PyTorch."""
        if x.ndim == 0:  # one value along its only axis: x - x, as x - max(x) - log(1)
            axes("LogSoftmax", axis, 0)
            self.axis = None
            out = np.subtract(x, x, out=np.empty_like(x))  # (a ufunc gives a 0-d array only with out=)
            self.save_for_backward(out=out)
            return out
        (self.axis,) = axes("LogSoftmax", axis, x.ndim)
        if x.shape[self.axis] == 0:  # nothing to normalize over: an empty result, as in PyTorch
            self.save_for_backward(x=x)
            return x.copy()
        out = np.empty(x.shape, x.dtype)
        ax = -1 if self.axis == x.ndim - 1 else self.axis  # the last axis also of the 2-d blocks
        for xb, ob in _row_blocks(ax, x, out):
            np.subtract(xb, xb.max(axis=ax, keepdims=True), out=ob)
            lse = _sums(np.exp(ob), ax)
            ob -= np.log(lse, out=lse)
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad - softmax * sum(grad) along the axis, softmax being exp of the saved output."""
        (out,) = self._intermediate
        if self.axis is None:  # a 0-d input: 0, NaN where the output or grad is not finite
            gx = np.exp(out, out=np.empty(out.shape, np.result_type(grad, out)))
            gx *= grad
            return (np.subtract(grad, gx, out=gx),)
        gx = np.empty(out.shape, np.result_type(grad, out))
        ax = -1 if self.axis == out.ndim - 1 else self.axis
        for ob, gb, db in _row_blocks(ax, out, grad, gx):
            np.exp(ob, out=db)
            db *= -_sums(gb, ax)
            db += gb
        return (gx,)


class Softmax(NumpyOp):
    """e^(x - max) / sum(e^(x - max)) along `axis` as one op (an optional one): it saves its
    output alone, where LogSoftmax then Exp saved two arrays and ran exp twice more. Along the
    last axis each pass runs on row blocks of ~256 KiB while they are in cache (8x512x512,
    forward + backward: 11.0 -> 6.7 ms on the Intel host)."""

    def forward(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """The normalized exponentials along `axis`; a 0-d x gives 1 (NaN where x is NaN or
        infinite), as in PyTorch."""
        if x.ndim == 0:  # one value along its only axis: e^(x - x) / 1
            axes("Softmax", axis, 0)
            self.axis = None
            out = np.subtract(x, x, out=np.empty_like(x))  # (a ufunc gives a 0-d array only with out=)
            np.exp(out, out=out)
            self.save_for_backward(out=out)
            return out
        (self.axis,) = axes("Softmax", axis, x.ndim)
        if x.shape[self.axis] == 0:  # nothing to normalize over: an empty result, as in PyTorch
            out = x.copy()
            self.save_for_backward(out=out)
            return out
        out = np.empty(x.shape, x.dtype)
        ax = -1 if self.axis == x.ndim - 1 else self.axis  # the last axis also of the 2-d blocks
        for xb, ob in _row_blocks(ax, x, out):
            np.subtract(xb, xb.max(axis=ax, keepdims=True), out=ob)
            np.exp(ob, out=ob)
            ob /= _sums(ob, ax)
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """y * (grad - sum(grad * y)) along the axis, y the saved output: two passes and a sum."""
        (y,) = self._intermediate
        if self.axis is None:  # a 0-d input: 0, NaN where the output or grad is not finite
            gx = np.multiply(grad, y, out=np.empty(y.shape, np.result_type(grad, y)))
            np.subtract(grad, gx, out=gx)
            gx *= y
            return (gx,)
        gx = np.empty(y.shape, np.result_type(grad, y))
        ax = -1 if self.axis == y.ndim - 1 else self.axis
        for yb, gb, ob in _row_blocks(ax, y, grad, gx):
            np.multiply(gb, yb, out=ob)
            np.subtract(gb, _sums(ob, ax), out=ob)
            ob *= yb
        return (gx,)


BLOCKED_FROM = 4 * ROWS_BYTES
"""Bytes from which the softmaxes run by row blocks: below, the arrays nearly fit in L2 anyway,
and the blocks' slicing costs more than it saves (LogSoftmax at 128x28x64, 0.9 MB: 4.5% slower
blocked; 128x10: 8 us more per call on 23)."""


def _row_blocks(axis: int, *arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching blocks of whole rows of same-shape arrays, for a softmax along the last axis
    (-1) of C-contiguous ones of BLOCKED_FROM bytes or more (about ROWS_BYTES each); else the
    whole arrays."""
    first = arrays[0]
    if axis != -1 or first.nbytes < BLOCKED_FROM or not all(
            a.shape == first.shape and a.flags.c_contiguous for a in arrays):
        yield arrays
        return
    flat = [a.reshape(-1, first.shape[-1]) for a in arrays]
    for rows in row_blocks(flat[0]):
        yield tuple(a[rows] for a in flat)


def _sums(a: np.ndarray, axis: int) -> np.ndarray:
    """Sums along `axis`, kept as a size-1 axis (for the last, a matrix-vector product)."""
    return rowsum(a) if axis in (-1, a.ndim - 1) else a.sum(axis=axis, keepdims=True)
