"""Shape changes without arithmetic: Reshape and Permute."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op


class Reshape(Op):
    """x viewed with a new shape (-1 allowed; copies only if x is not contiguous); saves the shape."""

    def forward(self, x: np.ndarray, shape: Any = ()) -> np.ndarray:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        try:
            out = x.reshape(shape)
        except (ValueError, TypeError):
            raise ValueError(
                f"Reshape: cannot reshape an array of shape {x.shape} ({x.size} elements) "
                f"into shape {shape}"
            ) from None
        self.in_shape = x.shape
        return out

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        return (grad.reshape(self.in_shape),)


class Permute(Op):
    """x with its axes reordered into a C-contiguous array (a copy unless the order leaves memory
    as it is), so later ops and `.grad` get dense arrays; saves the inverse order for backward."""

    def forward(self, x: np.ndarray, axes: Any = ()) -> np.ndarray:
        axes = tuple(axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"Permute: axes {axes} are no ordering of the axes of shape {x.shape}")
        self.inverse = tuple(np.argsort(axes).tolist())
        return _dense(x.transpose(axes))

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        return (_dense(np.transpose(grad, self.inverse)),)


def _dense(a: np.ndarray) -> np.ndarray:
    """`a`, or a C-contiguous copy (np.ascontiguousarray would turn a 0-d array into 1-d)."""
    return a if a.flags.c_contiguous else a.copy()
