"""Exp and Log: pointwise functions beyond the contract's table, so that softmax, sigmoid or a
cross-entropy can be written out from ops (and compared with the built-in LogSoftmax)."""

from __future__ import annotations

import numpy as np
from topgrad import Op

from topgrad_numpy.ops._util import arr


class Exp(Op):
    """e ** x; saves its output, which is its own derivative."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # inf, as in PyTorch
            out = arr(np.exp(x))
        self.save_for_backward(out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        (out,) = self._intermediate
        with np.errstate(invalid="ignore", over="ignore"):
            return (arr(grad * out),)


class Log(Op):
    """The natural logarithm (-inf at 0, NaN below, without numpy's warnings, as in PyTorch);
    saves x for the gradient 1 / x."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = arr(np.log(x))
        self.save_for_backward(x)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        (x,) = self._intermediate
        with np.errstate(divide="ignore", invalid="ignore"):
            return (arr(np.divide(grad, x)),)
