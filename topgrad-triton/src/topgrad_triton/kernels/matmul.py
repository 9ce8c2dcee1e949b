"""Tiled matrix multiply C = A @ B (+ bias) with `tl.dot`; A and B are read through their strides.

A transpose is therefore free: pass `w.t()` (a view) and the kernel reads it by stride.
The `tl.dot` input precision is exact fp32 ("ieee") unless TF32 is chosen (see
`topgrad_triton.precision`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import bound, needs_int64, widen
from topgrad_triton.precision import get_precision


@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    WIDE: tl.constexpr,
):
    """One program computes a BLOCK_M x BLOCK_N tile of the dense C = A @ B (+ bias), looping over K
    (WIDE: int64 offsets)."""
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row-tiles share B's column tiles while they sit in L2.
    group = pid // (GROUP_M * grid_n)
    first_m = group * GROUP_M
    group_size = tl.minimum(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size)
    pid_n = (pid % (GROUP_M * grid_n)) // group_size

    rm = widen(pid_m, WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = widen(pid_n, WIDE) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = widen(tl.arange(0, BLOCK_K), WIDE)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, bound(K), BLOCK_K):
        k = k0 + rk
        a = tl.load(a_ptr + rm[:, None] * stride_am + k[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (k[None, :] < K), other=0.0)
        b = tl.load(b_ptr + k[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=(k[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0)[None, :]
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm[:, None] < M) & (rn[None, :] < N))


def _block(dim: int, cap: int) -> int:
    """The smallest power of two >= dim, within [16, cap]: tl.dot's smallest side is 16 on a GPU."""
    return max(16, min(triton.next_power_of_2(max(dim, 1)), cap))


def _half(dim: int) -> int:
    """The power of two that splits a side of `dim` into two blocks (test-only plan; see `blocks`)."""
    return max(runtime.dot_block(), triton.next_power_of_2(triton.cdiv(dim, 2)))


#: Interpreter tiles: up to 2**21 elements of BLOCK_M * BLOCK_N * BLOCK_K, stretched along
#: the long side of skinny products (numpy is fast per call, Python per program is slow).
_INTERPRETER_VOLUME = 1 << 21


def blocks(M: int, N: int, K: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): 64/64/32 on a GPU; under the interpreter, big volume-bounded tiles;
    under tests' `runtime.many_blocks`, two blocks along each side (the second one ragged
    unless the side is a power of two), no smaller than tl.dot takes: a program loops over K."""
    if runtime.in_many_blocks():
        return _half(M), _half(N), _half(K)
    if not runtime.interpreting():
        return _block(M, 64), _block(N, 64), _block(K, 32)
    bn, bk = _block(N, 128), _block(K, 128)
    bm = _block(M, max(128, _INTERPRETER_VOLUME // (bn * bk)))
    bk = _block(K, max(128, _INTERPRETER_VOLUME // (bm * bn)))
    return bm, bn, bk


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A new dense (M, N) array a @ b (+ bias); a (M, K) and b (K, N) may be any strided views."""
    M, K = a.shape
    K2, N = b.shape
    if K != K2:
        raise ValueError(f"matmul: inner dimensions differ, shapes {tuple(a.shape)} and {tuple(b.shape)}")
    c = torch.empty((M, N), dtype=torch.float32, device=a.device)
    if M == 0 or N == 0:
        return c
    bm, bn, bk = blocks(M, N, K)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    with runtime.quiet():
        _matmul_kernel[grid](
            a, b, c, bias if bias is not None else c, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1),
            HAS_BIAS=bias is not None, PRECISION=get_precision(),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, WIDE=needs_int64(a, b, c), num_warps=4,
        )
    return c
