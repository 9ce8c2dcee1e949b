"""Affine maps: Linear, x (..., D) @ w (D, M) + b (M,), one BLAS GEMM each way."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from topgrad.arguments import not_a_tensor
from topgrad.errors import type_name
from topgrad.layouts import linear_weight_hint

from topgrad_numpy.ops import gemm
from topgrad_numpy.ops._util import REAL_KINDS, NumpyOp, colsum, not_real, wide_add
from topgrad_numpy.ops.gemm_operands import computed


def _rows(x: np.ndarray) -> int:
    """Rows of x seen as a (rows, D) matrix (`reshape(-1, D)` is ambiguous for empty arrays)."""
    return math.prod(x.shape[:-1])


def _check(x: np.ndarray, w: np.ndarray, b: Any) -> None:
    for name, a in (("x", x), ("w", w), ("b", b)):
        if isinstance(a, (list, tuple, int, float, str)):  # in the words of the Tensor methods
            raise not_a_tensor("Linear", name, a)
        if not isinstance(a, np.ndarray) and (a is not None or name != "b"):
            raise TypeError(f"Linear: {name} must be a Tensor, got {type_name(a)}")
        if a is not None and a.dtype.kind not in REAL_KINDS:
            raise not_real(f"Linear ({name})", a.dtype)
    if x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"Linear (x @ w): x of shape {x.shape} needs w of shape ({x.shape[-1] if x.ndim else '?'}, M), "
            f"got w of shape {w.shape}{linear_weight_hint(x.shape, w.shape)}"
        )
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(
            f"Linear: bias must have shape ({w.shape[1]},) for w of shape {w.shape}, got {b.shape}"
        )


class Linear(NumpyOp):
    """x @ w + b; saves x and w (references: no extra memory). Backward skips the gradients
    of constant inputs."""

    def forward(self, x: np.ndarray, w: np.ndarray, b: Any = None) -> np.ndarray:
        """x @ w + b over the last axis of x (leading axes are rows), as one GEMM; raw arrays in
        the dtype they count as (`computed`: float32 or float64)."""
        x, w, b = computed("Linear", ("x", "w", "b"), x, w, b)
        two_d = (type(w) is np.ndarray and x.ndim == 2 and w.ndim == 2 and x.shape[1] == w.shape[0]
                 and w.dtype.kind == "f" and x.dtype.kind == "f")
        if not two_d or (b is not None and (type(b) is not np.ndarray or b.shape != (w.shape[1],))):
            _check(x, w, b)
        x2 = x if two_d else x.reshape(_rows(x), w.shape[0])
        out = gemm.matmul(x2, w).reshape(*x.shape[:-1], w.shape[1])
        if b is not None and b.dtype != out.dtype and b.dtype == np.float64:  # mixed: float64, as x, w
            out = out.astype(np.float64)
        if b is not None and out.size:  # a fresh C-contiguous product: its 2-d view adds in place
            wide_add(out.reshape(-1, out.shape[-1]), b)
        self.save_for_backward(x=x, w=w)
        self.has_bias = b is not None
        return out

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """grad @ wᵀ for x, xᵀ @ grad for w and grad summed over rows for b (skipping constants)."""
        x, w = self._intermediate
        rows = _rows(x)
        g2 = grad.reshape(rows, w.shape[1])
        gx = gw = None
        if self.needs_grad(0):  # none for an input batch
            gx = gemm.matmul_nt(g2, w).reshape(x.shape)
        if self.needs_grad(1):
            gw = gemm.matmul_tn(x.reshape(rows, w.shape[0]), g2)
        gb = colsum(g2) if self.has_bias else None
        return gx, gw, gb
