"""Row-wise log-softmax and softmax (LOG: which), forward and backward, over the last axis of a
dense (M, N) array.

Both kernels stream a row in BLOCK_N chunks, so N is not limited by a block size:
the forward keeps a running max and a rescaled running sum (stable for large logits).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import bound, needs_int64, widen


@triton.jit
def _logsoftmax_fwd_kernel(x_ptr, y_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           WIDE: tl.constexpr, LOG: tl.constexpr = True):
    """One program handles BLOCK_M rows: y = (x - max(x)) - log(sum(exp(x - max(x)))), in that
    order: max(x) + log(...) first would lose the log in float32 once |max| >> it (logits of 1e4);
    LOG=False, softmax: y = exp(x - max(x)) / sum(exp(x - max(x))). WIDE: int64 offsets."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, bound(N), BLOCK_N):
        c = start + cols
        mask = row_ok[:, None] & (c[None, :] < N)
        x = tl.load(x_ptr + rows[:, None] * N + c[None, :], mask=mask, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
        m = m_new
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    log_s = tl.log(s)
    for start in range(0, bound(N), BLOCK_N):
        c = start + cols
        mask = row_ok[:, None] & (c[None, :] < N)
        x = tl.load(x_ptr + rows[:, None] * N + c[None, :], mask=mask, other=0.0)
        if LOG:
            y = (x - m_safe[:, None]) - log_s[:, None]
        else:
            y = tl.exp(x - m_safe[:, None]) / s[:, None]
        tl.store(y_ptr + rows[:, None] * N + c[None, :], y, mask=mask)


@triton.jit
def _logsoftmax_bwd_kernel(g_ptr, y_ptr, dx_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           WIDE: tl.constexpr, LOG: tl.constexpr = True):
    """One program handles BLOCK_M rows, y the forward output: dx = g - exp(y) * sum(g); LOG=False
    (softmax), dx = y * (g - sum(g * y)). WIDE: int64 offsets."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    total = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, bound(N), BLOCK_N):
        c = start + cols
        mask = row_ok[:, None] & (c[None, :] < N)
        offs = rows[:, None] * N + c[None, :]
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        if not LOG:
            g = g * tl.load(y_ptr + offs, mask=mask, other=0.0)
        total += tl.sum(g, axis=1)
    for start in range(0, bound(N), BLOCK_N):
        c = start + cols
        mask = row_ok[:, None] & (c[None, :] < N)
        offs = rows[:, None] * N + c[None, :]
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0)
        if LOG:
            dx = g - tl.exp(y) * total[:, None]
        else:
            dx = y * (g - total[:, None])
        tl.store(dx_ptr + offs, dx, mask=mask)


def _blocks(M: int, N: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): rows per program, and the columns of a row each step of its loop reads."""
    block_n = min(triton.next_power_of_2(max(N, 1)), runtime.block(1024, 1 << 14, many=runtime.quarter(N)))
    tile = runtime.block(4096, 1 << 16, many=runtime.quarter(M) * block_n)
    block_m = max(1, min(triton.next_power_of_2(max(M, 1)), tile // block_n))
    return block_m, block_n


def logsoftmax_rows(x: torch.Tensor, log: bool = True) -> torch.Tensor:
    """Log-softmax (or, `log=False`, softmax) of each row of the dense (M, N) array x."""
    M, N = x.shape
    y = torch.empty_like(x)
    if M * N:
        bm, bn = _blocks(M, N)
        with runtime.quiet():
            _logsoftmax_fwd_kernel[(triton.cdiv(M, bm),)](
                x, y, M, N, BLOCK_M=bm, BLOCK_N=bn, WIDE=needs_int64(M * N), LOG=log, num_warps=4)
    return y


def logsoftmax_rows_backward(g: torch.Tensor, y: torch.Tensor, log: bool = True) -> torch.Tensor:
    """Gradient of log-softmax (or, `log=False`, softmax) over rows, from the upstream gradient g
    and the output y (dense, (M, N))."""
    M, N = y.shape
    dx = torch.empty_like(y)
    if M * N:
        bm, bn = _blocks(M, N)
        with runtime.quiet():  # an infinite gradient: inf - inf is NaN, as in PyTorch, unwarned
            _logsoftmax_bwd_kernel[(triton.cdiv(M, bm),)](
                g, y, dx, M, N, BLOCK_M=bm, BLOCK_N=bn, WIDE=needs_int64(M * N), LOG=log, num_warps=4)
    return dx
