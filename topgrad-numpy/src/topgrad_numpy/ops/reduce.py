"""Reductions over chosen axes: Sum and Mean (a full reduction gives a 0-d array)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from topgrad import Op

from topgrad_numpy.ops._util import arr, axes, expand


class Sum(Op):
    """Sum over `axis` (None, int or tuple); saves only the input shape."""

    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        self.axes = axes("Sum", axis, x.ndim)
        self.shape, self.keepdims = x.shape, keepdims
        return arr(x.sum(axis=self.axes, keepdims=keepdims))

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        return (expand(grad, self.shape, self.axes, self.keepdims),)


class Mean(Op):
    """Mean over `axis` (None, int or tuple); saves only the input shape."""

    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        self.axes = axes("Mean", axis, x.ndim)
        self.shape, self.keepdims = x.shape, keepdims
        count = math.prod(x.shape[a] for a in self.axes)
        self.scale = 1.0 / count if count else math.nan
        out = arr(x.sum(axis=self.axes, keepdims=keepdims))
        out *= self.scale
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        out = expand(grad, self.shape, self.axes, self.keepdims)
        out *= self.scale
        return (out,)
