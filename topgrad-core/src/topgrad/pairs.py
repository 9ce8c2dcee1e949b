"""(h, w) pairs: how the 2-d ops (Conv2d, MaxPool2d) take a kernel size, stride or padding, as
PyTorch does (one int for both axes, or one per axis), checked in one place for every backend,
and the output size they give."""

from __future__ import annotations

import numbers
from typing import Any

Pair = tuple[int, int]


def pair(op: str, name: str, value: Any, low: int) -> Pair:
    """An (h, w) pair of ints >= `low`, from one int for both axes or a pair of them; ValueError
    naming `op` for anything else (a bool, a string, a triple)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low for v in values
    ):
        raise ValueError(f"{op}: {name} must be an int >= {low} or an (h, w) pair of them, got {value!r}")
    return int(values[0]), int(values[1])


def output_size(size: Pair, window: Pair, stride: Pair, padding: Pair) -> Pair:
    """(OH, OW): where a window slides over an image of `size` (H, W) padded on both sides, how
    many positions it takes along each axis (below 1 where it does not fit)."""
    oh, ow = ((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, window, stride, padding))
    return oh, ow
