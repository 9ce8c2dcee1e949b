"""Add, Mul, Div and ReLU: elementwise ops; broadcast gradients are summed back to each parent's shape."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from topgrad_triton.kernels import elementwise as ew
from topgrad_triton.kernels.reduce import reduce_to_shape
from topgrad_triton.ops.base import RAW_ARRAY_HINT, Pointwise, TritonOp
from topgrad_triton.shapes import broadcast_shape


def _shape(x: Any) -> tuple[int, ...] | None:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else None


def _check(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """(a, b) with any real number (Python's or numpy's, as `np.float32(2)` or `np.True_`) as a Python
    float; TypeError for anything else that is not an array, ValueError for shapes that do not broadcast."""
    operands = []
    for x in (a, b):
        if isinstance(x, (np.datetime64, np.timedelta64)):  # numpy's time span passes as an integer
            raise TypeError(f"{op}: operands must be Tensors or real numbers, got {type(x).__name__} (a date "
                            "or time span; PyTorch refuses it too): convert it to numbers first")
        if isinstance(x, (numbers.Real, np.bool_)):  # numpy's bool is no numbers.Real, Python's is
            x = float(x)
        elif not isinstance(x, torch.Tensor):
            numpy_value = type(x).__module__ == "numpy"
            hint = f"; wrap an array as Tensor(a) ({RAW_ARRAY_HINT})" if numpy_value else ""
            raise TypeError(f"{op}: operands must be Tensors or real numbers, got {type(x).__name__}{hint}")
        elif x.dtype is not torch.float32 and x.is_complex():
            raise TypeError(f"{op}: operands must hold real numbers, got a {x.dtype} tensor (Topgrad's "
                            "arrays are real): pass t.real or t.abs()")
        operands.append(x)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        broadcast_shape(op, a.shape, b.shape)
    return operands[0], operands[1]


def _needed(op: TritonOp) -> tuple[Any, Any]:
    """The operands' shapes where backward needs their gradient: None for a number and for a
    constant (targets, a mask), whose gradient would be computed only to be dropped."""
    sa, sb = op.shapes  # type: ignore[attr-defined]
    return (sa if op.needs_grad(0) else None), (sb if op.needs_grad(1) else None)


def _mul_grad(grad: torch.Tensor, other: Any, shape: tuple[int, ...] | None) -> torch.Tensor | None:
    """d(a*b)/d(mine) = grad * other, summed back to mine's shape; None when mine is a number."""
    if shape is None:
        return None
    return reduce_to_shape(ew.elementwise(ew.MUL, grad, other, name="Mul"), shape)


class Add(TritonOp):
    """a + b with broadcasting; either may be a real number."""

    def forward(self, a: Any, b: Any) -> torch.Tensor:
        """a + b, broadcast, by the elementwise kernel; keeps the operands' shapes."""
        a, b = _check("Add", a, b)
        self.shapes = (_shape(a), _shape(b))
        return ew.elementwise(ew.ADD, a, b, name="Add")

    def backward(self, grad: torch.Tensor) -> tuple[Any, Any]:
        """grad for each operand, summed over the axes it was broadcast along."""
        (ga, gb) = (None if s is None else reduce_to_shape(grad, s) for s in self.shapes)
        return ga, gb


class Mul(TritonOp):
    """a * b with broadcasting; either may be a real number. Saves the operand the other's
    gradient needs (both for two Tensors that need gradients, one for `x * mask` with a constant
    mask), or for `x * 2.0` keeps only the 2.0. A number is no saved array, so `-x` and `x - y`
    (which compose Mul) may run backward again, as Add may; PyTorch saves the 2.0 and refuses a
    second backward there."""

    number: float | None = None  # the number of `x * 2.0`, kept instead of saved operands

    def forward(self, a: Any, b: Any) -> torch.Tensor:
        """a * b, broadcast; saves the operands backward reads (or keeps the number, for `x * 2.0`)."""
        a, b = _check("Mul", a, b)
        self.shapes = (_shape(a), _shape(b))
        if None in self.shapes:
            self.number = a if self.shapes[0] is None else b
        else:  # a is read only for b's gradient, b only for a's
            self.save_for_backward(a=a if self.needs_grad(1) else None, b=b if self.needs_grad(0) else None)
        return ew.elementwise(ew.MUL, a, b, name="Mul")

    def backward(self, grad: torch.Tensor) -> tuple[Any, Any]:
        """grad * b for a and grad * a for b, each summed back to its operand's shape."""
        # the number times grad, for the array; else both saved operands (after backward released
        # them, unpacking says so)
        a, b = self.saved if self.number is None else (self.number, self.number)
        sa, sb = _needed(self)
        return _mul_grad(grad, b, sa), _mul_grad(grad, a, sb)


class Div(TritonOp):
    """a / b with broadcasting; either may be a real number (`2 / x`). Saves b and the output:
    d/da = grad / b, d/db = -grad * (out / b) (PyTorch's order: (grad / b) * out overflows to
    inf, and 0 * inf to NaN, for a tiny b)."""

    def forward(self, a: Any, b: Any) -> torch.Tensor:
        """a / b, broadcast; saves b and the output."""
        a, b = _check("Div", a, b)
        self.shapes = (_shape(a), _shape(b))
        out = ew.elementwise(ew.DIV, a, b, name="Div")
        self.save_for_backward(b=b, out=out if self.shapes[1] is not None else None)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[Any, Any]:
        """grad / b for a and -grad * (out / b) for b, each summed back to its operand's shape."""
        b, out = self.saved
        sa, sb = _needed(self)
        ga = ew.elementwise(ew.DIV, grad, b, name="Div")
        gb = None if sb is None else reduce_to_shape(
            ew.elementwise(ew.NEG_MUL, grad, ew.elementwise(ew.DIV, out, b, name="Div"), name="Div"), sb)
        return (None if sa is None else reduce_to_shape(ga, sa)), gb


class ReLU(Pointwise):
    """max(x, 0); saves its output, as PyTorch does, and the gradient is 0 where it is 0 (x <= 0).
    The output is > 0 exactly where x is, and NaN where x is, so RELU_GRAD reads either alike; with
    the output saved, an optimizer step on x between forward and backward does not reach it."""

    function, gradient, from_output = ew.RELU, ew.RELU_GRAD, True
