"""LogSoftmax and Softmax over any axis: the axis is moved last (a view, made dense if needed) for the
row kernels."""

from __future__ import annotations

import torch

from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.softmax import logsoftmax_rows, logsoftmax_rows_backward
from topgrad_triton.ops.base import TritonOp, check_tensors
from topgrad_triton.shapes import normalize_axes


def _rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """x with `axis` moved last, dense, viewed as (rows, len(axis))."""
    if x.ndim == 0:
        return contiguous(x).view(1, 1)
    moved = contiguous(x.movedim(axis, -1))
    return moved.view(-1, x.shape[axis]) if moved.numel() else moved.view(0, x.shape[axis])


def _unrows(y: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """The inverse of `_rows`: a dense array of `shape`."""
    if not shape:
        return y.view(())
    moved = list(shape)
    moved.append(moved.pop(axis))
    return contiguous(y.view(moved).movedim(-1, axis))


class LogSoftmax(TritonOp):
    """log(softmax(x)) along `axis`, stable for large logits."""

    def forward(self, x: torch.Tensor, axis: int = -1) -> torch.Tensor:
        """log(softmax(x)) along the axis by the row kernel; saves the output."""
        check_tensors("LogSoftmax", x=x)
        (ax,) = normalize_axes("LogSoftmax", axis, x.ndim) or (0,)
        self.axis = ax
        y = _unrows(logsoftmax_rows(_rows(x, ax)), tuple(x.shape), ax)
        self.save_for_backward(out=y)
        return y

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """grad - softmax * sum(grad) along the axis, by the row backward kernel."""
        (y,) = self.saved
        dx = logsoftmax_rows_backward(_rows(grad, self.axis), _rows(y, self.axis))
        return (_unrows(dx, tuple(y.shape), self.axis),)


class Softmax(TritonOp):
    """Normalized exponentials along `axis` (an optional op): saves its output alone, where
    LogSoftmax then Exp saved two arrays."""

    def forward(self, x: torch.Tensor, axis: int = -1) -> torch.Tensor:
        """exp(x - max) / sum(exp(x - max)) along the axis by the row kernel; saves the output."""
        check_tensors("Softmax", x=x)
        (ax,) = normalize_axes("Softmax", axis, x.ndim) or (0,)
        self.axis = ax
        y = _unrows(logsoftmax_rows(_rows(x, ax), log=False), tuple(x.shape), ax)
        self.save_for_backward(out=y)
        return y

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """y * (grad - sum(grad * y)) along the axis, by the row backward kernel."""
        (y,) = self.saved
        dx = logsoftmax_rows_backward(_rows(grad, self.axis), _rows(y, self.axis), log=False)
        return (_unrows(dx, tuple(y.shape), self.axis),)
