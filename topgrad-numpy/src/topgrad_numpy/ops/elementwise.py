"""Broadcasting arithmetic: Add and Mul (subtraction and negation compose them), and Div (x / y
and x / a number alike)."""

from __future__ import annotations

from typing import Any

import numpy as np

from topgrad_numpy.ops._util import NumpyOp, arr, operands, shape_of, trailing_broadcast, unbroadcast


def _apply(ufunc: np.ufunc, a: Any, b: Any) -> Any:
    """ufunc(a, b), on wide views where one array operand is broadcast over the other's leading
    axes (numpy's inner loop would otherwise run only that operand's size long)."""
    if type(a) is float or type(b) is float:
        return ufunc(a, b)
    return trailing_broadcast(ufunc, a, b)


def _shapes(a: Any, b: Any) -> tuple[Any, Any]:
    """Each operand's shape, None for a Python number (it gets no gradient): what backward needs
    to sum a broadcast gradient back."""
    return (None if type(a) is float else a.shape, None if type(b) is float else b.shape)


def _needed(op: NumpyOp) -> tuple[Any, Any]:
    """The operands' shapes where backward needs their gradient: None for a number and for a
    constant (targets, a mask), whose gradient would be computed only to be dropped."""
    sa, sb = op.shapes  # type: ignore[attr-defined]
    return (sa if op.needs_grad(0) else None), (sb if op.needs_grad(1) else None)


def _shape_error(op: str, a: Any, b: Any) -> ValueError:
    return ValueError(f"{op}: shapes {shape_of(a)} and {shape_of(b)} cannot be broadcast together")


class Add(NumpyOp):
    """a + b with broadcasting; saves only the two shapes (no arrays)."""

    def forward(self, a: Any, b: Any) -> np.ndarray:
        """a + b, broadcast; keeps the operands' shapes for backward."""
        a, b = operands("Add", a, b)
        try:
            out = _apply(np.add, a, b)
        except ValueError:
            raise _shape_error("Add", a, b) from None
        self.shapes = _shapes(a, b)
        return arr(out)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        """grad for each operand, summed over the axes it was broadcast along."""
        sa, sb = self.shapes
        return (
            None if sa is None else unbroadcast(grad, sa),
            None if sb is None else unbroadcast(grad, sb),
        )


class Mul(NumpyOp):
    """a * b with broadcasting; saves the operand the other's gradient needs (references, no
    copies): both for two Tensors that need gradients, one for `x * mask` with a constant mask;
    for `x * 2.0` it keeps only the 2.0. A number is no saved array, so `-x` and `x - y` (which
    compose Mul) may run backward again, as Add may; PyTorch saves the 2.0 and refuses a second
    backward there."""

    number: float | None = None  # the number of `x * 2.0`, kept instead of saved operands

    def forward(self, a: Any, b: Any) -> np.ndarray:
        """a * b, broadcast; saves the operands backward reads (or keeps the number, for `x * 2.0`)."""
        a, b = operands("Mul", a, b)
        try:
            out = _apply(np.multiply, a, b)
        except ValueError:
            raise _shape_error("Mul", a, b) from None
        self.shapes = _shapes(a, b)
        if type(a) is float or type(b) is float:
            self.number = a if type(a) is float else b
        else:  # a is read only for b's gradient, b only for a's
            self.save_for_backward(a=a if self.needs_grad(1) else None, b=b if self.needs_grad(0) else None)
        return arr(out)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        """grad * b for a and grad * a for b, each summed back to its operand's shape."""
        # the number times grad, for the array; else both saved operands (after backward released
        # them, unpacking says so)
        a, b = self._intermediate if self.number is None else (self.number, self.number)
        sa, sb = _needed(self)
        ga = None if sa is None else unbroadcast(arr(_apply(np.multiply, grad, b)), sa)
        gb = None if sb is None else unbroadcast(arr(_apply(np.multiply, grad, a)), sb)
        return ga, gb


class Div(NumpyOp):
    """a / b with broadcasting, either a number (`2 / x`); x / 0 is inf and 0 / 0 NaN, without
    numpy's warnings, as in PyTorch. Saves b and the output: d/da = 1 / b, d/db = -(grad / b) * out,
    or in PyTorch's order, -grad * (out / b), where that overflowed (grad / b is inf for a tiny b,
    and 0 * inf NaN)."""

    def forward(self, a: Any, b: Any) -> np.ndarray:
        """a / b, broadcast, without numpy's warnings for division by 0; saves b and the output."""
        a, b = operands("Div", a, b)
        try:
            out = arr(np.divide(a, b))
        except ValueError:
            raise _shape_error("Div", a, b) from None
        self.shapes = _shapes(a, b)
        self.save_for_backward(b=b, out=out if type(b) is not float else None)
        return out

    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        """grad / b for a and -(grad / b) * out for b, each summed back to its operand's shape."""
        b, out = self._intermediate
        sa, sb = _needed(self)
        ga = arr(np.divide(grad, b))
        gb = None
        if sb is not None:  # (grad / b) * out, negated after the sum over broadcast axes
            gb = unbroadcast(arr(np.multiply(ga, out)), sb)
            if not np.isfinite(gb).all():  # grad / b overflowed for a tiny b: PyTorch's order
                q = arr(np.divide(out, b))
                gb = unbroadcast(np.multiply(q, grad, out=q), sb)
            gb = arr(np.negative(gb))
        return (None if sa is None else unbroadcast(ga, sa)), gb
