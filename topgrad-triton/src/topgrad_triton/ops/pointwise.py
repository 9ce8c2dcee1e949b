"""Exp and Log: pointwise ops beyond the contract's table, on the elementwise kernel."""

from __future__ import annotations

import torch

from topgrad_triton.kernels import elementwise as ew
from topgrad_triton.ops.base import TritonOp, check_tensors


class Exp(TritonOp):
    """e ** x; saves its output, which is its own derivative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensors("Exp", x=x)
        out = ew.elementwise(ew.EXP, x, name="Exp")
        self.save_for_backward(out)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        (out,) = self.saved
        return (ew.elementwise(ew.MUL, grad, out, name="Exp"),)


class Log(TritonOp):
    """The natural logarithm (-inf at 0, NaN below); saves x for the gradient 1 / x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensors("Log", x=x)
        self.save_for_backward(x)
        return ew.elementwise(ew.LOG, x, name="Log")

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        (x,) = self.saved
        return (ew.elementwise(ew.DIV, grad, x, name="Log"),)
