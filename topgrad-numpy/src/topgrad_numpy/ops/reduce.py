"""Reductions over chosen axes: Sum, Mean and Max (a full reduction gives a 0-d array).

Where the reduced axes are one contiguous run (global pooling over H, W; a token mean), the
sum is one batched BLAS product with a ones vector and the backward an `np.repeat`; numpy's
own `sum(axis=...)` and broadcast copies run short inner loops there (~5x and ~2.5x slower).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from topgrad.arguments import flag

from topgrad_numpy.ops._util import (
    NumpyOp,
    arr,
    axes,
    expand,
    kept_shape,
    rowmax,
    rowsum,
    run_expand,
    run_sum,
    sum_over,
)


def _reduce(x: np.ndarray, axs: tuple[int, ...], keepdims: bool) -> np.ndarray:
    out = run_sum(x, axs)
    if out is None:
        return arr(sum_over(x, axs, keepdims))
    shape = [1 if i in axs else s for i, s in enumerate(x.shape) if keepdims or i not in axs]
    return out.reshape(shape)


def _expand(grad: Any, shape: tuple[int, ...], axs: tuple[int, ...], keepdims: bool) -> np.ndarray:
    out = run_expand(grad, shape, axs)
    return out if out is not None else expand(grad, shape, axs, keepdims)


class Sum(NumpyOp):
    """Sum over `axis` (None, int or tuple); saves only the input shape."""

    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        """x summed over the normalized axes."""
        keepdims = flag("Sum", "keepdims", keepdims)
        self.axes = axes("Sum", axis, x.ndim)
        self.in_shape, self.keepdims = x.shape, keepdims
        return _reduce(x, self.axes, keepdims)

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad broadcast back to the input's shape."""
        return (_expand(grad, self.in_shape, self.axes, self.keepdims),)


class Mean(NumpyOp):
    """Mean over `axis` (None, int or tuple); saves only the input shape."""

    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        """x averaged over the normalized axes (NaN over no elements, as in PyTorch)."""
        keepdims = flag("Mean", "keepdims", keepdims)
        self.axes = axes("Mean", axis, x.ndim)
        self.in_shape, self.keepdims = x.shape, keepdims
        count = math.prod(x.shape[a] for a in self.axes)
        self.scale = 1.0 / count if count else math.nan
        out = _reduce(x, self.axes, keepdims)
        out *= self.scale
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad broadcast back to the input's shape, divided by the count averaged over."""
        out = _expand(grad, self.in_shape, self.axes, self.keepdims)
        out *= self.scale
        return (out,)


class Max(NumpyOp):
    """The maximum over `axis` (None, int or tuple), as torch.amax: the elements that tie for it
    share the gradient equally, and a NaN makes it NaN. Saves x (a reference) and the output."""

    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        """The maximum over the axes (an error over an empty axis, as in PyTorch); saves x and it."""
        keepdims = flag("Max", "keepdims", keepdims)
        self.axes = axes("Max", axis, x.ndim)
        empty = [a for a in self.axes if x.shape[a] == 0]
        if empty:
            raise ValueError(f"Max: x of shape {x.shape} has no elements along axis {empty[0]}, "
                             "and a maximum over nothing has no value (torch.amax refuses it too)")
        self.kept = kept_shape(x.shape, self.axes)
        if self._last_axis(x):  # `rowmax`: fast on short rows, where numpy's reduce pays per row
            out = rowmax(x) if keepdims else rowmax(x).reshape(x.shape[:-1])
        else:
            out = arr(np.max(x, axis=self.axes, keepdims=keepdims)) if self.axes else x.copy()
        self.save_for_backward(x=x, out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad shared equally among the elements equal to the maximum."""
        x, out = self._intermediate
        mask = x == out.reshape(self.kept)  # NaN equals nothing: its slice's count is 0, grads NaN
        if self._last_axis(x):  # the counts as one gemv (exact: whole numbers below 2**24)
            count = rowsum(mask.astype(x.dtype))
        else:
            count = mask.sum(axis=self.axes, keepdims=True, dtype=x.dtype)
        share = np.divide(grad.reshape(self.kept), count)
        return (arr(np.multiply(mask, share, dtype=x.dtype)),)

    def _last_axis(self, x: np.ndarray) -> bool:
        """Is the maximum over x's last axis alone (a row's: logits, features)?"""
        return x.ndim > 0 and self.axes == (x.ndim - 1,)
