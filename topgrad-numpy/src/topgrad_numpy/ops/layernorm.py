"""LayerNorm: normalization over the last axis, block by block over rows, with no per-row broadcast.

Forward and backward run over blocks of rows of about 256 KiB each (`rows_per_block`, `row_blocks`):
a row's statistics need only its own row, so every pass over a block (its sums, centring,
scaling, the gradient's terms) finds it in L2. On whole arrays each of the ~8 passes per
direction streamed the arrays from memory once they outgrew L2: 3-4x PyTorch's time from 2 MB
of input, 1.6-1.9x faster blocked. Inputs up to SMALL_BYTES keep one forward block and two
backward ones.

With a short feature axis (the attention model's is 64), numpy's arithmetic with a per-row
number broadcast over its row (`x * u[:, None]`, u the mean or 1/std) runs a buffered inner loop
C long, ~3x a flat pass. Every per-row factor here is instead written across its row first, at
about a copy's cost (times gamma by `gemm.rank_one`, else by `gemm.fill_rows`: each a GEMM or a
numpy broadcast, whichever is faster for that shape and BLAS), and the op that uses it is a
flat pass. Row sums are matrix-vector products.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad.arguments import check_eps

from topgrad_numpy.ops import gemm
from topgrad_numpy.ops._util import (
    BUFFER,
    ROWS_BYTES,
    NumpyOp,
    check_affine,
    colsum,
    filled,
    ones,
    row_blocks,
    row_squares,
    wide,
)

FAR = 16.0**2
"""Where a row's mean exceeds 16 standard deviations (FAR is that ratio squared), every row's
float32 mean in its block, a sum of C values, is corrected by the deviations' own sum (two more
passes over that block, taken only then; rows nearer zero come out the same either way): at
C = 4096 the plain sum's error reaches every output and dL/dgamma, 4x PyTorch's float32 error at
60 standard deviations (8e-6 of dL/dgamma) and 1e-4 at 1000; corrected, ~2e-7 at any offset.
Rows nearer zero (a transformer's usually are) lose less than PyTorch does."""

BLOCK_BYTES = ROWS_BYTES
"""Bytes of x per row block (256 KiB): x's block and the one or two arrays each pass writes stay
in a 2 MiB L2 while all the passes over it run."""

SMALL_BYTES = 4 * BLOCK_BYTES
"""Up to this size (1 MiB) x is not cut into BLOCK_BYTES blocks: forward takes it whole and
backward in two halves. Its arrays nearly fit in L2 anyway, and each block costs ~15 us of numpy
calls (about 35): at the benchmark's 128x28x64 (0.9 MB), four blocks each way were 3-6% slower."""


def rows_per_block(x2: np.ndarray, small_blocks: int) -> int:
    """Rows per block of x2 (N, C): equal blocks of at most about BLOCK_BYTES, or `small_blocks`
    blocks where x2 is at most SMALL_BYTES; each a multiple of the rows `wide` needs for a view a
    numpy buffer wide (a power of two), so each block's bias add runs unbuffered (the last block
    may be shorter)."""
    n, C = x2.shape
    step = 1 << (max(1, -(-BUFFER // C)) - 1).bit_length()
    size = n * C * x2.itemsize
    blocks = small_blocks if size <= SMALL_BYTES else -(-size // BLOCK_BYTES)
    return max(step, -(-n // (blocks * step)) * step)


def _centre(x: np.ndarray, xc: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Write x - mean into `xc` for a block of rows and return the rows' variances; `scratch`
    (the block's shape) is written over. Centred first, so rows of tiny variance stay accurate."""
    C = x.shape[1]
    neg_mean = x @ filled(C, -1.0 / C, x.dtype)  # a cached vector, as `ones`
    gemm.fill_rows(neg_mean, xc)
    xc += x  # x - mean
    var = row_squares(xc, scratch)
    var *= 1.0 / C
    if _maybe_far(neg_mean, var) and (neg_mean * neg_mean > FAR * var).any():
        _correct_mean(xc, var, scratch)  # a row's float32 mean is off by ulps of |mean|
    return var


def _maybe_far(neg_mean: np.ndarray, var: np.ndarray) -> bool:
    """False where no row's mean can be FAR from zero: the squared means' sum bounds each one, so
    a sum within FAR of the smallest variance clears every row in a dot and a min (the row test
    is four numpy calls on the per-row vectors, ~2% of the bench's LayerNorm). A NaN answers True."""
    return not neg_mean @ neg_mean <= FAR * var.min(initial=np.inf)


def _correct_mean(xc: np.ndarray, var: np.ndarray, scratch: np.ndarray) -> None:
    """Recentre `xc` on the corrected two-pass mean, mean + sum(x - mean) / C, and fix `var` to
    match. The sum is in float64: a constant row's deviations then cancel exactly, and it
    normalizes to 0 as in PyTorch."""
    C = xc.shape[1]
    shift = (xc.sum(axis=1, dtype=np.float64) * (1.0 / C)).astype(xc.dtype)
    xc -= gemm.fill_rows(shift, scratch)
    var -= shift * shift
    np.maximum(var, 0.0, out=var)  # a constant row's variance may round below zero


def _normalize(xc: np.ndarray, var: np.ndarray, out: np.ndarray, gam: np.ndarray, beta: Any,
               eps: float) -> np.ndarray:
    """out = xc / sqrt(var + eps) * gam + beta for a block of rows; returns 1/std, in var's array."""
    var += eps
    np.sqrt(var, out=var)
    np.divide(1.0, var, out=var)
    gemm.rank_one(var, gam, out)  # gamma / std per element
    out *= xc
    if beta is not None:
        ow, bw = wide(out, beta)
        ow += bw
    return var


def _block_backward(g: np.ndarray, xc: np.ndarray, s: np.ndarray, gam: np.ndarray, gam_c: np.ndarray,
                    part: np.ndarray, dx: np.ndarray, gsums: list[np.ndarray]) -> None:
    """dL/dx of a block of rows into `dx` (which may be `xc` itself: xc's last read comes first),
    adding the block's dL/dgamma and, where gsums has two, dL/dbeta to `gsums`; `part` is scratch,
    gam_c gamma * -1/C (the gemvs take the -1/C the terms need)."""
    np.multiply(g, xc, out=part)  # g * xc
    gsums[0] += s @ part
    if len(gsums) > 1:
        gsums[1] += colsum(g)
    cb = part @ gam_c  # per row: -sum of g * gamma * xc / C ...
    db = g @ gam_c  # ... and -sum of g * gamma / C
    db *= s
    cb *= s  # s three times, not s^3 or s^2: for a constant row s = 1/sqrt(eps), and s^3 overflows
    cb *= s  # float32 where eps is under ~1e-26 (s^2 under ~2.9e-39), and then 0 * inf is NaN
    cb *= s
    gemm.fill_rows(cb, part)
    part *= xc  # c * xc: the last read of x - mean
    gemm.fill_rows(db, dx)  # d ...
    dx += part  # ... + c * xc
    gemm.rank_one(s, gam, part)
    part *= g
    dx += part  # ... + s * gamma * g


class LayerNorm(NumpyOp):
    """Layer normalization over the last axis; saves x - mean (a new array, centred so rows
    of tiny variance stay accurate), 1/std (one per row) and gamma. Forward and backward run
    over row blocks of about 256 KiB, every pass over a block while it is in cache."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        """Normalize each row over the last axis, then scale by gamma and shift by beta, one
        row block at a time (x whole up to SMALL_BYTES): centre it (`_centre`), then scale and
        shift it (`_normalize`)."""
        check_eps("LayerNorm", eps)
        C = check_affine("LayerNorm", x, gamma=gamma, beta=beta)
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        xc, out = np.empty_like(x2), np.empty_like(x2)
        gam = gamma if gamma is not None else ones(C, x2.dtype)
        if x2.nbytes <= SMALL_BYTES:  # one block: no slices, no per-block copies
            invstd = _normalize(xc, _centre(x2, xc, out), out, gam, beta, eps)
        else:
            invstd = np.empty(x2.shape[0], x2.dtype)
            for rows in row_blocks(x2, rows_per_block(x2, 1)):
                xcb, ob = xc[rows], out[rows]
                invstd[rows] = _normalize(xcb, _centre(x2[rows], xcb, ob), ob, gam, beta, eps)
        self.save_for_backward(x_minus_mean=xc, inv_std=invstd, gamma=gamma)
        self.has_gamma, self.has_beta = gamma is not None, beta is not None
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """With s = 1/std and xc = x - mean (x-hat = s * xc), per row:
        dL/dx = s * gamma * g + c * xc + d, c = -s^3 * sum(g * gamma * xc) / C, d = -s * sum(g * gamma) / C;
        dL/dgamma = sum over rows of s * g * xc, dL/dbeta = sum over rows of g.

        Row block by row block (`_block_backward`; two halves up to SMALL_BYTES), each while it
        is in cache: its rows' sums (matrix-vector products), then their dL/dx, through one
        block-sized scratch. dL/dx is written over xc where the engine says the saved arrays are
        scratch (it drops them after backward), else into a new array (a call by hand: the
        engine's backward reads xc later)."""
        xc, invstd, gamma = self._intermediate
        dx = xc if self.saved_are_scratch else np.empty_like(xc)
        C = xc.shape[1]
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        gam = gamma if gamma is not None else ones(C, g2.dtype)
        gsums = [np.zeros(C, g2.dtype) for _ in range(2 if self.has_beta else 1)]
        per = rows_per_block(xc, 2)
        scratch = np.empty((min(per, xc.shape[0]), C), g2.dtype)
        gam_c = gam * (-1.0 / C)  # once for all blocks
        for rows in row_blocks(xc, per):
            part = scratch[: rows.stop - rows.start]
            _block_backward(g2[rows], xc[rows], invstd[rows], gam, gam_c, part, dx[rows], gsums)
        if C == 1:  # x-hat is 0: dL/dx = s * (g * gamma - mean(g * gamma)), exactly 0 (NaN where g
            u = g2 * gam  # is not finite) as in PyTorch; the sum above rounds s * g * gamma twice
            np.multiply(u - u, invstd[:, None], out=dx)
        ggamma = gsums[0] if self.has_gamma else None
        return dx.reshape(grad.shape), ggamma, gsums[1] if self.has_beta else None
