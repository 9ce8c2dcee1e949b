"""Index width and grid shape: what every launcher decides before it launches.

Triton computes `tl.program_id` and `tl.arange` in int32, so an element offset of 2**31 or
more (an array of 8 GiB of float32, or a strided view spanning that much) wraps to a negative
address. Launchers ask `needs_int64` and pass the answer as the kernels' `WIDE` constexpr;
kernels `widen` their index bases then, and stay in fast int32 otherwise (two compiles at most).
CUDA grids allow 2**31 - 1 programs along x but only 65535 along y and z: a batch goes on x.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from topgrad_triton.runtime import interpreting

INT32_LIMIT = 2**31
"""The first element offset int32 cannot hold."""

GRID_YZ_LIMIT = 65535
"""The most programs a CUDA grid has along y or z."""

INTERPRETED = tl.constexpr(interpreting())
"""Whether Triton's interpreter runs the kernels (read by `bound`, a branch dropped when compiled)."""


def span(x: Any) -> int:
    """How many elements a tensor's offsets reach, from its first one: 1 + sum((size-1) * stride)."""
    if x.numel() == 0:
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(x.shape, x.stride()))


def needs_int64(*operands: Any) -> bool:
    """Whether a count (an int) or a tensor's offsets (`span`) reach INT32_LIMIT; None is skipped."""
    for x in operands:
        if x is None or isinstance(x, float):
            continue
        if (x if isinstance(x, int) else span(x)) >= INT32_LIMIT:
            return True
    return False


@triton.jit
def widen(i, WIDE: tl.constexpr):
    """`i` as int64 when WIDE (offsets built on it may pass 2**31 - 1), else unchanged."""
    if WIDE:
        i = i.to(tl.int64)
    return i


@triton.jit
def bound(n):
    """A runtime integer `n` as a `range` bound: unchanged when compiled; in the interpreter a
    Python int, as Triton 3.7+ makes it (3.2-3.6 call int() on its 1-element array, which numpy
    2.4 refuses: "only 0-dimensional arrays can be converted to Python scalars"). No assignment
    here: the interpreter turns every assigned value back into a tensor."""
    if INTERPRETED:
        return int(n.handle.data.item()) if isinstance(n, tl.tensor) else n
    else:
        return n
