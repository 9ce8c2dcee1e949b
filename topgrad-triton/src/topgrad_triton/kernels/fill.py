"""Initialization kernels: fill with a constant, and standard-normal samples from a seed (Philox)."""

from __future__ import annotations

import math
import random

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime


@triton.jit
def _fill_kernel(out_ptr, value, n, BLOCK: tl.constexpr):
    """One program sets BLOCK consecutive elements of out to `value`."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros([BLOCK], tl.float32) + value, mask=offs < n)


@triton.jit
def _randn_kernel(out_ptr, seed, n, BLOCK: tl.constexpr):
    """One program writes BLOCK standard-normal samples: element i is Philox(seed, counter i)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.randn(seed, offs), mask=offs < n)


def full(shape: tuple[int, ...], value: float) -> torch.Tensor:
    """A new float32 array of `shape` filled with `value`."""
    out = torch.empty(tuple(shape), dtype=torch.float32, device=runtime.device())
    n = math.prod(shape)
    if n:
        block = runtime.block(1024, 1 << 16)
        _fill_kernel[(triton.cdiv(n, block),)](out, float(value), n, BLOCK=block)
    return out


def randn(shape: tuple[int, ...], seed: int | None = None) -> torch.Tensor:
    """A new float32 array of standard-normal samples; the same seed gives the same array on any device."""
    if seed is None:
        seed = random.SystemRandom().randrange(1, 2**31 - 1)
    out = torch.empty(tuple(shape), dtype=torch.float32, device=runtime.device())
    n = math.prod(shape)
    if n:
        block = runtime.block(1024, 1 << 16)
        with runtime.quiet():
            _randn_kernel[(triton.cdiv(n, block),)](out, int(seed) % (2**31 - 1), n, BLOCK=block)
    return out
