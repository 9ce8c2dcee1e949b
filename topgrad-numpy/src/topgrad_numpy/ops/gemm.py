"""Skinny GEMMs in row blocks small enough for OpenBLAS's AVX-512 small-matrix kernels.

OpenBLAS's SkylakeX-family kernels (which numpy's wheels also pick on Zen 4/5) run a GEMM
with M*N*K <= 100**3 in kernels that read the operands in place, and every larger one
through the packed path, which first copies the long operand. For the convolutions' patch
matrices (K = 9*Cin, N = 16-64 output channels) that copy is not paid back: a 3136x144 @
144x16 GEMM ran at ~67 GFLOP/s whole and ~95 in blocks of 434 rows on a Zen 4 core. Other
kernel families (Haswell's AVX2 ones) have no such path, and there the blocks were 10-25%
slower, so they are used only where numpy's OpenBLAS reports one of these families.
"""

from __future__ import annotations

import functools

import numpy as np

from topgrad_numpy import openblas
from topgrad_numpy.ops._util import ones, outer

SMALL_MNK = 100**3
"""OpenBLAS's bound on M*N*K for its small-matrix kernels (`gemm_small_kernel_permit`)."""

MIN_ROWS = 32
"""Fewest rows per block worth a BLAS call of its own; a GEMM too wide for that goes in column
panels (`PANELS`), or stays whole where even a panel is too wide."""

PANELS = 2
"""Column panels for a GEMM too wide for row blocks of MIN_ROWS, so that each panel's product
runs in the small-matrix kernels: a 6272x576 @ 576x64 GEMM (deepconv's 64-channel layer) ran
at 76 GFLOP/s whole, 92 in two panels and 87 in four on a Zen 4 core."""

FEW_ROWS = 32
FEW_ROWS_MIN_KN = 1 << 16
"""A `matmul_nt` of 2 to FEW_ROWS rows with K * N of at least FEW_ROWS_MIN_KN runs as (b @ a^T)^T:
OpenBLAS's GEMM with a few rows and a transposed b ran 1.4-1.9x slower than with them as
columns (a small batch's dL/dx in Linear, Intel host: 4x784x512 183 -> 98 us, 16x784x512 248 ->
137, 8x768x3072 1403 -> 781; even at 64 rows, 1.1x slower from 128; 16x64x64 and 32x512x10
slower that way)."""

TN_MIN_ROWS = 64
"""Fewest rows per block for which `matmul_tn` sums blocks' products rather than running one
GEMM: each block's product is a whole (K, N) array, summed afterwards. On the Intel host,
800x32 products in blocks of 39 rows took 9.8 ms for 12800 rows against one GEMM's 6.3 (and
33 MB of products), 1152x16 in 54-row blocks 3.5-4.9 against 2.7; from 78 rows they break
even, and from ~200 the blocks gain (144x32 in 217-row blocks: 0.46 against 0.56 ms)."""

SMALL_KERNEL_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
"""OpenBLAS kernel families with AVX-512 small-matrix sgemm kernels."""

ALIGNMENT = 64
"""Bytes (a cache line, an AVX-512 register) on which a GEMM's b should start: the small-matrix
kernels read b in place, and numpy's arrays start 16 or 48 bytes past such a boundary here
(glibc's malloc). Measured on an Intel Xeon, in a convolution's chunk loop: its GEMMs 3-5%
faster with b aligned (an isolated GEMM on a hot, page-aligned a showed 25-30%, which the
loop does not). Only b's start mattered, not a's or out's."""


RANK_ONE_GEMM_COLS = 1024
"""Columns up to which a product with K = 1 is a K = 2 GEMM (`outer`); longer rows take numpy's
broadcast multiply. numpy's matmul runs K = 1 in its own loop: on the Intel host 784x512
429 us against 48 (GEMM) and 126 (multiply), 4096x64 328 against 35 and 117, 256x4096 1115
against 433 and 154. K = 1 is batch 1's weight gradient, a one-output head's dL/dx, a
one-feature input's forward."""


@functools.cache
def small_kernels() -> bool:
    """Whether numpy's GEMMs can take OpenBLAS's AVX-512 small-matrix kernels."""
    return openblas.corename() in SMALL_KERNEL_CORES


def aligned(b: np.ndarray) -> np.ndarray:
    """`b` where it is C-contiguous and starts on an ALIGNMENT boundary, else such a copy of it
    (a GEMM's b is a kernel, at most a few hundred KiB, and the copy is paid once per op call)."""
    if b.flags.c_contiguous and b.ctypes.data % ALIGNMENT == 0:
        return b
    pad = ALIGNMENT // b.itemsize
    buf = np.empty(b.size + pad, b.dtype)
    start = (-buf.ctypes.data % ALIGNMENT) // b.itemsize
    out = buf[start : start + b.size].reshape(b.shape)
    out[...] = b
    return out


def block_len(k: int, n: int) -> int:
    """Rows per block for a (rows, k) @ (k, n) product, or 0 where no blocks pay: blocks would be
    shorter than MIN_ROWS, or numpy's BLAS has no small-matrix kernels."""
    rows = SMALL_MNK // max(1, k * n)
    return rows if rows >= MIN_ROWS and small_kernels() else 0


