"""Shape changes without arithmetic: Reshape."""

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
