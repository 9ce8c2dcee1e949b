"""Triton kernels for LayerNorm and BatchNorm, forward and backward, with launchers.

Every input is seen as a 2-D (rows, cols) matrix whose last axis holds the features.
LayerNorm's statistics run along a row, BatchNorm's down a column. Reductions over
rows are blocked: each program reduces a chunk of rows into one row of partial sums,
and a second kernel merges the partials; no atomics, so results are deterministic.
Launchers take torch tensors and allocate their outputs with torch; all math is Triton.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import triton
import triton.language as tl

from topgrad_triton.kernels.indexing import bound, needs_int64, widen
from topgrad_triton.runtime import in_many_blocks, interpreting, quarter, quiet

# ---------------------------------------------------------------------------- kernels


@triton.jit
def ln_fwd_kernel(X, Y, W, B, MEAN, RSTD, M, N, sxm, sxn, eps,
                  HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WIDE: tl.constexpr):
    """One program normalizes BLOCK_M whole rows (BLOCK_N >= N) and stores their mean and rstd.
    The mean is corrected by the deviations' own sum (the corrected two-pass mean), so a row far
    from zero loses nothing to its float32 sum, and a constant one normalizes to exactly 0.
    WIDE (as in every kernel here): int64 offsets."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = widen(tl.arange(0, BLOCK_N), WIDE)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxn, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    xc = tl.where(mask, x - mean[:, None], 0.0)
    shift = tl.sum(xc, axis=1) / N
    xc = tl.where(mask, xc - shift[:, None], 0.0)
    mean = mean + shift
    # sqrt_rn, here and in BatchNorm's: tl.sqrt is sqrt.approx.ftz on a GPU, and flushes a
    # subnormal var + eps (eps = 1e-40, a constant row) to 0, making 0 * inf = NaN
    rstd = 1.0 / tl.sqrt_rn(tl.sum(xc * xc, axis=1) / N + eps)
    y = xc * rstd[:, None]
    if HAS_W:
        y = y * tl.load(W + cols, mask=cmask, other=0.0)[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0)[None, :]
    tl.store(Y + rows[:, None] * N + cols[None, :], y, mask=mask)
    tl.store(MEAN + rows, mean, mask=rmask)
    tl.store(RSTD + rows, rstd, mask=rmask)


@triton.jit
def ln_bwd_kernel(X, DY, W, MEAN, RSTD, DX, PART, M, N, CHUNK, sxm, sxn, sdm, sdn,
                  HAS_W: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WIDE: tl.constexpr):
    """One program computes dx for CHUNK rows, BLOCK_M at a time, and stores the chunk's
    partial sums of dy*xhat (row 2r of PART) and of dy (row 2r+1) for dgamma and dbeta."""
    r = widen(tl.program_id(0), WIDE)
    cols = widen(tl.arange(0, BLOCK_N), WIDE)
    cmask = cols < N
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_N], dtype=tl.float32)
    row0 = r * CHUNK
    row_end = tl.minimum(row0 + CHUNK, M)
    for start in range(bound(row0), bound(row_end), BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        rmask = rows < row_end
        mask = rmask[:, None] & cmask[None, :]
        x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxn, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * sdm + cols[None, :] * sdn, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy
        if HAS_W:
            wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, axis=1) / N
        c2 = tl.sum(wdy, axis=1) / N
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DX + rows[:, None] * N + cols[None, :], dx, mask=mask)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(PART + (2 * r) * N + cols, dw, mask=cmask)
    tl.store(PART + (2 * r + 1) * N + cols, db, mask=cmask)


