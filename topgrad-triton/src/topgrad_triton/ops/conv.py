"""Conv2d on NHWC images with HWIO kernels: im2col, then one matmul with the kernel as a matrix."""

from __future__ import annotations

from typing import Any

import torch
from topgrad.pairs import pair

from topgrad_triton.kernels.conv import col2im, im2col, out_size
from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.matmul import matmul
from topgrad_triton.kernels.reduce import reduce_rows
from topgrad_triton.ops.base import Grad, TritonOp, check_tensors


def _check(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: tuple[int, int]) -> None:
    check_tensors("Conv2d", optional=("b",), x=x, w=w, b=b)
    shapes = f"x of shape {tuple(x.shape)} and w of shape {tuple(w.shape)}"
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"Conv2d: needs x (B, H, W, Cin) and w (kh, kw, Cin, Cout), got {shapes}")
    if x.shape[3] != w.shape[2]:
        raise ValueError(f"Conv2d: input channels differ, {shapes} (x is NHWC and w is (kh, kw, Cin, Cout); "
                         "PyTorch's NCHW x and (Cout, Cin, kh, kw) w need a transpose)")
    if 0 in tuple(w.shape[:2]) or w.shape[3] == 0:
        raise ValueError(f"Conv2d: the kernel needs kh, kw and Cout of at least 1 (as in PyTorch), {shapes}")
    if b is not None and tuple(b.shape) != (w.shape[3],):
        raise ValueError(f"Conv2d: bias of shape {tuple(b.shape)} does not match w of shape {tuple(w.shape)}")
    if 0 in tuple(x.shape[1:3]):
        raise ValueError(f"Conv2d: x is an image with no rows or columns, {shapes}; as in PyTorch only the "
                         "batch or channel axis may be empty")
    if x.shape[1] + 2 * padding[0] < w.shape[0] or x.shape[2] + 2 * padding[1] < w.shape[1]:
        raise ValueError(f"Conv2d: the kernel is larger than the padded image, {shapes}, padding {padding}")


class Conv2d(TritonOp):
    """2-D cross-correlation (as torch's conv2d) of NHWC x with HWIO w, plus bias b (may be None)."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                stride: Any = 1, padding: Any = 0) -> torch.Tensor:
        s, p = pair("Conv2d", "stride", stride, 1), pair("Conv2d", "padding", padding, 0)
        _check(x, w, b, p)
        kh, kw, cin, cout = w.shape
        B, H, W, _ = x.shape
        OH, OW = out_size(H, kh, s[0], p[0]), out_size(W, kw, s[1], p[1])
        pointwise = kh == kw == 1 and s == (1, 1) and p == (0, 0)
        cols = contiguous(x).view(B * H * W, cin) if pointwise else im2col(x, kh, kw, s, p)
        w2 = contiguous(w).view(kh * kw * cin, cout)
        self.stride, self.padding = s, p  # public names: graph() and to_dot show them
        self.geometry = ((B, H, W, cin), tuple(w.shape), pointwise, b is not None)
        self.save_for_backward(cols, w2)
        return matmul(cols, w2, contiguous(b) if b is not None else None).view(B, OH, OW, cout)

    def backward(self, grad: torch.Tensor) -> tuple[Grad, Grad, Grad]:
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
