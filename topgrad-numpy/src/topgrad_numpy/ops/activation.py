"""Pointwise activations and normalized exponentials: ReLU, LogSoftmax and Softmax."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
from topgrad.arguments import one_axis

from topgrad_numpy.ops._util import (
    BUFFER,
    ROWS_BYTES,
    NumpyOp,
    arr,
    axes,
    flat_blocks,
    int_like,
    row_blocks,
    rowmax,
    rowsum,
    select,
    sum_over,
)
from topgrad_numpy.unshared import unshared_saved


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
    be NaN): `_util.select`, which multiplies bit patterns as integers in two flat passes. It
    writes dL/dx over the saved output where nothing else can reach that (`unshared_saved`: in
    a training step its Tensor is gone and the next op has released it), not into a new array,
    whose memory is cold."""

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
        if out.dtype == dtype and np.shape(grad) == out.shape and unshared_saved(self, 0):
            gx = out.view(int_like(dtype))  # each block's mask and product go over its own values
        else:
            gx = np.empty(np.broadcast_shapes(np.shape(grad), out.shape), int_like(dtype))
        for y, g, gxb in flat_blocks(out, np.asarray(grad, dtype), gx):  # both passes in cache
            select(np.not_equal, y, 0.0, g, gxb)
        return (gx.view(dtype),)


class _AlongOneAxis(NumpyOp):
    """The frame LogSoftmax and Softmax share: `axis` checked, a 0-d x taken as one value along
    its only axis (as PyTorch: NaN where that value is not finite), an empty result for an empty
    x, and the passes along the last axis by row blocks (`_row_blocks`). Each op gives its math
    on a block along `ax` (`_forward_rows`, `_backward_rows`); it saves its output alone."""

    def forward(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """The op along `axis` (a 0-d x: along its one value)."""
        if type(axis) is not int:  # None or a tuple would reach the unpacking below
            one_axis(type(self).__name__, axis)
        (self.axis,) = axes(type(self).__name__, axis, x.ndim) or (0,)
        out = np.empty(x.shape, x.dtype)
        if x.size:
            ax = _block_axis(self.axis, x.ndim)
            for xb, ob in _row_blocks(ax, *_at_least_1d(x, out)):
                self._forward_rows(xb, ob, ax)
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """dL/dx from the saved output, block by block as forward."""
        (out,) = self._intermediate
        gx = np.empty(out.shape, np.result_type(grad, out))
        if out.size:
            ax = _block_axis(self.axis, out.ndim)
            for ob, gb, db in _row_blocks(ax, *_at_least_1d(out, grad, gx)):
                self._backward_rows(ob, gb, db, ax)
        return (gx,)

    def _forward_rows(self, xb: np.ndarray, ob: np.ndarray, ax: int) -> None:
        raise NotImplementedError

    def _backward_rows(self, ob: np.ndarray, gb: np.ndarray, db: np.ndarray, ax: int) -> None:
        raise NotImplementedError


class LogSoftmax(_AlongOneAxis):
    """x - logsumexp(x) along `axis`, shifted by the max for stability; saves its output. Along
    the last axis, from BLOCKED_FROM bytes, row blocks of ~256 KiB at a time, as Softmax."""

    def _forward_rows(self, xb: np.ndarray, ob: np.ndarray, ax: int) -> None:
        """x - max - log(sum(exp(x - max))) along `ax`."""
        np.subtract(xb, _maxes(xb, ax), out=ob)
        lse = _sums(np.exp(ob), ax)
        ob -= np.log(lse, out=lse)

    def _backward_rows(self, ob: np.ndarray, gb: np.ndarray, db: np.ndarray, ax: int) -> None:
        """grad - softmax * sum(grad) along `ax`, softmax being exp of the saved output."""
        np.exp(ob, out=db)
        db *= _sums(gb, ax)
        np.subtract(gb, db, out=db)


class Softmax(_AlongOneAxis):
    """e^(x - max) / sum(e^(x - max)) along `axis` as one op (an optional one): it saves its
    output alone, where LogSoftmax then Exp saved two arrays and ran exp twice more. Along the
    last axis, from BLOCKED_FROM bytes, each pass runs on row blocks of ~256 KiB while they are in
    cache (8x512x512, forward + backward: 11.0 -> 6.7 ms on the Intel host)."""

    def _forward_rows(self, xb: np.ndarray, ob: np.ndarray, ax: int) -> None:
        """The normalized exponentials along `ax`."""
        np.subtract(xb, _maxes(xb, ax), out=ob)
        np.exp(ob, out=ob)
        ob /= _sums(ob, ax)

    def _backward_rows(self, yb: np.ndarray, gb: np.ndarray, db: np.ndarray, ax: int) -> None:
        """y * (grad - sum(grad * y)) along `ax`, y the saved output: two passes and a sum."""
        np.multiply(gb, yb, out=db)
        np.subtract(gb, _sums(db, ax), out=db)
        db *= yb


def _block_axis(axis: int, ndim: int) -> int:
    """`axis` as the passes take it: -1 for the last (also of `_row_blocks`' 2-d blocks, and of a
    0-d array's one value)."""
    return -1 if axis >= ndim - 1 else axis


def _at_least_1d(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Same-shape arrays as they are, or 0-d ones as views of shape (1,)."""
    return arrays if arrays[0].ndim else tuple(a.reshape(1) for a in arrays)


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
    return rowsum(a) if axis in (-1, a.ndim - 1) else sum_over(a, (axis % a.ndim,), keepdims=True)


def _maxes(a: np.ndarray, axis: int) -> np.ndarray:
    """Maxima along `axis`, kept as a size-1 axis (for the last, `rowmax`: fast on narrow rows)."""
    return rowmax(a) if axis in (-1, a.ndim - 1) else a.max(axis=axis, keepdims=True)
