"""Sum and Mean over any axes; their gradients broadcast the upstream gradient back."""

from __future__ import annotations

import math
from typing import Any

import torch

from topgrad_triton.kernels.elementwise import broadcast_to, contiguous
from topgrad_triton.kernels.reduce import sum_axes
from topgrad_triton.ops.base import TritonOp, check_tensors
from topgrad_triton.shapes import normalize_axes


class _Reduce(TritonOp):
    mean = False

    def forward(self, x: torch.Tensor, axis: Any = None, keepdims: bool = False) -> torch.Tensor:
        name = type(self).__name__
        check_tensors(name, x=x)
        axes = normalize_axes(name, axis, x.ndim)
        count = math.prod(x.shape[d] for d in axes)
        self.scale = (1.0 / count if count else float("nan")) if self.mean else 1.0
        self.shape, self.axes = tuple(x.shape), axes
        return sum_axes(x, axes, keepdims, self.scale)

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        kept = tuple(1 if d in self.axes else s for d, s in enumerate(self.shape))
        g = contiguous(grad).view(kept)
        return (broadcast_to(g, self.shape, self.scale if self.mean else None),)


class Sum(_Reduce):
    """x summed over `axis` (int, tuple or None for all); a full sum is a 0-d array."""


class Mean(_Reduce):
    """x averaged over `axis` (int, tuple or None for all)."""

    mean = True
