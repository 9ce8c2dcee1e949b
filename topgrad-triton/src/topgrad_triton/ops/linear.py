"""Linear: x (..., D) @ w (D, M) + b (M,), with dX, dW from the same matmul kernel on strided views."""

from __future__ import annotations

import math

import torch
from topgrad.layouts import linear_weight_hint

from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.matmul import matmul
from topgrad_triton.kernels.reduce import reduce_rows
from topgrad_triton.ops.base import Grad, TritonOp, check_tensors


class Linear(TritonOp):
    """x @ w + b over the last axis of x; b may be None."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """x as rows (leading axes flattened) @ w + b by the matmul kernel; saves the rows and w."""
        check_tensors("Linear", optional=("b",), x=x, w=w, b=b)
        if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"Linear (x @ w): x of shape {tuple(x.shape)} cannot be multiplied by w of "
                             f"shape {tuple(w.shape)} (needs x (..., D) and w (D, M))"
                             f"{linear_weight_hint(tuple(x.shape), tuple(w.shape))}")
        if b is not None and tuple(b.shape) != (w.shape[1],):
            raise ValueError(f"Linear: bias of shape {tuple(b.shape)} does not match w of shape "
                             f"{tuple(w.shape)} (needs ({w.shape[1]},))")
        if w.dtype != torch.float32:  # a raw torch weight of another dtype: cast, as x and b are
            w = contiguous(w, "Linear")
        rows = math.prod(x.shape[:-1])  # not view(-1, D): D may be 0 (then y is the bias, as in PyTorch)
        x2 = contiguous(x).view(rows, w.shape[0])
        self.x_shape, self.has_bias = tuple(x.shape), b is not None
        self.save_for_backward(x=x2, w=w)
        y = matmul(x2, w, contiguous(b) if b is not None else None)
        return y.view(*x.shape[:-1], w.shape[1])

    def backward(self, grad: torch.Tensor) -> tuple[Grad, Grad, Grad]:
        """grad @ wᵀ for x, xᵀ @ grad for w and grad summed over rows for b (skipping constants)."""
        x2, w = self.saved
        rows, M = x2.shape[0], w.shape[1]
        g2 = contiguous(grad).view(rows, M)
        dx = matmul(g2, w.t()).view(self.x_shape) if self.needs_grad(0) else None  # none for inputs
        dw = matmul(x2.t(), g2) if self.needs_grad(1) else None
        db = reduce_rows(g2, M, rows, 1, M) if self.has_bias else None
        return dx, dw, db
