"""Central differences in float64, to check the kit's own reference gradients.

For ops beyond the table, `topgrad.gradcheck` checks a backend's backward the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def numeric_vjp(f: Callable[..., Any], args: list[Any], index: int, g: Any, h: float = 1e-6) -> Any:
    """d(sum(f(*args) * g)) / d(args[index]) by central differences, in float64."""
    x = args[index]
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + h
        plus = np.sum(f(*args) * g)
        x[i] = saved - h
        minus = np.sum(f(*args) * g)
        x[i] = saved
        grad[i] = (plus - minus) / (2 * h)
    return grad

