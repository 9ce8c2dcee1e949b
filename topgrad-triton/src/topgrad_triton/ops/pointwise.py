"""Exp, Log, Sqrt, Abs, Tanh and Sigmoid: pointwise ops beyond the required op table, on the
elementwise kernel."""

from __future__ import annotations

from topgrad_triton.kernels import elementwise as ew
from topgrad_triton.ops.base import Pointwise


class Exp(Pointwise):
    """e ** x, its own derivative: grad * y."""

    function, gradient = ew.EXP, ew.MUL


class Log(Pointwise):
    """The natural logarithm (-inf at 0, NaN below); saves x for the gradient grad / x."""

    function, gradient, from_output = ew.LOG, ew.DIV, False


class Sqrt(Pointwise):
    """The square root (NaN below 0); its gradient is grad / (2 y)."""

    function, gradient = ew.SQRT, ew.SQRT_GRAD


class Abs(Pointwise):
    """|x|; saves x for the gradient grad * sign(x), 0 at 0 and at NaN."""

    function, gradient, from_output = ew.ABS, ew.ABS_GRAD, False


class Tanh(Pointwise):
    """The hyperbolic tangent; its gradient is grad * (1 - y²)."""

    function, gradient = ew.TANH, ew.TANH_GRAD


class Sigmoid(Pointwise):
    """1 / (1 + e^-x); its gradient is grad * y (1 - y)."""

    function, gradient = ew.SIGMOID, ew.SIGMOID_GRAD
