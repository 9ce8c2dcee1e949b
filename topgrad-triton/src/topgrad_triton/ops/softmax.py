"""LogSoftmax and Softmax over any axis: the axis is moved last (a view, made dense if needed) for the
row kernels."""

from __future__ import annotations

import torch
from topgrad.arguments import one_axis

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


class _AlongOneAxis(TritonOp):
    """LogSoftmax's and Softmax's frame: the axis moved last for the row kernels, which take `log`
    (log-probabilities or probabilities); each op saves its output alone."""

    log: bool

    def forward(self, x: torch.Tensor, axis: int = -1) -> torch.Tensor:
        """The op along the axis by the row kernel; saves the output."""
        name = type(self).__name__
        check_tensors(name, x=x)
        if type(axis) is not int:  # None or a tuple would reach the unpacking below
            one_axis(name, axis)
        (ax,) = normalize_axes(name, axis, x.ndim) or (0,)
        self.axis = ax
        y = _unrows(logsoftmax_rows(_rows(x, ax), log=self.log), tuple(x.shape), ax)
        self.save_for_backward(out=y)
        return y

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """dL/dx from the saved output, by the row backward kernel."""
        (y,) = self.saved
        dx = logsoftmax_rows_backward(_rows(grad, self.axis), _rows(y, self.axis), log=self.log)
        return (_unrows(dx, tuple(y.shape), self.axis),)


class LogSoftmax(_AlongOneAxis):
    """log(softmax(x)) along `axis`, stable for large logits; backward: grad - softmax * sum(grad)."""

    log = True


class Softmax(_AlongOneAxis):
    """Normalized exponentials along `axis` (an optional op): saves its output alone, where
    LogSoftmax then Exp saved two arrays; backward: y * (grad - sum(grad * y))."""

    log = False