@triton.jit
def sum_rows_kernel(P, OUT, R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program sums the R rows of a contiguous (R, C) matrix for BLOCK_C columns."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for start in range(0, bound(R), BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        mask = (rows < R)[:, None] & cmask[None, :]
        acc += tl.load(P + rows[:, None] * C + cols[None, :], mask=mask, other=0.0)
    tl.store(OUT + cols, tl.sum(acc, axis=0), mask=cmask)


@triton.jit
def bn_partial_stats_kernel(X, PART, M, C, CHUNK, sxm, sxc,
                            BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """One program reduces CHUNK rows of BLOCK_C columns to the chunk's column mean (PART[r, 0])
    and its sum of squared deviations from that mean (PART[r, 1]). The mean is corrected by the
    deviations' own sum (the corrected two-pass mean): a float32 sum of values far from zero is
    off by ~1e-4 of the standard deviation where the mean is 100 of them."""
    r = widen(tl.program_id(0), WIDE)
    cols = widen(tl.program_id(1), WIDE) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    row0 = r * CHUNK
    row_end = tl.minimum(row0 + CHUNK, M)
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for start in range(bound(row0), bound(row_end), BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        acc += tl.load(X + rows[:, None] * sxm + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
    n = (row_end - row0).to(tl.float32)
    chunk_mean = tl.sum(acc, axis=0) / n
    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    acc_d = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for start in range(bound(row0), bound(row_end), BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - chunk_mean[None, :], 0.0)
        acc_d += d
        acc += d * d
    d_sum = tl.sum(acc_d, axis=0)
    corrected = tl.where(tl.abs(d_sum) < float("inf"), chunk_mean + d_sum / n, chunk_mean)  # Inf stays Inf
    tl.store(PART + (2 * r) * C + cols, corrected, mask=cmask)
    m2 = tl.maximum(tl.sum(acc, axis=0) - d_sum * d_sum / n, 0.0)
    tl.store(PART + (2 * r + 1) * C + cols, m2, mask=cmask)


@triton.jit
def bn_finalize_stats_kernel(PART, MEAN, RSTD, RM, RV, RM_OUT, RV_OUT, M, C, R, CHUNK, momentum, eps,
                             HAS_RM: tl.constexpr, HAS_RV: tl.constexpr,
                             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """One program merges the R chunk partials of BLOCK_C columns (Chan's parallel variance),
    stores mean and rstd, and the running mean and (unbiased) running variance updates. The
    chunk means are averaged as offsets from the first one, which are small, so the batch mean
    keeps their accuracy (a float32 sum of the means themselves would not)."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    first = tl.load(PART + cols, mask=cmask, other=0.0)
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    total = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for start in range(0, bound(R), BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        rmask = rows < R
        mask = rmask[:, None] & cmask[None, :]
        n = tl.where(rmask, tl.minimum(CHUNK, M - rows * CHUNK), 1).to(tl.float32)
        m = tl.load(PART + (2 * rows[:, None]) * C + cols[None, :], mask=mask, other=0.0)
        acc += tl.where(mask, n[:, None] * (m - first[None, :]), 0.0)
        total += tl.where(mask, n[:, None] * m, 0.0)
    mean = first + tl.sum(acc, axis=0) / M
    mean = tl.where(tl.abs(mean) < float("inf"), mean, tl.sum(total, axis=0) / M)  # an Inf first chunk
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for start in range(0, bound(R), BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        rmask = rows < R
        mask = rmask[:, None] & cmask[None, :]
        n = tl.where(rmask, tl.minimum(CHUNK, M - rows * CHUNK), 1).to(tl.float32)
        m = tl.load(PART + (2 * rows[:, None]) * C + cols[None, :], mask=mask, other=0.0)
        m2 = tl.load(PART + (2 * rows[:, None] + 1) * C + cols[None, :], mask=mask, other=0.0)
        d = m - mean[None, :]
        acc += tl.where(mask, m2 + n[:, None] * d * d, 0.0)
    m2 = tl.sum(acc, axis=0)
    tl.store(MEAN + cols, mean, mask=cmask)
    tl.store(RSTD + cols, 1.0 / tl.sqrt_rn(m2 / M + eps), mask=cmask)
    if HAS_RM:
        rm = tl.load(RM + cols, mask=cmask, other=0.0)
        tl.store(RM_OUT + cols, (1.0 - momentum) * rm + momentum * mean, mask=cmask)
    if HAS_RV:
        rv = tl.load(RV + cols, mask=cmask, other=0.0)
        tl.store(RV_OUT + cols, (1.0 - momentum) * rv + momentum * (m2 / (M - 1)), mask=cmask)


@triton.jit
def rstd_kernel(VAR, RSTD, C, eps, BLOCK_C: tl.constexpr):
    """One program turns BLOCK_C variances into 1 / sqrt(var + eps)."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    var = tl.load(VAR + cols, mask=cmask, other=0.0)
    tl.store(RSTD + cols, 1.0 / tl.sqrt_rn(var + eps), mask=cmask)


@triton.jit
def bn_apply_kernel(X, Y, W, B, MEAN, RSTD, M, C, sxm, sxc,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """One program writes y = (x - mean) * rstd * gamma + beta for a BLOCK_M x BLOCK_C tile."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = widen(tl.program_id(1), WIDE) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows < M)[:, None] & cmask[None, :]
    x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(RSTD + cols, mask=cmask, other=0.0)
    if HAS_W:
        scale = scale * tl.load(W + cols, mask=cmask, other=0.0)
    y = (x - tl.load(MEAN + cols, mask=cmask, other=0.0)[None, :]) * scale[None, :]
    if HAS_B:
        y = y + tl.load(B + cols, mask=cmask, other=0.0)[None, :]
    tl.store(Y + rows[:, None] * C + cols[None, :], y, mask=mask)


@triton.jit
def bn_partial_grad_kernel(X, DY, MEAN, RSTD, PART, M, C, CHUNK, sxm, sxc, sdm, sdc,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """One program sums dy*xhat (PART[r, 0]) and dy (PART[r, 1]) over CHUNK rows of BLOCK_C columns."""
    r = widen(tl.program_id(0), WIDE)
    cols = widen(tl.program_id(1), WIDE) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mean = tl.load(MEAN + cols, mask=cmask, other=0.0)
    rstd = tl.load(RSTD + cols, mask=cmask, other=0.0)
    row0 = r * CHUNK
    row_end = tl.minimum(row0 + CHUNK, M)
    dw = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
    for start in range(bound(row0), bound(row_end), BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * sdm + cols[None, :] * sdc, mask=mask, other=0.0).to(tl.float32)
        dw += dy * tl.where(mask, (x - mean[None, :]) * rstd[None, :], 0.0)
        db += dy
    tl.store(PART + (2 * r) * C + cols, tl.sum(dw, axis=0), mask=cmask)
    tl.store(PART + (2 * r + 1) * C + cols, tl.sum(db, axis=0), mask=cmask)


@triton.jit
def bn_bwd_dx_kernel(X, DY, W, MEAN, RSTD, SUMS, DX, M, C, sxm, sxc, sdm, sdc,
                     TRAINING: tl.constexpr, HAS_W: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr):
    """One program writes dx for a BLOCK_M x BLOCK_C tile; SUMS holds sum(dy*xhat) then sum(dy).
    Training: dx = gamma*rstd*(dy - (xhat*sum(dy*xhat) + sum(dy))/M); eval: dx = gamma*rstd*dy."""
    rows = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = widen(tl.program_id(1), WIDE) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    mask = (rows < M)[:, None] & cmask[None, :]
    dy = tl.load(DY + rows[:, None] * sdm + cols[None, :] * sdc, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(RSTD + cols, mask=cmask, other=0.0)
    scale = rstd
    if HAS_W:
        scale = rstd * tl.load(W + cols, mask=cmask, other=0.0)
    if TRAINING:
        x = tl.load(X + rows[:, None] * sxm + cols[None, :] * sxc, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + cols, mask=cmask, other=0.0)
        sum_dwx = tl.load(SUMS + cols, mask=cmask, other=0.0)
        sum_dy = tl.load(SUMS + C + cols, mask=cmask, other=0.0)
        xhat = (x - mean[None, :]) * rstd[None, :]
        dy = dy - (xhat * sum_dwx[None, :] + sum_dy[None, :]) / M
    tl.store(DX + rows[:, None] * C + cols[None, :], dy * scale[None, :], mask=mask)


# --------------------------------------------------------------------------- launchers


@dataclass(frozen=True)
class _Plan:
    """Block sizes and the row chunking of a blocked reduction over M rows."""

    block_m: int
    block_c: int
    chunk: int
    parts: int
    warps: int


def _plan(M: int, block_c: int, cells: int, max_parts: int) -> _Plan:
    """Rows per tile so a tile holds about `cells` elements; at most `max_parts` row chunks."""
    block_m = max(1, min(triton.next_power_of_2(max(M, 1)), cells // block_c))
    blocks = triton.cdiv(max(M, 1), block_m)
    chunk = triton.cdiv(blocks, min(blocks, max_parts)) * block_m
    warps = min(max(block_m * block_c // 256, 1), 8)
    return _Plan(block_m, block_c, chunk, triton.cdiv(max(M, 1), chunk), warps)


def _many_plan(M: int, block_c: int) -> _Plan:
    """Test-only (`runtime.many_blocks`): chunks of two tiles, about 2 to 4 chunks, so that three
    rows or more make several chunks, whose partials are merged, and a ragged last one."""
    block_m = max(1, quarter(M) // 2)
    chunk = 2 * block_m
    return _Plan(block_m=block_m, block_c=block_c, chunk=chunk, parts=triton.cdiv(max(M, 1), chunk), warps=1)


MAX_ROW = 2**20
"""The longest row LayerNorm's kernels take: a row is one block, and Triton's blocks hold at
most 2**20 elements (a longer one failed inside Triton, "numel exceeds triton maximum")."""


def _row_plan(M: int, N: int) -> _Plan:
    """LayerNorm: tiles of whole rows."""
    if N > MAX_ROW:
        raise ValueError(f"LayerNorm: the triton backend normalizes rows of at most {MAX_ROW} features "
                         f"(a row is one block of its kernels); this one has {N}. Use the numpy backend")
    if in_many_blocks():
        return _many_plan(M, triton.next_power_of_2(N))
    if interpreting():
        return _plan(M, triton.next_power_of_2(N), 2048, 2)
    return _plan(M, triton.next_power_of_2(N), 4096, 512)


def _col_plan(M: int, C: int) -> _Plan:
    """BatchNorm: tiles of BLOCK_C columns; the column grid times the row chunks fills the GPU."""
    if in_many_blocks():
        return _many_plan(M, quarter(C))
    if interpreting():
        return _plan(M, min(triton.next_power_of_2(C), 128), 4096, 3)
    block_c = min(triton.next_power_of_2(C), 32)
    return _plan(M, block_c, 2048, max(1, 1024 // triton.cdiv(C, block_c)))


def _merge_blocks(C: int, R: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_R) of the kernels that merge R rows of chunk partials of C columns."""
    if in_many_blocks():  # test-only
        return quarter(C), quarter(R)
    block_c = min(triton.next_power_of_2(C), 1024 if interpreting() else 128)
    return block_c, min(triton.next_power_of_2(max(R, 1)), 64 if interpreting() else 16)


def _sum_rows(part: Any, out: Any) -> Any:
    """Sum a contiguous (R, C) matrix over its rows into `out` (C,)."""
    R, C = part.shape
    block_c, block_r = _merge_blocks(C, R)
    with quiet():
        sum_rows_kernel[(triton.cdiv(C, block_c),)](part, out, R, C, BLOCK_R=block_r, BLOCK_C=block_c)
    return out


def layernorm_forward(x: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any]:
    """x (M, N) -> (y (M, N) contiguous, mean (M,), rstd (M,)); w and b may be None."""
    M, N = x.shape
    y, mean, rstd = x.new_empty((M, N)), x.new_empty((M,)), x.new_empty((M,))
    if M == 0:
        return y, mean, rstd
    p = _row_plan(M, N)
    with quiet():
        ln_fwd_kernel[(triton.cdiv(M, p.block_m),)](
            x, y, w, b, mean, rstd, M, N, x.stride(0), x.stride(1), float(eps),
            HAS_W=w is not None, HAS_B=b is not None, BLOCK_M=p.block_m, BLOCK_N=p.block_c,
            WIDE=needs_int64(x, y), num_warps=p.warps,
        )
    return y, mean, rstd


def layernorm_backward(x: Any, w: Any, mean: Any, rstd: Any, dy: Any) -> tuple[Any, Any, Any]:
    """Returns dx (M, N), dgamma (N,), dbeta (N,) for LayerNorm over the rows of x."""
    M, N = x.shape
    p = _row_plan(M, N)
    dx = x.new_empty((M, N))
    part = x.new_empty((2 * p.parts, N))
    if M == 0:
        part = x.new_empty((0, 2 * N))
    else:
        with quiet():
            ln_bwd_kernel[(p.parts,)](
                x, dy, w, mean, rstd, dx, part, M, N, p.chunk,
                x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
                HAS_W=w is not None, BLOCK_M=p.block_m, BLOCK_N=p.block_c, WIDE=needs_int64(x, dy, dx),
                num_warps=p.warps,
            )
    sums = _sum_rows(part.view(-1, 2 * N), x.new_empty((2 * N,)))
    return dx, sums[:N], sums[N:]


def batchnorm_stats(
    x: Any, eps: float, momentum: float,
    rm: Any = None, rv: Any = None, rm_out: Any = None, rv_out: Any = None,
) -> tuple[Any, Any]:
    """Batch mean and rstd of the columns of x (M, C), M >= 2.

    Where `rm`/`rv` (C,) are given, the momentum update of each (unbiased variance for
    `rv`) is written into `rm_out`/`rv_out`, which may be `rm`/`rv` themselves.
    """
    M, C = x.shape
    p = _col_plan(M, C)
    part = x.new_empty((2 * p.parts, C))
    with quiet():
        bn_partial_stats_kernel[(p.parts, triton.cdiv(C, p.block_c))](
            x, part, M, C, p.chunk, x.stride(0), x.stride(1),
            BLOCK_M=p.block_m, BLOCK_C=p.block_c, WIDE=needs_int64(x), num_warps=p.warps,
        )
    mean, rstd = x.new_empty((C,)), x.new_empty((C,))
    block_c, block_r = _merge_blocks(C, p.parts)
    with quiet():
        bn_finalize_stats_kernel[(triton.cdiv(C, block_c),)](
            part, mean, rstd, rm, rv, rm_out, rv_out, M, C, p.parts, p.chunk, float(momentum), float(eps),
            HAS_RM=rm is not None, HAS_RV=rv is not None, BLOCK_R=block_r, BLOCK_C=block_c,
        )
    return mean, rstd


def rstd_from_var(var: Any, eps: float) -> Any:
    """1 / sqrt(var + eps) for a (C,) tensor (BatchNorm in eval mode)."""
    (C,) = var.shape
    rstd = var.new_empty((C,))
    block_c = min(triton.next_power_of_2(C), quarter(C) if in_many_blocks() else 1024)
    with quiet():
        rstd_kernel[(triton.cdiv(C, block_c),)](var, rstd, C, float(eps), BLOCK_C=block_c)
    return rstd


def batchnorm_apply(x: Any, w: Any, b: Any, mean: Any, rstd: Any) -> Any:
    """y = (x - mean) * rstd * w + b over the columns of x (M, C); returns a contiguous (M, C)."""
    M, C = x.shape
    y = x.new_empty((M, C))
    if M == 0:
        return y
    p = _col_plan(M, C)
    with quiet():
        bn_apply_kernel[(triton.cdiv(M, p.block_m), triton.cdiv(C, p.block_c))](
            x, y, w, b, mean, rstd, M, C, x.stride(0), x.stride(1),
            HAS_W=w is not None, HAS_B=b is not None, BLOCK_M=p.block_m, BLOCK_C=p.block_c,
            WIDE=needs_int64(x, y), num_warps=p.warps,
        )
    return y


def batchnorm_backward(x: Any, w: Any, mean: Any, rstd: Any, dy: Any, training: bool) -> tuple[Any, Any, Any]:
    """Returns dx (M, C), dgamma (C,), dbeta (C,); `training` says whether mean/rstd were batch stats."""
    M, C = x.shape
    p = _col_plan(M, C)
    part = x.new_empty((2 * p.parts, C))
    if M == 0:
        part = x.new_empty((0, 2 * C))
    else:
        with quiet():
            bn_partial_grad_kernel[(p.parts, triton.cdiv(C, p.block_c))](
                x, dy, mean, rstd, part, M, C, p.chunk, x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
                BLOCK_M=p.block_m, BLOCK_C=p.block_c, WIDE=needs_int64(x, dy), num_warps=p.warps,
            )
    sums = _sum_rows(part.view(-1, 2 * C), x.new_empty((2 * C,)))
    dx = x.new_empty((M, C))
    if M:
        with quiet():
            bn_bwd_dx_kernel[(triton.cdiv(M, p.block_m), triton.cdiv(C, p.block_c))](
                x, dy, w, mean, rstd, sums, dx, M, C, x.stride(0), x.stride(1), dy.stride(0), dy.stride(1),
                TRAINING=training, HAS_W=w is not None, BLOCK_M=p.block_m, BLOCK_C=p.block_c,
                WIDE=needs_int64(x, dy, dx), num_warps=p.warps,
            )
    return dx, sums[:C], sums[C:]
