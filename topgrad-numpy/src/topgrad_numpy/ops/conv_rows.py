"""Convolution by kernel rows: row patches (a third of im2col's copy for a 3x3 kernel) and one
GEMM per kernel row.

A kh x kw kernel at stride (sh, sw) reads, for output (y, x), the padded rows sh*y..sh*y+kh-1 at
columns sw*x..sw*x+kw-1. Row patches hold each output column's kw-wide window of every padded
row once: R[b, row, x] = the kw*C floats of padded row `row` from column sw*x on. Kernel row i's
contribution to output row y is then R's row sh*y + i times that kernel row's (kw*C, Cout)
matrix, so the output is kh GEMMs with K = kw*C, summed. R keeps the padded rows phase by phase
of the vertical stride (rows p, p + sh, p + 2*sh, ... together), so each kernel row's rows are
one contiguous run of Ho*Wo patch rows. R is kw/sw times the input where im2col's patches are
kh*kw/(sh*sw) times, and the per-image GEMMs run in OpenBLAS's small-matrix kernels (a (784, 48)
@ (48, 16) per 28x28 image): deepconv's 16 -> 16 layer's forward 8.4 -> 5.0 ms, its 32- and
64-channel ones 1.3-1.4x faster, the stride-2 3x3 ones of deepconv and the conv net 1.05-1.25x
(Intel Xeon, one thread). The same scheme gives a stride-1 layer's dL/dx (the gradient's
correlation with the flipped kernel is a stride-1 convolution) and, from the gradient's row
patches, dL/dw; at a stride, dL/dw comes from x's row patches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from topgrad_numpy.ops import gemm


def rows_read(kh: int, sh: int, Ho: int) -> int:
    """Padded rows that Ho output rows of a kh-row kernel at vertical stride sh read."""
    return sh * (Ho - 1) + kh


def row_patch_shape(kernel: tuple[int, int], sh: int, outputs: tuple[int, int], C: int) -> tuple[int, ...]:
    """One image's block of `RowPatches`: (phases, rows per phase, Wo, kw*C) for Ho x Wo outputs,
    holding the padded rows the outputs read (`rows_read`) phase by phase of the vertical stride
    sh, and only the phases some kernel row reads (a stride beyond the kernel leaves rows unread)."""
    (kh, kw), (Ho, Wo) = kernel, outputs
    return (min(sh, kh), -(-rows_read(kh, sh, Ho) // sh), Wo, kw * C)


class RowPatches:
    """Row patches of a few images at a time, in one reused buffer of zeros: R (n, min(sh, kh),
    Hq, Wo, kw*C), padded row p at [p % sh, p // sh], for the padded rows the outputs read (top +
    H + bottom, or fewer where the stride leaves some unread). The padding's zeros are
    written once (the buffer starts zeroed, and each call writes only the floats that come from
    x), so a call is one copy of whole kw*C runs per phase for the columns whose window lies
    inside the image, and a short copy per border column."""

    def __init__(self, n: int, image: tuple[int, int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], pads: tuple[int, int, int, int], dtype: Any) -> None:
        (H, W, C), (kh, kw), (sh, sw) = image, kernel, stride
        top, bottom, left, right = pads
        self.C, self.kh, self.kw, self.sh, self.sw, self.left = C, kh, kw, sh, sw, left
        self.Ho, self.Wo = (top + H + bottom - kh) // sh + 1, (left + W + right - kw) // sw + 1
        self.buf = np.zeros((n, *row_patch_shape(kernel, sh, (self.Ho, self.Wo), C)), dtype)
        # per phase: (its first row in R, x's first row there, how many of x's rows)
        self.phases = []
        last = min(rows_read(kh, sh, self.Ho), top + H) - 1  # the last padded row read that is in x
        for p in range(self.buf.shape[1]):
            first = max(0, -(-(top - p) // sh))  # the phase's first row that is in x
            count = (last - p) // sh - first + 1 if last >= p else 0
            self.phases.append((first, p + sh * first - top, max(0, count)))
        lo = -(-left // sw)  # columns whose kw taps all lie in x
        hi = min(self.Wo, (W + left - kw) // sw + 1) if W + left >= kw else lo
        self.inner = (lo, max(lo, hi))
        self.border = []  # (column, first valid tap, last valid tap + 1) for the others
        for col in [*range(0, min(lo, self.Wo)), *range(max(lo, hi), self.Wo)]:
            j0, j1 = max(0, left - sw * col), min(kw, W + left - sw * col)
            if j0 < j1:
                self.border.append((col, j0, j1))

    def __call__(self, x: np.ndarray, images: slice) -> list[np.ndarray]:
        """x[images]'s row patches as each kernel row's (n, Ho*Wo, kw*C) matrix, views of the
        buffer (valid until the next call). x is C-contiguous (B, H, W, C)."""
        n = images.stop - images.start
        C, kw, sh, sw = self.C, self.kw, self.sh, self.sw
        R = self.buf[:n]
        lo, hi = self.inner
        s0, s1, s2, _ = x.strides
        run = np.dtype((np.void, kw * C * x.itemsize))  # a window as one opaque element
        for p, (first, x_row, count) in enumerate(self.phases):
            if not count:
                continue
            rows = slice(first, first + count)
            if lo < hi:  # numpy's copy loops over whole runs
                start = images.start * s0 + x_row * s1 + (sw * lo - self.left) * s2
                src = np.ndarray((n, count, hi - lo), run, x, start, (s0, sh * s1, sw * s2))
                R[:, p, rows, lo:hi].view(run)[..., 0] = src
            x_rows = x[images, x_row : x_row + sh * (count - 1) + 1 : sh]
            for col, j0, j1 in self.border:  # a window that the padding cuts: its taps inside x
                first_col = sw * col + j0 - self.left
                taps = x_rows[:, :, first_col : first_col + j1 - j0]
                R[:, p, rows, col, j0 * C : j1 * C] = taps.reshape(n, count, -1)
        m, k = self.Ho * self.Wo, kw * C
        return [R[:, i % sh, i // sh : i // sh + self.Ho].reshape(n, m, k) for i in range(self.kh)]


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


def tap_rows(rows: list[np.ndarray], kernels: list[np.ndarray], out: np.ndarray, tmp: np.ndarray) -> None:
    """out (n, m, N) = sum over kernel rows i of rows[i] (n, m, K, from `RowPatches`) @ kernels[i]:
    per image, in blocks for the small-matrix kernels; `tmp` (out's shape) holds the later rows'
    products before each is added."""
    _, m, k = rows[0].shape
    N = out.shape[2]
    block = _blocks(m, k, N)
    for i, (a3, kernel) in enumerate(zip(rows, kernels)):
        dst = out if i == 0 else tmp
        for a, at in _stacked(a3, block):
            np.matmul(a, kernel, out=dst[:, at].reshape((*a.shape[:-1], N)))
        if i:
            out += tmp


def tap_rows_tn(rows: list[np.ndarray], b3: np.ndarray, dtype: Any) -> np.ndarray:
    """The (kh * K, N) sum over images and positions of each kernel row's patches (rows[i], as in
    `tap_rows`) transposed, times b3 (n, m, N): kernel row i's block is sum(rows[i]^T @ b3), i.e.
    dL/dw for a b3 that is the gradient and rows from x (or dL/dw of the flipped kernel for
    b3 = x and rows from the gradient)."""
    _, m, k = rows[0].shape
    N = b3.shape[2]
    block = _blocks(m, k, N)
    total = np.empty((len(rows), k, N), dtype)
    for i, a3 in enumerate(rows):
        acc = None
        for a, at in _stacked(a3, block):
            b = b3[:, at].reshape((*a.shape[:-1], N))
            part = np.matmul(np.swapaxes(a, -1, -2), b)
            part = part.reshape(-1, k, N).sum(axis=0)
            acc = part if acc is None else acc + part
        total[i] = acc
    return total.reshape(len(rows) * k, N)
