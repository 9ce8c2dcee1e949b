"""Exp, Log, Sqrt, Abs, Tanh and Sigmoid: pointwise functions beyond the required op table, so
that softmax or a cross-entropy can be written out from ops (and compared with the built-in
LogSoftmax), norms, standard deviations and L1 losses too, and the classic squashing
nonlinearities are one op each."""

from __future__ import annotations

import numpy as np

from topgrad_numpy.ops._util import NumpyOp, arr, flat_blocks


class Exp(NumpyOp):
    """e ** x; saves its output, which is its own derivative."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """e ** x (inf on overflow, without numpy's warning); saves the output."""
        out = arr(np.exp(x))  # inf on overflow, as in PyTorch
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad * e ** x, the saved output."""
        (out,) = self._intermediate
        return (arr(grad * out),)


class Log(NumpyOp):
    """The natural logarithm (-inf at 0, NaN below, without numpy's warnings, as in PyTorch);
    saves x for the gradient 1 / x."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """log(x), without numpy's warnings at and below 0; saves x."""
        out = arr(np.log(x))
        self.save_for_backward(x=x)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad / x."""
        (x,) = self._intermediate
        return (arr(np.divide(grad, x)),)  # inf for a denormal x


class Sqrt(NumpyOp):
    """The square root (NaN below 0, without numpy's warning, as in PyTorch); saves its output y
    for the gradient grad / (2 y), inf at 0 as PyTorch's."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """sqrt(x), NaN below 0 without numpy's warning; saves the output."""
        out = arr(np.sqrt(x))
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad / (2 y), y being the saved output."""
        (out,) = self._intermediate
        d = arr(np.multiply(out, 2.0))  # 2 y is exact: y = sqrt(x) <= 1.9e19 (float32) cannot overflow
        np.divide(grad, d, out=d)  # not grad / y * 0.5: grad / y overflows where grad / (2 y) does not
        return (d,)


class Abs(NumpyOp):
    """|x|; saves x for the gradient grad * sign(x), where sign is 0 at 0 and at NaN (numpy's
    np.sign gives NaN there; PyTorch's gradient is 0)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """|x|; saves x for the sign."""
        self.save_for_backward(x=x)
        return arr(np.abs(x))

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad * sign(x), with sign 0 at 0 and at NaN."""
        (x,) = self._intermediate
        above = np.greater(x, 0, out=np.empty(x.shape, dtype=bool))
        below = np.less(x, 0, out=np.empty(x.shape, dtype=bool))
        # -1, 0 or 1 (0 at NaN) in int8, then float: a bool-to-float subtract runs 2.5x slower
        sign = arr((above.view(np.int8) - below.view(np.int8)).astype(grad.dtype))
        sign *= grad  # inf * 0 is NaN, as in PyTorch
        return (sign,)


class Tanh(NumpyOp):
    """The hyperbolic tangent; saves its output y for the gradient 1 - y²."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """tanh(x); saves the output."""
        out = arr(np.tanh(x))
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad * (1 - y²), block by block so that the passes stay in cache."""
        (out,) = self._intermediate
        d = np.empty(out.shape, out.dtype)  # an array even for a 0-d tensor, for the in-place steps
        for y, g, db in flat_blocks(out, grad, d):  # three passes per cache-sized block
            np.square(y, out=db)
            np.subtract(1.0, db, out=db)
            db *= g
        return (d,)


class Sigmoid(NumpyOp):
    """1 / (1 + e^-x) (0 below ~-88, where e^-x overflows, without numpy's warning); saves its
    output y for the gradient y (1 - y)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """1 / (1 + e^-x), in place block by block; saves the output."""
        out = np.empty(x.shape, x.dtype)  # the four passes in place, block by block
        for xb, y in flat_blocks(x, out):
            np.negative(xb, out=y)
            np.exp(y, out=y)  # inf below ~-88: the output is then 0
            y += 1.0
            np.divide(1.0, y, out=y)  # the same bits as np.reciprocal, whose loop is 2x slower
        self.save_for_backward(out=out)
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """grad * y (1 - y), block by block."""
        (out,) = self._intermediate
        d = np.empty(out.shape, out.dtype)
        for y, g, db in flat_blocks(out, grad, d):
            np.subtract(1.0, y, out=db)
            db *= y
            db *= g
        return (d,)
