"""Sums and maxima over any axes: the axes to keep and to reduce become the rows and columns of
a 2-D view.

The input is permuted (a view) so that kept axes come first; when the kept axes, and the
reduced axes, each walk memory with one stride, the kernel reads the view in place,
otherwise the strided copy kernel makes it dense first. One kernel then sums (or takes the
maximum of) each row.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.kernels.indexing import bound, needs_int64, widen
from topgrad_triton.shapes import kept_shape, single_stride


@triton.jit
def _reduce_rows_kernel(x_ptr, out_ptr, K, R, stride_k, stride_r, chunk, splits, scale,
                        MAX: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr, WIDE: tl.constexpr):
    """One program reduces BLOCK_K rows of the (K, R) view over column chunk s = program_id(1):
    out[k, s] = scale * sum (or, with MAX, the maximum) of x[k, r] for r in [s*chunk, (s+1)*chunk);
    out is (K, splits). A maximum is NaN where the chunk has a NaN, as torch.amax, on a GPU too
    (whose max instruction would skip it). WIDE: int64 offsets."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_K + tl.arange(0, BLOCK_K)
    first = widen(tl.program_id(1), WIDE) * chunk
    cols = widen(tl.arange(0, BLOCK_R), WIDE)
    if MAX:
        acc = tl.full([BLOCK_K, BLOCK_R], float("-inf"), tl.float32)
        nans = tl.zeros([BLOCK_K, BLOCK_R], tl.int32)
    else:
        acc = tl.zeros([BLOCK_K, BLOCK_R], tl.float32)
    for start in range(0, bound(chunk), BLOCK_R):
        c = first + start + cols
        mask = (rows[:, None] < K) & (c[None, :] < R) & (c[None, :] < first + chunk)
        ptrs = x_ptr + rows[:, None] * stride_k + c[None, :] * stride_r
        if MAX:
            v = tl.load(ptrs, mask=mask, other=float("-inf"))
            acc = tl.maximum(acc, v)
            nans = tl.where(v != v, 1, nans)
        else:
            acc += tl.load(ptrs, mask=mask, other=0.0)
    if MAX:
        out = tl.where(tl.max(nans, axis=1) > 0, float("nan"), tl.max(acc, axis=1))
    else:
        out = tl.sum(acc, axis=1) * scale
    tl.store(out_ptr + rows * splits + tl.program_id(1), out, mask=rows < K)


def reduce_rows(
    x: torch.Tensor, K: int, R: int, stride_k: int, stride_r: int, scale: float = 1.0,
    maximum: bool = False,
) -> torch.Tensor:
    """out[k] = scale * sum_r x[k*stride_k + r*stride_r] (with `maximum`: max_r), a new array of
    K elements.

    On a GPU, few long rows are split into column chunks reduced by separate programs,
    whose partial results a second pass reduces; the interpreter prefers one pass (and tests'
    `runtime.many_blocks` splits every row longer than two blocks).
    """
    out = torch.empty((K,), dtype=torch.float32, device=x.device)
    if K == 0:
        return out
    many_r = max(1, runtime.quarter(R) // 2)  # test-only `many_blocks`: chunks of two blocks (below)
    tile = runtime.block(4096, 1 << 16, many=runtime.quarter(K) * many_r)
    block_r = min(triton.next_power_of_2(max(R, 1)), runtime.block(512, 1 << 14, many=many_r))
    block_k = max(1, min(triton.next_power_of_2(K), tile // block_r))
    row_programs = triton.cdiv(K, block_k)
    splits = 1
    if runtime.in_many_blocks():  # test-only: chunks of two blocks, so a row of 3 or more splits
        splits = max(1, triton.cdiv(R, 2 * block_r))
    elif not runtime.interpreting() and row_programs < 128 and R > 16 * block_r:
        splits = min(triton.cdiv(R, 8 * block_r), max(1, 1024 // row_programs))
    chunk = triton.cdiv(triton.cdiv(R, splits), block_r) * block_r
    partial = out if splits == 1 else torch.empty((K, splits), dtype=torch.float32, device=x.device)
    with runtime.quiet():
        _reduce_rows_kernel[(row_programs, splits)](
            x, partial, K, R, stride_k, stride_r, max(chunk, 1), splits, float(scale),
            MAX=maximum, BLOCK_K=block_k, BLOCK_R=block_r, WIDE=needs_int64(x, partial), num_warps=4,
        )
    return out if splits == 1 else reduce_rows(partial, K, splits, splits, 1, maximum=maximum)


def reduce_axes(
    x: torch.Tensor, axes: tuple[int, ...], keepdims: bool = False, scale: float = 1.0,
    maximum: bool = False, name: str = "reduce",
) -> torch.Tensor:
    """scale * x summed over `axes` (sorted, non-negative), or with `maximum` its maximum there,
    as a new dense array (`name`, the op, is named in its errors)."""
    keep = [d for d in range(x.ndim) if d not in axes]
    xp = x.permute((*keep, *axes))
    K = math.prod(x.shape[d] for d in keep)
    R = math.prod(x.shape[d] for d in axes)
    k_dim = single_stride([x.shape[d] for d in keep], [x.stride(d) for d in keep])
    r_dim = single_stride([x.shape[d] for d in axes], [x.stride(d) for d in axes])
    if k_dim is None or r_dim is None:
        xp = contiguous(xp, name)
        k_dim, r_dim = (K, R), (R, 1)
    out = reduce_rows(xp, K, R, k_dim[1], r_dim[1], scale, maximum)
    shape = kept_shape(x.shape, axes) if keepdims else tuple(x.shape[d] for d in keep)
    return out.view(shape)


def reduce_to_shape(grad: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Sum a broadcast gradient back to a parent's `shape` (the adjoint of broadcasting)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
    return reduce_axes(grad, axes).view(shape)
