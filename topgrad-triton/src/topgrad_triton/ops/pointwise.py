"""Exp, Log, Tanh and Sigmoid: pointwise ops beyond the contract's table, on the elementwise kernel."""

from __future__ import annotations

from typing import ClassVar

import torch

from topgrad_triton.kernels import elementwise as ew
from topgrad_triton.ops.base import TritonOp, check_tensors


class _OutputDerivative(TritonOp):
    """A function whose derivative is a function of its output y: forward is one kernel and saves
    y, backward one kernel of (grad, y)."""

    function: ClassVar[int]
    gradient: ClassVar[int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        check_tensors(name, x=x)
        out = ew.elementwise(self.function, x, name=name)
        self.save_for_backward(out)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        (out,) = self.saved
        return (ew.elementwise(self.gradient, grad, out, name=type(self).__name__),)


class Exp(_OutputDerivative):
    """e ** x, its own derivative: grad * y."""

    function, gradient = ew.EXP, ew.MUL


class Tanh(_OutputDerivative):
    """The hyperbolic tangent; its gradient is grad * (1 - y²)."""

    function, gradient = ew.TANH, ew.TANH_GRAD


class Sigmoid(_OutputDerivative):
    """1 / (1 + e^-x); its gradient is grad * y (1 - y)."""

    function, gradient = ew.SIGMOID, ew.SIGMOID_GRAD


class Log(TritonOp):
    """The natural logarithm (-inf at 0, NaN below); saves x for the gradient 1 / x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensors("Log", x=x)
        self.save_for_backward(x)
        return ew.elementwise(ew.LOG, x, name="Log")

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        (x,) = self.saved
        return (ew.elementwise(ew.DIV, grad, x, name="Log"),)
