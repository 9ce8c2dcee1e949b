"""Initialization kernels: fill with a constant, and standard-normal samples from a seed (Philox)."""

from __future__ import annotations

import math
import random

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import needs_int64, widen


@triton.jit
def _fill_kernel(out_ptr, value, n, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """One program sets BLOCK consecutive elements of out to `value` (WIDE: int64 offsets)."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.full([BLOCK], value, tl.float32), mask=offs < n)  # not 0 + value: -0.0


@triton.jit
def _randn_kernel(out_ptr, seed, n, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """One program writes BLOCK standard-normal samples: element i is Philox(seed, counter i mod 2**32),
    the counter in 32 bits whatever the width of the offsets (WIDE: int64), so the stream is one."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.randn(seed, offs.to(tl.int32)), mask=offs < n)


def full(shape: tuple[int, ...], value: float) -> torch.Tensor:
    """A new float32 array of `shape` filled with `value`."""
    out = torch.empty(tuple(shape), dtype=torch.float32, device=runtime.device())
    n = math.prod(shape)
    if n:
        block = runtime.block(1024, 1 << 16, many=runtime.quarter(n))
        with runtime.quiet():
            _fill_kernel[(triton.cdiv(n, block),)](out, float(value), n, BLOCK=block, WIDE=needs_int64(n))
    return out


def randn(shape: tuple[int, ...], seed: int | None = None) -> torch.Tensor:
    """A new float32 array of standard-normal samples; the same seed gives the same array on any device."""
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    out = torch.empty(tuple(shape), dtype=torch.float32, device=runtime.device())
    n = math.prod(shape)
    if n:
        block = runtime.block(1024, 1 << 16, many=runtime.quarter(n))
        with runtime.quiet():
            _randn_kernel[(triton.cdiv(n, block),)](out, int(seed) % (2**31 - 1), n, BLOCK=block,
                                                    WIDE=needs_int64(n))
    return out
