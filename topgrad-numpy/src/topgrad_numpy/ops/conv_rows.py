"""Stride-1 convolution by kernel rows: row patches (a third of im2col's copy) and one GEMM per
kernel row.

A kh x kw kernel at stride 1 reads, for output (y, x), the padded rows y..y+kh-1 at columns
x..x+kw-1. Row patches hold each position's kw columns once: R[b, row, x] = the kw*C floats of
padded row `row` from column x on (a 1 x kw window), for every padded row. Kernel row i's
contribution to output row y is then R's rows y + i, a contiguous run of Ho*Wo patch rows, times
that kernel row's (kw*C, Cout) matrix, so the output is kh GEMMs with K = kw*C, summed. R is kw
times the input where im2col's patches are kh*kw times, and the per-image GEMMs run in
OpenBLAS's small-matrix kernels (a (784, 48) @ (48, 16) per 28x28 image): deepconv's 16 -> 16
layer's forward 8.4 -> 5.0 ms, its 32- and 64-channel ones 1.3-1.4x faster (Intel Xeon, one
thread). The same scheme gives dL/dx (the gradient's correlation with the flipped kernel is a
stride-1 convolution) and, from the gradient's row patches, dL/dw.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from topgrad_numpy.ops import gemm


class RowPatches:
    """Row patches of a few images at a time, in one reused buffer of zeros: R (n, Hp, Wo, kw*C),
    Hp = top + H + bottom padded rows, Wo = left + W + right - kw + 1 columns. The padding's zeros
    are written once (the buffer starts zeroed, and each call writes only the floats that come
    from x), so a call is one copy of whole kw*C runs for the columns whose window lies inside
    the image, and a short copy per border column."""

    def __init__(self, n: int, H: int, W: int, C: int, kw: int, pads: tuple[int, int, int, int],
                 dtype: Any) -> None:
        top, bottom, left, right = pads
        self.H, self.C, self.kw, self.top, self.left = H, C, kw, top, left
        self.Hp, self.Wo = top + H + bottom, left + W + right - kw + 1
        self.buf = np.zeros((n, self.Hp, self.Wo, kw * C), dtype)
        lo, hi = left, min(self.Wo, W + left - kw + 1)  # columns whose kw taps all lie in x
        self.inner = (lo, max(lo, hi))
        self.border = []  # (column, first valid tap, last valid tap + 1) for the others
        for col in [*range(0, min(lo, self.Wo)), *range(max(lo, hi), self.Wo)]:
            j0, j1 = max(0, left - col), min(kw, W + left - col)
            if j0 < j1:
                self.border.append((col, j0, j1))

    def __call__(self, x: np.ndarray, images: slice) -> np.ndarray:
        """x[images]'s row patches, a (n, Hp * Wo, kw * C) view of the buffer (valid until the
        next call). x is C-contiguous (B, H, W, C)."""
        n = images.stop - images.start
        C, kw, rows = self.C, self.kw, slice(self.top, self.top + self.H)
        R = self.buf[:n]
        lo, hi = self.inner
        if lo < hi:  # each kw*C run as one opaque element, so numpy's copy loops over whole runs
            run = np.dtype((np.void, kw * C * x.itemsize))
            s0, s1, s2, _ = x.strides
            src = np.ndarray((n, self.H, hi - lo), run, x, images.start * s0, (s0, s1, s2))
            R[:, rows, lo:hi].view(run)[..., 0] = src
        for col, j0, j1 in self.border:  # a window that the padding cuts: its taps inside x
            first = col + j0 - self.left
            R[:, rows, col, j0 * C : j1 * C] = x[images, :, first : first + j1 - j0].reshape(n, self.H, -1)
        return R.reshape(n, self.Hp * self.Wo, kw * C)


def kernel_rows(w: np.ndarray) -> list[np.ndarray]:
    """A (kh, kw, Cin, Cout) kernel as its kh row matrices (kw*Cin, Cout), each C-contiguous and
    aligned for the GEMMs (`gemm.aligned`), made once per op call."""
    return [gemm.aligned(row.reshape(-1, row.shape[-1])) for row in w]


def _blocks(m: int, k: int, n: int) -> int:
    """Rows per GEMM block for an image's (m, k) @ (k, n) product: small enough for OpenBLAS's
    small-matrix kernels where it has them (`gemm.block_len`), else the whole image."""
    rows = gemm.block_len(k, n)
    return gemm.even_rows(m, rows) if rows and m > rows else m


def _stacked(a3: np.ndarray, rows: int) -> list[tuple[np.ndarray, slice]]:
    """a3 (n, m, k) as stacked blocks of `rows` rows: (n, m // rows, rows, k), then the rest of
    each image's rows; each with the rows of m it covers."""
    m = a3.shape[1]
    whole = m // rows * rows
    parts = [(a3[:, :whole].reshape(a3.shape[0], whole // rows, rows, a3.shape[2]), slice(0, whole))]
    if whole < m:
        parts.append((a3[:, whole:], slice(whole, m)))
    return parts


def tap_rows(R: np.ndarray, kernels: list[np.ndarray], Ho: int, Wo: int, out: np.ndarray,
             tmp: np.ndarray) -> None:
    """out (n, Ho*Wo, N) = sum over kernel rows i of R's rows from i*Wo (Ho*Wo of them) @ kernels[i]:
    per image, in blocks for the small-matrix kernels; `tmp` (out's shape) holds the later rows'
    products before each is added."""
    m, k, N = Ho * Wo, R.shape[2], out.shape[2]
    rows = _blocks(m, k, N)
    for i, kernel in enumerate(kernels):
        dst = out if i == 0 else tmp
        a3 = R[:, i * Wo : i * Wo + m]
        for a, at in _stacked(a3, rows):
            np.matmul(a, kernel, out=dst[:, at].reshape((*a.shape[:-1], N)))
        if i:
            out += tmp


def tap_rows_tn(R: np.ndarray, b3: np.ndarray, kh: int, Ho: int, Wo: int, dtype: Any) -> np.ndarray:
    """The (kh * K, N) sum over images and positions of R's kernel-row runs (as in `tap_rows`)
    transposed, times b3 (n, Ho*Wo, N): kernel row i's block is sum(R_i^T @ b3), i.e. dL/dw's
    for a b3 that is the gradient (or dL/dw of the flipped kernel for b3 = x, R the gradient's)."""
    m, k, N = Ho * Wo, R.shape[2], b3.shape[2]
    rows = _blocks(m, k, N)
    total = np.empty((kh, k, N), dtype)
    for i in range(kh):
        a3 = R[:, i * Wo : i * Wo + m]
        acc = None
        for (a, at) in _stacked(a3, rows):
            b = b3[:, at].reshape((*a.shape[:-1], N))
            part = np.matmul(np.swapaxes(a, -1, -2), b)
            part = part.reshape(-1, k, N).sum(axis=0)
            acc = part if acc is None else acc + part
        total[i] = acc
    return total.reshape(kh * k, N)
