"""The Backend object: the op table and the array helpers, all in float64 numpy."""

from typing import Any

import numpy as np
import topgrad

from topgrad_float64 import ops


class Float64Backend(topgrad.Backend):
    """Every array is a float64 numpy array, whatever dtype is asked for: that is its purpose."""

    name = "float64"
    ops = ops

    def asarray(self, obj: Any, dtype: str = "float32") -> np.ndarray:
        return np.array(obj, dtype=np.float64)  # a copy: ops never share memory with the caller

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.array(a)

    def full(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    def randn(self, shape: tuple[int, ...], seed: int | None = None) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal(shape)

    def add(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray(np.add(a, b))  # numpy gives a scalar for 0-d operands

    def sub(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray(np.subtract(a, b))

    def mul(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray(np.multiply(a, b))

    def div(self, a: Any, b: Any) -> np.ndarray:
        return np.asarray(np.divide(a, b))

    def sqrt(self, a: Any) -> np.ndarray:
        return np.asarray(np.sqrt(a))
