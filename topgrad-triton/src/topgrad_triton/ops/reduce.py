"""Sum, Mean and Max over any axes; their gradients broadcast the upstream gradient back (Max's
to the elements that reached the maximum)."""

from __future__ import annotations

import math
from typing import Any

import torch
from topgrad.arguments import flag

from topgrad_triton.kernels import elementwise as ew
from topgrad_triton.kernels.elementwise import broadcast_to, contiguous
from topgrad_triton.kernels.reduce import reduce_axes
from topgrad_triton.ops.base import TritonOp, check_tensors
from topgrad_triton.shapes import kept_shape, normalize_axes


class _Reduce(TritonOp):
    mean = False

    def forward(self, x: torch.Tensor, axis: Any = None, keepdims: bool = False) -> torch.Tensor:
        """x summed (or averaged) over the normalized axes by the reduction kernel."""
        name = type(self).__name__
        check_tensors(name, x=x)
        keepdims = flag(name, "keepdims", keepdims)
        axes = normalize_axes(name, axis, x.ndim)
        count = math.prod(x.shape[d] for d in axes)
        self.scale = (1.0 / count if count else float("nan")) if self.mean else 1.0
        self.shape, self.axes = tuple(x.shape), axes
        return reduce_axes(x, axes, keepdims, self.scale, name=name)

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """grad broadcast back to x's shape (scaled by 1 / count for a mean)."""
        kept = kept_shape(self.shape, self.axes)
        g = contiguous(grad).view(kept)
        return (broadcast_to(g, self.shape, self.scale if self.mean else None),)


class Sum(_Reduce):
    """x summed over `axis` (int, tuple or None for all); a full sum is a 0-d array."""


class Mean(_Reduce):
    """x averaged over `axis` (int, tuple or None for all)."""

    mean = True


class Max(TritonOp):
    """The maximum over `axis` (int, tuple or None for all), as torch.amax: the elements that tie
    for it share the gradient equally, and a NaN makes it NaN. Saves x and the output."""

    def forward(self, x: torch.Tensor, axis: Any = None, keepdims: bool = False) -> torch.Tensor:
        """The maximum over the axes (an error over an empty axis, as in PyTorch); saves x and it."""
        check_tensors("Max", x=x)
        keepdims = flag("Max", "keepdims", keepdims)
        axes = normalize_axes("Max", axis, x.ndim)
        empty = [d for d in axes if x.shape[d] == 0]
        if empty:
            raise ValueError(f"Max: x of shape {tuple(x.shape)} has no elements along axis {empty[0]}, "
                             "and a maximum over nothing has no value (torch.amax refuses it too)")
        self.shape, self.axes = tuple(x.shape), axes
        out = reduce_axes(x, axes, keepdims, maximum=True, name="Max")
        self.save_for_backward(x=x, out=out)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """grad shared equally among the elements equal to the maximum."""
        x, out = self.saved
        kept = kept_shape(self.shape, self.axes)
        mask = ew.elementwise(ew.EQUAL, x, out.view(kept), name="Max")
        ties = reduce_axes(mask, self.axes, True, name="Max")
        share = ew.elementwise(ew.DIV, contiguous(grad).view(kept), ties, name="Max")
        return (ew.elementwise(ew.MUL, mask, share, name="Max"),)
