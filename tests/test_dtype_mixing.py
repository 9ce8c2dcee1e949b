"""Operands of mixed kinds (0-d numpy arrays, float32 against float64): `x - a` must answer as
`x + (-a)` does, on every backend, whatever numpy makes of `-a`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import float64_tensor
from topgrad import Tensor


def _outcome(compute: Callable[[], Tensor]) -> tuple[Any, ...]:
    """What a computation gave: its dtype, values and signs (-0.0), or its error's type and message."""
    try:
        out = compute()
    except Exception as exc:  # the two sides must fail alike where they fail
        return type(exc), str(exc)
    return str(out.dtype), out.numpy().tolist(), np.signbit(out.numpy()).tolist()


@pytest.mark.parametrize("a", [np.array(0.5, np.float32), np.array(0.5), np.array(-0.0)],
                         ids=["float32", "float64", "minus-zero"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_subtracting_a_0d_array_is_adding_its_negative(a: np.ndarray, dtype: str) -> None:
    """numpy's -a of a 0-d array is a numpy scalar, which the ops take as a number: `t64 - a` was
    float64 where `t64 + a` was float32, and the triton backend took `x - a` while refusing `x + a`
    (it takes no raw numpy arrays). -a stays a 0-d array now, so both sides agree."""
    x = Tensor([1.0, -0.0, 3.0]) if dtype == "float32" else float64_tensor([1.0, -0.0, 3.0])
    negative = np.negative(a, out=np.empty((), a.dtype))  # a 0-d array, as x - a now adds
    assert _outcome(lambda: x - a) == _outcome(lambda: x + negative)