def even_rows(m: int, rows: int) -> int:
    """Rows per block for m rows in as many blocks as blocks of `rows` would take, all of the same
    size but a last one a few rows shorter: 1568 rows in four blocks of 392, not three of 434
    and a last GEMM of 266, which costs a BLAS call and, in `matmul_tn`, an addition of its own
    (on an Intel Xeon, blocks of a convolution's chunk 2-6% faster, their weight gradient 2-9%)."""
    return -(-m // -(-m // rows))


def _plan(m: int, k: int, n: int) -> tuple[int, int]:
    """(rows per block, columns per panel) for an (m, k) @ (k, n) product; (0, n) where it runs
    whole. Where n is too wide for blocks of MIN_ROWS, b's columns split into PANELS panels."""
    rows = block_len(k, n)
    if rows:
        return (even_rows(m, rows) if m > rows else 0), n
    width = -(-n // PANELS)
    rows = block_len(k, width)
    return (even_rows(m, rows), width) if rows and m > rows else (0, n)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """out = a @ b for a (M, K), b (K, N), out (M, N) (a new array if not given), in row blocks
    of `block_len` rows: one stacked np.matmul over the whole blocks (numpy calls the BLAS per
    block, without a Python call each: 8% faster than a loop), then the rest; for a wide b,
    panel by panel of its columns (`_plan`), each written into its columns of out. Blocks read
    b from an `aligned` copy where it is not aligned already."""
    m, (k, n) = a.shape[0], b.shape
    if out is None:
        out = np.empty((m, n), np.result_type(a, b))
    if k == 1:
        return rank_one(a[:, 0], b[0], out)
    rows, width = _plan(m, k, n)
    if not rows:
        return np.matmul(a, b, out=out)
    b = aligned(b)  # no copy where the caller aligned it once for many calls
    for start in range(0, n, width):
        cols = slice(start, start + width)
        _row_blocks(a, b[:, cols], out[:, cols], rows)
    return out


def _row_blocks(a: np.ndarray, b: np.ndarray, out: np.ndarray, rows: int) -> None:
    """out = a @ b as one stacked product over the whole blocks of `rows` rows, then the rest."""
    m = a.shape[0]
    whole = m // rows * rows
    np.matmul(a[:whole].reshape(-1, rows, a.shape[1]), b, out=out[:whole].reshape(-1, rows, out.shape[1]))
    if whole < m:
        np.matmul(a[whole:], b, out=out[whole:])


def matmul_nt(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """out = a @ b^T for a (M, K), b (N, K), out (M, N) (a new array if not given). Blocks need
    b^T contiguous: OpenBLAS's small-matrix kernels refuse a transposed b with more than a few
    columns."""
    (m, k), n = a.shape, b.shape[0]
    if k == 1:
        out = np.empty((m, n), np.result_type(a, b)) if out is None else out
        return rank_one(a[:, 0], b[:, 0], out)
    if 1 < m <= FEW_ROWS and k * n >= FEW_ROWS_MIN_KN:
        product = np.matmul(b, a.T)  # (N, M): b row-major in the GEMM's long dimension
        if out is None:
            return np.ascontiguousarray(product.T)
        out[...] = product.T
        return out
    if not _plan(m, k, n)[0]:
        return np.matmul(a, b.T, out=out)
    return matmul(a, aligned(b.T), out)


def matmul_tn(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """out = a^T @ b for a (M, K), b (M, N), out (K, N) (a new array if not given): the
    contraction over M as one stacked product per block of `block_len` rows, summed (a weight
    gradient over a batch of patches)."""
    rows = block_len(a.shape[1], b.shape[1])
    m = a.shape[0]
    if out is None:
        out = np.empty((a.shape[1], b.shape[1]), np.result_type(a, b))
    if m == 1:
        return rank_one(a[0], b[0], out)
    if rows < TN_MIN_ROWS or m <= rows:
        return np.matmul(a.T, b, out=out)
    rows = even_rows(m, rows)
    whole = m // rows * rows
    parts = np.matmul(a[:whole].reshape(-1, rows, a.shape[1]).transpose(0, 2, 1),
                      b[:whole].reshape(-1, rows, b.shape[1]))
    np.sum(parts, axis=0, out=out)
    if whole < m:
        out += np.matmul(a[whole:].T, b[whole:])
    return out


def rank_one(u: np.ndarray, v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = u v^T (a product with K = 1): a K = 2 GEMM for rows up to RANK_ONE_GEMM_COLS long,
    numpy's broadcast multiply for longer ones; never numpy's own K = 1 matmul loop."""
    if v.shape[0] <= RANK_ONE_GEMM_COLS:
        return outer(u, v, out)
    return np.multiply(u[:, None], v[None, :], out=out)


def fill_rows(u: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i, :] = u[i] for a 2-d `out`: each per-row number written across its row, so the
    pass that uses it is a flat one. Where OpenBLAS runs its SkylakeX-family kernels, `outer`'s
    K = 2 GEMM (about a copy's cost there); elsewhere numpy's broadcast copy, as the GEMM on
    Haswell kernels costs 1.2-1.8x it (3584x64: 66-94 us against 39-77 on a Zen 3, 52 against
    35 on a Zen 4 without AVX-512). Both write exactly u's values."""
    if small_kernels():
        return outer(u, ones(out.shape[1], out.dtype), out)
    np.copyto(out, u[:, None])
    return out
