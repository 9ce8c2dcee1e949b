"""Fused single-head attention, flash-attention style: softmax(q kᵀ / √D) v, optional causal mask;
q and k have D features, v a width DV of its own (the output's).

Forward streams over key blocks with an online softmax and saves only the output and, per
query row, the maximum score m and log l, the log of the sum of exp(score - m); no T x S
matrix ever reaches memory. Backward recomputes the probabilities block by block as
exp((score - m) - log l): one kernel computes each query row's delta = sum_j p_ij dp_ij (a pass
over the keys, not FlashAttention-2's rowsum(dO * O): see its docstring), one dK and dV (a
program per key block), one dQ (a program per query block). m and log l are kept apart because their
sum, the log-sum-exp, loses log l in float32 once |m| >> log l (scores of 1e6: probabilities
that no longer sum to 1). Causal masking is top-left aligned (key j <= query i), as torch's
`scaled_dot_product_attention(is_causal=True)`. Masked scores are -inf and the running maximum
starts at -inf, with 0 standing in for it while it is -inf, so no inf - inf is computed and
finite scores of any size count. Every kernel scales q by 1/√D as it loads it, before q kᵀ (as
PyTorch's math path): a product past float32's 3.4e38 whose scaled score is not stays finite.
A query whose scores are all -inf (keys of -inf in the data) gets output 0, as torch's, and
m = +inf, so that backward's probabilities for it are 0 too.
Under the causal mask a program skips the key blocks after its query block, so a NaN or Inf
in v reaches the rows of its key's block of queries and after (masked probabilities are 0, and
0 * NaN is NaN), where torch's CPU kernel, which multiplies every block, spreads it to all.
"""

from __future__ import annotations

import math
from typing import Any

import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import bound, needs_int64, widen
from topgrad_triton.precision import get_precision
from topgrad_triton.runtime import interpreting

MASKED = tl.constexpr(float("-inf"))  # the score of a masked (query, key) pair


