"""Conv2d on NHWC images with HWIO kernels: im2col, then one matmul with the kernel as a matrix."""

from __future__ import annotations

from typing import Any

import torch
from topgrad.convolution import conv_geometry

from topgrad_triton.kernels.conv import col2im, im2col
from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.matmul import matmul
from topgrad_triton.kernels.reduce import reduce_rows
from topgrad_triton.ops.base import Grad, TritonOp, check_tensors


class Conv2d(TritonOp):
    """2-D cross-correlation (as torch's conv2d) of NHWC x with HWIO w, plus bias b (may be None)."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                stride: Any = 1, padding: Any = 0) -> torch.Tensor:
        """im2col patches (x itself for a 1x1 kernel) times w, plus b; saves patches and w."""
        check_tensors("Conv2d", optional=("b",), x=x, w=w, b=b)
        s, p, (OH, OW) = conv_geometry(tuple(x.shape), tuple(w.shape), None if b is None else tuple(b.shape),
                                       stride, padding)
        kh, kw, cin, cout = w.shape
        B, H, W, _ = x.shape
        pointwise = kh == kw == 1 and s == (1, 1) and p == (0, 0)
        cols = contiguous(x).view(B * H * W, cin) if pointwise else im2col(x, kh, kw, s, p)
        w2 = contiguous(w).view(kh * kw * cin, cout)
        self.stride, self.padding = s, p  # public names: graph() and to_dot show them
        self.geometry = ((B, H, W, cin), tuple(w.shape), pointwise, b is not None)
        self.save_for_backward(patches=cols, w=w2)
        return matmul(cols, w2, contiguous(b) if b is not None else None).view(B, OH, OW, cout)

    def backward(self, grad: torch.Tensor) -> tuple[Grad, Grad, Grad]:
        """dx by col2im of grad @ wᵀ, dw as patchesᵀ @ grad, db as grad summed over rows."""
        cols, w2 = self.saved
        x_shape, w_shape, pointwise, has_bias = self.geometry
        s, p = self.stride, self.padding
        M, cout = cols.shape[0], w_shape[3]
        g2 = contiguous(grad).view(M, cout)
        dx = None  # none for a constant input (an image batch)
        if self.needs_grad(0):
            dcols = matmul(g2, w2.t())
            dx = dcols.view(x_shape) if pointwise else col2im(dcols, x_shape, w_shape[0], w_shape[1], s, p)
        dw = matmul(cols.t(), g2).view(w_shape) if self.needs_grad(1) else None
        db = reduce_rows(g2, cout, M, 1, cout) if has_bias else None
        return dx, dw, db
