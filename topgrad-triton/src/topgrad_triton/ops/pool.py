"""MaxPool2d on NHWC images, as torch's max_pool2d: one kernel forward, one gathering kernel back."""

from __future__ import annotations

from typing import Any

import torch
from topgrad.pooling import pool_geometry

from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.pool import maxpool, maxpool_grad
from topgrad_triton.ops.base import Grad, TritonOp, check_tensors


class MaxPool2d(TritonOp):
    """The maximum of each window; saves the tap of each output's window that gave it (int8, int32
    beyond 127 taps): ties go to the first tap, a NaN beats any number (the last NaN, as PyTorch's
    scan), a window of -inf keeps its first tap inside the image."""

    def forward(
        self, x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0
    ) -> torch.Tensor:
        """The maximum of each window of NHWC x by the pooling kernel; saves the winning tap."""
        check_tensors("MaxPool2d", x=x)
        kernel, step, pad, out_hw = pool_geometry(tuple(x.shape), kernel_size, stride, padding)
        out, tap = maxpool(contiguous(x), kernel, step, pad, out_hw)
        self.save_for_backward(argmax_tap=tap)
        self.kernel_size, self.stride, self.padding = kernel, step, pad  # graph() shows them
        B, H, W, C = x.shape
        self.x_shape = (B, H, W, C)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[Grad]:
        """The dense gradient of x: each output's grad goes to the winning tap of its window."""
        (tap,) = self.saved
        g = contiguous(grad)
        return (maxpool_grad(g, tap, self.x_shape, self.kernel_size, self.stride, self.padding),)