@triton.jit
def blocks_of(length, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """(block, batch entry) of this program in a grid of B * cdiv(length, BLOCK) programs along x
    (a CUDA grid has at most 65535 along y: a batch there would cap B), block fastest."""
    pid = tl.program_id(0)
    per_entry = tl.cdiv(length, BLOCK)
    return widen(pid % per_entry, WIDE), widen(pid // per_entry, WIDE)


@triton.jit
def attn_fwd_kernel(Q, K, V, OUT, ROWMAX, LOGSUM, T, S, D, DV, scale,
                    sqb, sqt, sqd, skb, skt, skd, svb, svt, svd,
                    CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DV: tl.constexpr, WIDE: tl.constexpr):
    """One program computes BLOCK_M rows of OUT (B, T, DV, contiguous), ROWMAX and LOGSUM (B, T)
    for one batch entry (`blocks_of`: the grid is one-dimensional)."""
    pid_m, b = blocks_of(T, BLOCK_M, WIDE)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = widen(tl.arange(0, BLOCK_N), WIDE)
    offs_d = widen(tl.arange(0, BLOCK_D), WIDE)
    offs_dv = widen(tl.arange(0, BLOCK_DV), WIDE)
    dmask = offs_d < D
    dvmask = offs_dv < DV
    q = tl.load(Q + b * sqb + rows[:, None] * sqt + offs_d[None, :] * sqd,
                mask=(rows < T)[:, None] & dmask[None, :], other=0.0) * scale
    m_i = tl.full([BLOCK_M], MASKED, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    end = S
    if CAUSAL:
        end = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, bound(end), BLOCK_N):
        cols = start + offs_n
        kv_mask = (cols < S)[:, None] & dmask[None, :]
        k = tl.load(K + b * skb + cols[:, None] * skt + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        valid = (cols < S)[None, :]
        if CAUSAL:
            valid = valid & (cols[None, :] <= rows[:, None])
        s = tl.where(valid, s, MASKED)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == MASKED, 0.0, m_new)  # all -inf so far: exp(-inf - 0) = 0
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + b * svb + cols[:, None] * svt + offs_dv[None, :] * svd,
                    mask=(cols < S)[:, None] & dvmask[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m_i = m_new
    rmask = rows < T
    empty = m_i == MASKED  # every score of the row was -inf
    l_safe = tl.where(empty, 1.0, l_i)
    tl.store(OUT + b * T * DV + rows[:, None] * DV + offs_dv[None, :], acc / l_safe[:, None],
             mask=rmask[:, None] & dvmask[None, :])
    tl.store(ROWMAX + b * T + rows, tl.where(empty, float("inf"), m_i), mask=rmask)
    tl.store(LOGSUM + b * T + rows, tl.log(l_safe), mask=rmask)


@triton.jit
def probs_and_dp(q, k, v, do, m, log_l, rows, cols, rmask, S, CAUSAL: tl.constexpr,
                 PRECISION: tl.constexpr):
    """For a block of query rows (q already times the scale) and one of keys: the probabilities
    p, recomputed from the saved m and log l, and dp = dO vᵀ. One function for the delta and dQ
    kernels, so that each computes both alike, bit for bit: delta's sum(p * dp) then cancels
    exactly against dQ's dp."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    valid = rmask[:, None] & (cols < S)[None, :]
    if CAUSAL:
        valid = valid & (cols[None, :] <= rows[:, None])
    p = tl.exp((tl.where(valid, s, MASKED) - m[:, None]) - log_l[:, None])
    return p, tl.dot(do, tl.trans(v), input_precision=PRECISION)


@triton.jit
def attn_bwd_delta_kernel(Q, K, V, DO, ROWMAX, LOGSUM, DELTA, T, S, D, DV, scale,
                          sqb, sqt, sqd, skb, skt, skd, svb, svt, svd, sdb, sdt, sdd,
                          CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                          BLOCK_DV: tl.constexpr, WIDE: tl.constexpr):
    """One program computes delta = sum_j p_ij dp_ij for BLOCK_M query rows of one batch entry,
    streaming over their key blocks with p and dp = dO v_j as the dQ and dK/dV kernels make them.
    FlashAttention-2 takes it as rowsum(dO * O) in one pass over O, but those sums round apart
    from dp's: where a row's probabilities are one-hot (one key seen, or one score far above the
    rest), dp_j - delta, exactly 0, was float32 noise, which dK and dQ multiply by q and k (dK off
    by 4e-3 for a query row of norm 1e4). Summed this way it cancels exactly."""
    pid_m, b = blocks_of(T, BLOCK_M, WIDE)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = widen(tl.arange(0, BLOCK_N), WIDE)
    offs_d = widen(tl.arange(0, BLOCK_D), WIDE)
    offs_dv = widen(tl.arange(0, BLOCK_DV), WIDE)
    dmask = offs_d < D
    dvmask = offs_dv < DV
    rmask = rows < T
    q = tl.load(Q + b * sqb + rows[:, None] * sqt + offs_d[None, :] * sqd,
                mask=rmask[:, None] & dmask[None, :], other=0.0) * scale
    do = tl.load(DO + b * sdb + rows[:, None] * sdt + offs_dv[None, :] * sdd,
                 mask=rmask[:, None] & dvmask[None, :], other=0.0)
    m = tl.load(ROWMAX + b * T + rows, mask=rmask, other=0.0)
    log_l = tl.load(LOGSUM + b * T + rows, mask=rmask, other=0.0)
    delta = tl.zeros([BLOCK_M], dtype=tl.float32)
    end = S
    if CAUSAL:
        end = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, bound(end), BLOCK_N):
        cols = start + offs_n
        k = tl.load(K + b * skb + cols[:, None] * skt + offs_d[None, :] * skd,
                    mask=(cols < S)[:, None] & dmask[None, :], other=0.0)
        v = tl.load(V + b * svb + cols[:, None] * svt + offs_dv[None, :] * svd,
                    mask=(cols < S)[:, None] & dvmask[None, :], other=0.0)
        p, dp = probs_and_dp(q, k, v, do, m, log_l, rows, cols, rmask, S, CAUSAL, PRECISION)
        delta += tl.sum(p * dp, axis=1)
    tl.store(DELTA + b * T + rows, delta, mask=rmask)


@triton.jit
def attn_bwd_dkdv_kernel(Q, K, V, DO, ROWMAX, LOGSUM, DELTA, DK, DVAL, T, S, D, DV, scale,
                         sqb, sqt, sqd, skb, skt, skd, svb, svt, svd, sdb, sdt, sdd,
                         CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_DV: tl.constexpr, WIDE: tl.constexpr):
    """One program computes BLOCK_N rows of dK (B, S, D) and dV (B, S, DV), both contiguous, for
    one batch entry, streaming over the query blocks that attend to them."""
    pid_n, b = blocks_of(S, BLOCK_N, WIDE)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = widen(tl.arange(0, BLOCK_M), WIDE)
    offs_d = widen(tl.arange(0, BLOCK_D), WIDE)
    offs_dv = widen(tl.arange(0, BLOCK_DV), WIDE)
    dmask = offs_d < D
    dvmask = offs_dv < DV
    kv_mask = (cols < S)[:, None] & dmask[None, :]
    v_mask = (cols < S)[:, None] & dvmask[None, :]
    k = tl.load(K + b * skb + cols[:, None] * skt + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + cols[:, None] * svt + offs_dv[None, :] * svd, mask=v_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    first = 0
    if CAUSAL:
        first = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    for start in range(bound(first), bound(T), BLOCK_M):
        rows = start + offs_m
        rmask = rows < T
        q_mask = rmask[:, None] & dmask[None, :]
        q = tl.load(Q + b * sqb + rows[:, None] * sqt + offs_d[None, :] * sqd, mask=q_mask,
                    other=0.0) * scale  # dK = dSᵀ (q * scale): the scale is in already
        do = tl.load(DO + b * sdb + rows[:, None] * sdt + offs_dv[None, :] * sdd,
                     mask=rmask[:, None] & dvmask[None, :], other=0.0)
        m = tl.load(ROWMAX + b * T + rows, mask=rmask, other=0.0)
        log_l = tl.load(LOGSUM + b * T + rows, mask=rmask, other=0.0)
        delta = tl.load(DELTA + b * T + rows, mask=rmask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        valid = rmask[:, None] & (cols < S)[None, :]
        if CAUSAL:
            valid = valid & (cols[None, :] <= rows[:, None])
        p = tl.exp((tl.where(valid, s, MASKED) - m[:, None]) - log_l[:, None])
        dv += tl.dot(tl.trans(p), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)
    tl.store(DK + b * S * D + cols[:, None] * D + offs_d[None, :], dk, mask=kv_mask)
    tl.store(DVAL + b * S * DV + cols[:, None] * DV + offs_dv[None, :], dv, mask=v_mask)


@triton.jit
def attn_bwd_dq_kernel(Q, K, V, DO, ROWMAX, LOGSUM, DELTA, DQ, T, S, D, DV, scale,
                       sqb, sqt, sqd, skb, skt, skd, svb, svt, svd, sdb, sdt, sdd,
                       CAUSAL: tl.constexpr, PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_DV: tl.constexpr, WIDE: tl.constexpr):
    """One program computes BLOCK_M rows of dQ (B, T, D, contiguous) for one batch entry,
    streaming over the key blocks they attend to."""
    pid_m, b = blocks_of(T, BLOCK_M, WIDE)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = widen(tl.arange(0, BLOCK_N), WIDE)
    offs_d = widen(tl.arange(0, BLOCK_D), WIDE)
    offs_dv = widen(tl.arange(0, BLOCK_DV), WIDE)
    dmask = offs_d < D
    dvmask = offs_dv < DV
    rmask = rows < T
    q_mask = rmask[:, None] & dmask[None, :]
    q = tl.load(Q + b * sqb + rows[:, None] * sqt + offs_d[None, :] * sqd, mask=q_mask,
                other=0.0) * scale
    do = tl.load(DO + b * sdb + rows[:, None] * sdt + offs_dv[None, :] * sdd,
                 mask=rmask[:, None] & dvmask[None, :], other=0.0)
    m = tl.load(ROWMAX + b * T + rows, mask=rmask, other=0.0)
    log_l = tl.load(LOGSUM + b * T + rows, mask=rmask, other=0.0)
    delta = tl.load(DELTA + b * T + rows, mask=rmask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    end = S
    if CAUSAL:
        end = tl.minimum(S, (pid_m + 1) * BLOCK_M)
    for start in range(0, bound(end), BLOCK_N):
        cols = start + offs_n
        kv_mask = (cols < S)[:, None] & dmask[None, :]
        k = tl.load(K + b * skb + cols[:, None] * skt + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + cols[:, None] * svt + offs_dv[None, :] * svd,
                    mask=(cols < S)[:, None] & dvmask[None, :], other=0.0)
        p, dp = probs_and_dp(q, k, v, do, m, log_l, rows, cols, rmask, S, CAUSAL, PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds, k, input_precision=PRECISION)
    tl.store(DQ + b * T * D + rows[:, None] * D + offs_d[None, :], dq * scale, mask=q_mask)


# --------------------------------------------------------------------------- launchers


def _width(d: int) -> int:
    """The block width for d features: tl.dot needs every block dim >= 16."""
    return max(16, triton.next_power_of_2(d))


MAX_WIDTH = 512
"""The widest q, k or v rows the kernels take: each program holds blocks of whole rows in shared
memory, and past 512 features backward needs more than an H100's 232 KB even at 16x16 blocks."""


def _blocks(D: int, DV: int, backward: bool) -> tuple[int, int, dict[str, int]]:
    """(BLOCK_M, BLOCK_N, launch options) for query/key width D and value width DV; under
    tests' `runtime.many_blocks`, tl.dot's smallest (twice that for the forward's rows, as on a
    GPU). Wide rows get smaller blocks and one pipeline stage so that shared memory fits an A100's
    167 KB (compiled for sm_90: 135 KB at width 256 with 32x32, 132 KB at 512 with 16x16)."""
    if D > MAX_WIDTH or DV > MAX_WIDTH:
        raise ValueError(f"Attention: the triton backend takes rows of at most {MAX_WIDTH} features (its "
                         f"kernels hold whole rows in GPU shared memory); q and k have {D}, v {DV}. The op "
                         "is single-head: split the features into heads of at most 512 (reshape and "
                         "permute them into the batch), or use the numpy backend")
    if runtime.in_many_blocks():
        side = runtime.dot_block()
        return (side, side, _WARPS) if backward else (2 * side, side, _WARPS)
    width = max(_width(D), _width(DV))
    if interpreting() or width <= 64:
        return 64, 64, _WARPS
    if width <= 128:
        return (32, 32, _WARPS) if backward else (64, 32, _WARPS)
    return (32, 32, _WIDE_ROWS) if width <= 256 else (16, 16, _WIDE_ROWS)


_WARPS = {"num_warps": 4}  # and Triton's default pipeline depth
_WIDE_ROWS = {"num_warps": 4, "num_stages": 1}  # one stage: no second copy of the blocks in flight


def _scale(D: int) -> float:
    """1/sqrt(D); with no features every score is 0 whatever the scale (the output is v's mean)."""
    return 1.0 / math.sqrt(D) if D else 1.0


def _strides(*xs: Any) -> list[int]:
    return [s for x in xs for s in x.stride()]


def grid(length: int, block: int, batch: int) -> tuple[int]:
    """The one-dimensional grid of `blocks_of`: cdiv(length, block) programs per batch entry."""
    return (triton.cdiv(length, block) * batch,)


def attention_forward(q: Any, k: Any, v: Any, causal: bool) -> tuple[Any, Any]:
    """q (B, T, D), k (B, S, D) and v (B, S, DV), any strides -> (o (B, T, DV) contiguous, stats
    (2, B, T): each query row's maximum score and the log of its sum of exp(score - maximum))."""
    B, T, D = q.shape
    S, DV = v.shape[1], v.shape[2]
    o, stats = q.new_empty((B, T, DV)), q.new_empty((2, B, T))
    if B == 0 or T == 0:
        return o, stats
    bm, bn, launch = _blocks(D, DV, backward=False)
    with runtime.quiet():  # padded lanes meet keys of -inf in the data: 0 * -inf there, unread
        attn_fwd_kernel[grid(T, bm, B)](
            q, k, v, o, stats[0], stats[1], T, S, D, DV, _scale(D), *_strides(q, k, v),
            CAUSAL=bool(causal), PRECISION=get_precision(), BLOCK_M=bm, BLOCK_N=bn,
            BLOCK_D=_width(D), BLOCK_DV=_width(DV), WIDE=needs_int64(q, k, v, o), **launch,
        )
    return o, stats


def attention_backward(
    q: Any, k: Any, v: Any, stats: Any, do: Any, causal: bool
) -> tuple[Any, Any, Any]:
    """Gradients (dq, dk, dv), each contiguous, from the forward's inputs and stats and dO (any strides)."""
    B, T, D = q.shape
    S, DV = v.shape[1], v.shape[2]
    dq, dk, dv = q.new_empty((B, T, D)), k.new_empty((B, S, D)), v.new_empty((B, S, DV))
    if B == 0:
        return dq, dk, dv
    bm, bn, launch = _blocks(D, DV, backward=True)
    widths = {"BLOCK_D": _width(D), "BLOCK_DV": _width(DV), "WIDE": needs_int64(q, k, v, do, dq, dk, dv)}
    scale, precision = _scale(D), get_precision()
    delta = q.new_empty((B, T))
    strides = _strides(q, k, v, do)
    with runtime.quiet():
        if T:
            attn_bwd_delta_kernel[grid(T, bm, B)](
                q, k, v, do, stats[0], stats[1], delta, T, S, D, DV, scale, *strides,
                CAUSAL=bool(causal), PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, **widths, **launch,
            )
        attn_bwd_dkdv_kernel[grid(S, bn, B)](
            q, k, v, do, stats[0], stats[1], delta, dk, dv, T, S, D, DV, scale, *strides,
            CAUSAL=bool(causal), PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, **widths, **launch,
        )
        if T:
            attn_bwd_dq_kernel[grid(T, bm, B)](
                q, k, v, do, stats[0], stats[1], delta, dq, T, S, D, DV, scale, *strides,
                CAUSAL=bool(causal), PRECISION=precision, BLOCK_M=bm, BLOCK_N=bn, **widths, **launch,
            )
    return dq, dk, dv
