"""Shape changes without arithmetic: Reshape, Permute, Slice and Concat. Plain `topgrad.Op`s,
not `NumpyOp`s: moving data raises no floating-point warning, and these run many times a step
(NumpyOp's ~1 us a call measured +0.8-2% on the attention step)."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op
from topgrad.arguments import axes_order, new_shape, refuse_reshape
from topgrad.indexing import basic_index
from topgrad.joining import joined_shape

from topgrad_numpy.ops._util import refuse_non_arrays


class Reshape(Op):
    """x viewed with a new shape (-1 allowed; copies only if x is not contiguous); saves the shape."""

    def forward(self, x: np.ndarray, shape: Any = None) -> np.ndarray:
        """x with the new shape (a view where numpy can make one); keeps x's shape. The sizes are
        checked as x.reshape checks them: numpy's reshape refuses floats and bools itself, and
        the error says what is wrong (`refuse_reshape`)."""
        if type(shape) is not tuple:
            shape = new_shape("Reshape", shape)
        try:
            out = x.reshape(shape)
        except (ValueError, TypeError) as exc:
            refuse_reshape("Reshape", x.shape, shape, str(exc))
        except AttributeError as exc:  # x is no array
            refuse_non_arrays("Reshape", Reshape.forward, (x,), exc)
            raise
        if out.shape != shape and min(shape) < -1:  # numpy infers any negative size, not -1 alone
            refuse_reshape("Reshape", x.shape, shape)
        self.in_shape = x.shape
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad reshaped back to x's shape."""
        return (grad.reshape(self.in_shape),)


class Permute(Op):
    """x with its axes reordered into a C-contiguous array (a copy unless the order leaves memory
    as it is), so later ops and `.grad` get dense arrays; saves the inverse order for backward."""

    def forward(self, x: np.ndarray, axes: Any = None) -> np.ndarray:
        """x's axes in the order `axes`, dense; keeps the inverse order. The axes are checked as
        x.permute checks them (negative ones count from the end)."""
        try:
            if type(axes) is not tuple or sorted(axes) != list(range(x.ndim)):
                raise TypeError
            view = x.transpose(axes)
        except AttributeError as exc:  # x is no array
            refuse_non_arrays("Permute", Permute.forward, (x,), exc)
            raise
        except TypeError:  # not a tuple of ints ordering x's axes (1.0 == 1, but numpy refuses it)
            axes = axes_order(axes, x.shape)
            view = x.transpose(axes)
        self.inverse = tuple(np.argsort(axes).tolist())
        return _dense(view)

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad with the inverse order applied, dense."""
        return (_dense(np.transpose(grad, self.inverse)),)


class Slice(Op):
    """x[index] for a basic index (ints, slices, None; see `topgrad.indexing`), dense; backward
    writes the gradient into zeros of x's shape at the selected places. Saves shapes only."""

    def forward(self, x: np.ndarray, index: Any = ()) -> np.ndarray:
        """x[index], dense (a 0-d result stays an array)."""
        try:
            self.index, self.x_shape, self.x_dtype = basic_index(index, x.shape), x.shape, x.dtype
        except AttributeError as exc:  # x is no array
            refuse_non_arrays("Slice", Slice.forward, (x,), exc)
            raise
        whole = (*self.index, ...)  # the trailing ... keeps a 0-d result an array
        return _dense(x[whole])

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """Zeros of x's shape with grad written at the selected places."""
        gx = np.zeros(self.x_shape, self.x_dtype)
        gx[self.index] = grad
        return (gx,)


class Concat(Op):
    """The arrays joined along `axis`; backward hands each input its part of the gradient (a
    view where that part is dense). Saves where the parts start."""

    def forward(self, *xs: np.ndarray, axis: int = 0) -> np.ndarray:
        """The arrays joined along `axis`; keeps where each part starts."""
        try:
            _, self.axis = joined_shape("Concat", [x.shape for x in xs], axis)
        except AttributeError as exc:  # one is no array
            refuse_non_arrays("Concat", Concat.forward, xs, exc)
            raise
        self.starts = np.cumsum([x.shape[self.axis] for x in xs[:-1]]).tolist()
        return np.concatenate(xs, axis=self.axis)

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """grad split where the parts start: each input its part (None where not needed)."""
        parts = np.split(grad, self.starts, axis=self.axis)
        return tuple(_dense(p) if self.needs_grad(i) else None for i, p in enumerate(parts))


PANEL = 32
"""Output columns per copy where a permutation moves the source's contiguous axis away from the
last (a transpose): numpy's copy then reads a new cache line for every element it writes. Copied
32 columns at a time, each line read serves the whole panel while it is in cache. Measured on one
Intel core: 2048x2048 31.8 -> 3.9 ms (PyTorch 5.2), (8, 1024, 1024) by (0, 2, 1) 65 -> 14,
NHWC -> NCHW at 8x112x112x64 41 -> 11.5; 16 and 64 columns each lost somewhere."""

PANEL_MIN = 1 << 14
"""Elements below which a transposed copy stays one copy (it is in cache either way)."""


def _dense(a: np.ndarray) -> np.ndarray:
    """`a`, or a C-contiguous copy (np.ascontiguousarray would turn a 0-d array into 1-d); a
    transposed `a` is copied in panels of its last axis (`PANEL`)."""
    if a.flags.c_contiguous:
        return a
    if a.size < PANEL_MIN or a.shape[-1] <= PANEL or not _transposed(a):
        return a.copy()
    out = np.empty(a.shape, a.dtype)
    for start in range(0, a.shape[-1], PANEL):
        out[..., start : start + PANEL] = a[..., start : start + PANEL]
    return out


def _transposed(a: np.ndarray) -> bool:
    """Whether another axis of `a` (of more than one element) steps through memory in smaller
    strides than its last axis: the source's contiguous axis is elsewhere."""
    last = abs(a.strides[-1])
    return any(abs(s) < last for s, n in zip(a.strides[:-1], a.shape[:-1]) if n > 1)
