"""2-d convolution on NHWC images with HWIO kernels: im2col (a strided view, one copy) + GEMM,
over chunks of the batch (or of a large image's rows) so each patch matrix is small (`CHUNK_BYTES`)
and still in cache; the chunks split over the backend's threads (`parallel`), each thread with
buffers of its own. A convolution of four or more channels whose images fit a chunk goes by
kernel rows instead (`conv_rows`: row patches, a third of im2col's copy for a 3x3 kernel, and
one GEMM per kernel row), and so does its dL/dw; at stride 1 its dL/dx too.

Backward, chunk by chunk: dL/dx is a correlation of the gradient with the flipped kernel
(im2col + GEMM), one per phase of the stride (rows r::s, columns q::s each take only the taps
that reach them); with stride 1 the same patch matrix gives dL/dw, otherwise dL/dw
accumulates GEMMs with x's rebuilt row patches (or patch matrices, where the kernel-row path
does not apply). For fewer than four input channels
(an image batch) dL/dx is a GEMM to patch gradients and a col2im of kh*kw strided slice
additions (never `np.add.at`, which is unbuffered and slow). A constant input gets no dL/dx.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from topgrad.convolution import conv_geometry

from topgrad_numpy import cpu_cache, parallel
from topgrad_numpy.ops import gemm
from topgrad_numpy.ops._util import Chunk, NumpyOp, colsum, image_chunks, input_rows, rows_inside, wide_add
from topgrad_numpy.ops.conv_rows import RowPatches, kernel_rows, row_patch_shape, tap_rows, tap_rows_tn
from topgrad_numpy.ops.gemm_operands import computed


def _strided(a: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """A read-only strided view of `a`; ~8x cheaper than `as_strided` when `a` is contiguous
    (im2col takes one view per chunk, hundreds per training step)."""
    if not a.flags.c_contiguous:
        return as_strided(a, shape=shape, strides=strides, writeable=False)
    view = np.ndarray(shape, a.dtype, a, 0, strides)
    view.flags.writeable = False
    return view


TAPS_BELOW = 4
"""Input channels below which im2col copies tap by tap (see `im2col`); measured: 3x faster for
one channel, 1.4x for three, slower from four on."""


def _tap_by_tap(C: int) -> bool:
    """Does im2col copy C-channel patches tap by tap, making them column-major? The convolution's
    few-channel paths (the bias as a row of ones, planar padding, col2im for dL/dx) key on it."""
    return C < TAPS_BELOW


def im2col(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, out: np.ndarray | None = None) -> np.ndarray:
    """Patches of padded xp as a (B*Ho*Wo, kh*kw*C) matrix: a strided view copied once, into
    `out` (a flat scratch buffer at least that large) when given; from a contiguous xp with
    four or more channels, one kernel row's kw*C floats at a time (`_im2col_runs`).

    With few channels a patch row is only kw*C elements long, so the copy instead runs tap by
    tap along image rows and the result is column-major (the transpose of a row-major
    (kh*kw*C, B*Ho*Wo) array); BLAS reads either order. Callers pass one `out` for all chunks
    of a call: a fresh megabyte-sized array per chunk lands in new memory every time (page
    faults where glibc maps it, cache misses where it comes from the heap)."""
    B, Hp, Wp, C = xp.shape
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    s0, s1, s2, s3 = xp.strides
    if not _tap_by_tap(C) and xp.flags.c_contiguous and xp.size and (kh, kw, sh, sw) != (1, 1, 1, 1):
        return _im2col_runs(xp, kh, kw, sh, sw, Ho, Wo, out)
    if _tap_by_tap(C):
        view = _strided(xp, (kh, kw, C, B, Ho, Wo), (s1, s2, s3, s0, s1 * sh, s2 * sw))
    else:
        view = _strided(xp, (B, Ho, Wo, kh, kw, C), (s0, s1 * sh, s2 * sw, s1, s2, s3))
    if out is None:
        cols = view.reshape(view.size)
    else:
        cols = out[: view.size]
        cols.reshape(view.shape)[...] = view
    if _tap_by_tap(C):
        return cols.reshape(kh * kw * C, B * Ho * Wo).T
    return cols.reshape(B * Ho * Wo, kh * kw * C)


def _im2col_runs(
    xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, Ho: int, Wo: int, out: np.ndarray | None,
    top: int = 0, left: int = 0,
) -> np.ndarray:
    """im2col of a C-contiguous xp (of its window from row `top`, column `left` on), copying
    each kernel row's kw*C contiguous floats as one opaque (void) element: numpy's copy then
    loops over whole runs instead of running its inner loop only kw*C elements long (2x faster
    for 16 channels, 1.25x for 64; a window of the padded gradient, 1.4-2.4x)."""
    B, _, _, C = xp.shape
    s0, s1, s2, _ = xp.strides
    run = np.dtype((np.void, kw * C * xp.itemsize))
    src = np.ndarray((B, Ho, Wo, kh), run, xp, top * s1 + left * s2, (s0, s1 * sh, s2 * sw, s1))
    src.flags.writeable = False
    size = B * Ho * Wo * kh * kw * C
    cols = np.empty(size, xp.dtype) if out is None else out[:size]
    cols.view(run).reshape(src.shape)[...] = src
    return cols.reshape(B * Ho * Wo, kh * kw * C)


def _valid(o: int, k: int, s: int, p: int, n: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose input index o*s + k - p lands inside [0, n)."""
    lo = max(0, -((k - p) // s)) if k < p else 0
    hi = min(o, (n - 1 + p - k) // s + 1) if n - 1 + p - k >= 0 else 0
    return lo, max(lo, hi)


def col2im(
    gcols: np.ndarray, gx: np.ndarray, kh: int, kw: int, sh: int, sw: int,
    ph: int, pw: int, Ho: int, Wo: int, zero: bool = True,
) -> np.ndarray:
    """Scatter-add patch gradients (a (B*Ho*Wo, kh*kw*C) matrix in either memory order, as
    `im2col` makes it) onto the unpadded (B, H, W, C) image `gx` (zeroed here first, unless
    `zero` is False): kh*kw strided slice additions, never the slow unbuffered `np.add.at`.

    Column-major patches (few channels) are added channel by channel, each a plane of image rows,
    so numpy's inner loop runs along a row instead of over C values: 3x faster for 3 channels."""
    B, H, W, C = gx.shape
    by_plane = not gcols.flags.c_contiguous
    if by_plane:  # column-major: rows of (kh, kw, C) taps
        g6 = gcols.T.reshape(kh, kw, C, B, Ho, Wo)
        planes = gx.transpose(3, 0, 1, 2)
    else:
        g6 = gcols.reshape(B, Ho, Wo, kh, kw, C)
    if zero:
        gx[...] = 0.0
    for i in range(kh):
        ylo, yhi = _valid(Ho, i, sh, ph, H)
        if ylo >= yhi:
            continue
        ys = slice(ylo * sh + i - ph, (yhi - 1) * sh + i - ph + 1, sh)
        for j in range(kw):
            xlo, xhi = _valid(Wo, j, sw, pw, W)
            if xlo >= xhi:
                continue
            xs = slice(xlo * sw + j - pw, (xhi - 1) * sw + j - pw + 1, sw)
            if by_plane:
                for c in range(C):
                    planes[c, :, ys, xs] += g6[i, j, c, :, ylo:yhi, xlo:xhi]
            else:
                gx[:, ys, xs, :] += g6[:, ylo:yhi, xlo:xhi, i, j, :]
    return gx


REUSE_BELOW = 0.8
"""Output positions per input position below which a stride-1 backward takes dL/dw from x's
patches rather than from the gradient patches made for dL/dx (a row per input position). 32 ->
32 at batch 128 on the Intel host: 5x5 unpadded on 14x14 (100 outputs per 196 inputs) 35.6 ->
27.7 ms, 3x3 unpadded on 8x8 (0.56) 4.0 -> 3.4, on 15x15 (0.75) 13.4 -> 12.9; even at 0.81,
and 3% slower at 0.86 (16 channels)."""

CHUNK_BYTES = 1 << 20 if cpu_cache.l2_bytes() >= 2 << 20 else 2 << 20
"""Patch-matrix bytes per GEMM: bounds im2col memory and keeps the patches in cache for the
GEMM. Half the L2 where a core has 2 MiB or more, so that the chunk's padded input and output
fit beside them (an Intel core with 2 MiB, forward + backward against 2 MiB chunks: 16->16 3x3
-8%, 32->32 -9%, the other layers -7% to +3%, the one-channel stem +12%; deepconv's step -4%);
2 MiB on smaller L2s, where no chunk worth a GEMM fits and 2 MiB measured fastest (Zen 3, Zen
4, Zen 5; 16 MiB is ~40% slower)."""


ROW_CHUNK_POSITIONS = 512
"""A row chunk holds at least this many positions (GEMM rows). OpenBLAS's GEMMs of few rows do
not run in parallel (K = 1568, N = 32 on two threads: 1.02x one thread's speed at 49 rows, 1.9x
from 196) and run slowly against a large kernel matrix: 7-row chunks of 14x14 images made a 7x7
layer's step 1.47x slower on two threads, 4-row chunks of a 256 -> 256 layer at 28x28 1.37x on
one. A floor of four kernel matrices per chunk as well bought nothing over this one and kept a
batch-1 256 -> 512 layer in one chunk (25 MiB against 22; one of two threads idle)."""


def plan_chunks(
    batch: int, rows: int, bytes_per_row: float, step: int = 1, row_width: int = 1, scale: int = 1
) -> list[Chunk]:
    """Consecutive chunks whose patch matrices hold about `scale` times CHUNK_BYTES each: whole
    images where one fits, else equal ranges of one image's rows, a multiple of `step` rows each
    (the stride, for x's rows) and at least ROW_CHUNK_POSITIONS positions (`row_width` per row).
    A single large image's patches then stay a chunk's size: a 64 -> 64 3x3 layer on one 56x56
    image held 7 MiB of them, three times PyTorch's peak."""
    chunk = scale * CHUNK_BYTES
    size = max(chunk, ROW_CHUNK_POSITIONS * bytes_per_row / max(1, row_width))
    if rows * bytes_per_row <= size or rows <= step:
        per = max(1, int(chunk // max(1.0, rows * bytes_per_row)))
        return image_chunks(batch, per, rows)
    pieces = -(-rows // max(step, int(size // bytes_per_row) // step * step))
    per_rows = -(-rows // (pieces * step)) * step  # equal pieces, not a full one and a sliver
    return [Chunk(slice(i, i + 1), slice(r, min(rows, r + per_rows)))
            for i in range(batch) for r in range(0, rows, per_rows)]


def _largest(chunks: Sequence[Chunk]) -> tuple[int, int]:
    """The most images and the most rows of any of the chunks: the size of the scratch buffers
    shared by all (a thread's first chunk may be an image's short last rows)."""
    return (max((c.images.stop - c.images.start for c in chunks), default=0),
            max((c.rows.stop - c.rows.start for c in chunks), default=0))


def _positions(chunk: Chunk, per_image: int, per_row: int) -> slice:
    """The chunk's rows of a (batch * per_image, ...) array with `per_row` rows per image row:
    one run (whole images, or some rows of one image)."""
    images, rows = chunk
    return slice(images.start * per_image + rows.start * per_row,
                 (images.stop - 1) * per_image + rows.stop * per_row)


class _Padder:
    """Pads slices of a batch, or a window of their rows, into one reused zero-bordered buffer
    (side borders are written once; a window's rows above or below the image are zeroed on each
    call). A padding is an int (both sides) or a (before, after) pair; `rows` is the most padded
    rows a window takes (default: all). A `planar` buffer holds each channel as a plane, (C, n,
    H, W) in memory, and is returned as its NHWC view; it is made even without padding."""

    def __init__(
        self, n: int, H: int, W: int, C: int, ph: Any, pw: Any, dtype: Any, planar: bool = False,
        rows: int | None = None,
    ) -> None:
        (self.top, bottom), (self.left, right) = (p if isinstance(p, tuple) else (p, p) for p in (ph, pw))
        self.H, self.W = H, W
        self.height = self.top + H + bottom
        padded = self.top or bottom or self.left or right
        shape = (n, self.height if rows is None else max(0, min(rows, self.height)), self.left + W + right, C)
        self.buf = None
        if planar:
            self.buf = np.zeros((C, *shape[:3]), dtype=dtype).transpose(1, 2, 3, 0)
        elif padded:
            self.buf = np.zeros(shape, dtype=dtype)

    def __call__(self, x: np.ndarray, images: slice, rows: slice | None = None) -> np.ndarray:
        """x[images] padded, or only its padded rows `rows` (a row chunk's window: the buffer is a
        window's size, not an image's, on each thread)."""
        if self.buf is None:
            return x[images] if rows is None else x[images, rows]
        if rows is None:
            xp = self.buf[: images.stop - images.start]
            xp[:, self.top : self.top + self.H, self.left : self.left + self.W] = x[images]
            return xp
        lo = rows.start
        xp = self.buf[: images.stop - images.start, : rows.stop - lo]
        d0, d1 = rows_inside(lo, rows.stop - lo, self.top, self.H)  # the window's rows of x
        xp[:, :d0] = 0.0  # rows of a previous window may lie where this one has padding
        xp[:, d1:] = 0.0
        xp[:, d0:d1, self.left : self.left + self.W] = x[images, lo + d0 - self.top : lo + d1 - self.top]
        return xp


def _bias(out2: np.ndarray, b: np.ndarray) -> None:
    """out2 (N, C) += b, on a (N/k, k*C) view so numpy's inner loop is long for small C."""
    wide_add(out2, b)


def _patch_chunks(
    x: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...], ones: bool = False
) -> Iterator[tuple[Chunk, slice, np.ndarray]]:
    """Each chunk (of output rows) with its rows of the output (`_positions`) and its patch matrix
    (im2col of the padded images' window); every chunk's patches are built in the same buffer, so
    each matrix is only valid until the next. With `ones` (column-major patches only:
    `_tap_by_tap` channels), a last column of ones."""
    kh, kw, sh, sw, ph, pw, Ho, Wo = geo
    _, H, W, C = x.shape
    K = kh * kw * C
    # two or three channels at stride 1: padded channel by channel, so that im2col's tap-by-tap
    # copy reads along image rows, not every C-th float (3 -> 32 at batch 128: forward 3.0 -> 2.75
    # ms, dL/dw 4.0 -> 3.7; at stride 2 the transposing copy costs more than it saves, +10%)
    planar = C > 1 and _tap_by_tap(C) and sh == sw == 1
    n0, rows0 = _largest(chunks)
    window = None if rows0 == Ho else input_rows(slice(0, rows0), sh, kh)[1]  # a row chunk's padded rows
    pad = _Padder(n0, H, W, C, ph, pw, x.dtype, planar=planar, rows=window)
    scratch = np.empty(n0 * rows0 * Wo * (K + 1 if ones else K), dtype=x.dtype)
    for chunk in chunks:
        images, rows = chunk  # a row chunk pads only the padded rows it reads
        whole = rows.stop - rows.start == Ho
        xp = pad(x, images) if whole else pad(x, images, slice(*input_rows(rows, sh, kh)))
        cols = im2col(xp, kh, kw, sh, sw, scratch)
        if ones:  # the patches are scratch's first K rows of m (column-major): one more row
            m = cols.shape[0]
            scratch[K * m : (K + 1) * m] = 1.0
            cols = scratch[: (K + 1) * m].reshape(K + 1, m).T
        yield chunk, _positions(chunk, Ho * Wo, Wo), cols


def _weight_grad(
    x: np.ndarray, g2: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...], ones: bool = False
) -> np.ndarray:
    """dL/dw as sum over chunks of im2col(x)^T @ grad: only pairs of x and the gradient that the
    forward paired (so NaN or Inf in x reaches exactly the weights PyTorch's does). With `ones`
    (few channels, see `_patch_chunks`) a last row, the gradient's column sums: dL/db."""
    kh, kw = geo[:2]

    def products(group: Sequence[Chunk]) -> _ChunkProducts:  # per chunk, summed in order below
        parts = _ChunkProducts(group, g2.dtype, geo[6])
        for chunk, at, cols in _patch_chunks(x, group, geo, ones):
            parts.add(chunk, gemm.matmul_tn(cols, g2[at]))
        return parts

    shape = (kh * kw * x.shape[3] + int(ones), g2.shape[1])
    return _add_in_chunk_order(parallel.map_groups(products, chunks), shape, g2.dtype)


class _ChunkProducts:
    """A thread group's dL/dw products, summed in an order no thread count changes: a block's
    products (the row chunks of one image, or one chunk of whole images) in chunk order into the
    block's sum, its first product itself; the block sums in order into the total
    (`_add_in_chunk_order`). The group with the first chunk adds each of its blocks into the
    total once the block's last rows (`rows`, an image's) are in; any other keeps, in order, the
    raw products that continue a block begun before it, then one sum per block. So a group
    holds one weight-sized sum per image it covers, not one product per row chunk (a 256 -> 256
    layer on 8 images at 28x28 kept 66 MB of them on a second thread), plus the raw products of
    the image it starts in: one per row chunk, each no larger than the chunk's patches (which the
    code before row chunks held whole) up to ROW_CHUNK_POSITIONS output channels."""

    def __init__(self, group: Sequence[Chunk], dtype: Any, rows: int) -> None:
        self.first = bool(group) and group[0].images.start == group[0].rows.start == 0
        self.dtype, self.rows = dtype, rows  # the total's dtype; an image's rows in the chunks
        self.total: np.ndarray | None = None  # the first group's: its complete blocks
        self.kept: list[tuple[int, bool, np.ndarray]] = []  # (block, a raw product?, array)

    def add(self, chunk: Chunk, part: np.ndarray) -> None:
        """The next chunk's product: into its block's sum, kept raw, or beginning a new block."""
        images, rows = chunk
        if self.first and rows.start == 0 and rows.stop == self.rows:  # a block of its own
            self.total = _fold(self.total, part, self.dtype)
            return
        block = images.start
        if self.kept and self.kept[-1][0] == block:  # the block goes on
            _, raw, block_sum = self.kept[-1]
            if raw:  # one an earlier group began: its products stay raw (`_add_in_chunk_order`)
                self.kept.append((block, True, part))
                return
            np.add(block_sum, part, out=block_sum)
        elif not self.kept and not self.first and rows.start > 0:  # a block an earlier group began
            self.kept.append((block, True, part))
            return
        else:  # a block begins
            self.kept.append((block, False, part))
        if self.first and rows.stop == self.rows:  # its last rows are in: into the total
            self.total = _fold(self.total, self.kept.pop()[2], self.dtype)


def _fold(total: np.ndarray | None, block_sum: np.ndarray, dtype: Any) -> np.ndarray:
    """total + a block's sum, the total starting from zeros of `dtype`. That first zeros + sum is
    the sum plus 0.0 in place where its dtype is the total's (the same bits: -0.0 becomes +0.0;
    one weight-sized array less at the peak)."""
    if total is None:
        if block_sum.dtype == dtype:
            block_sum += 0.0
            return block_sum
        total = np.zeros(block_sum.shape, dtype)
    total += block_sum
    return total


def _add_in_chunk_order(groups: list[_ChunkProducts], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Every group's dL/dw products added as one serial loop over the chunks adds them (block
    sums in order, see `_ChunkProducts`): the same bits whatever the thread count."""
    total = groups[0].total if groups else None
    block_sum = None
    for products in groups:
        for _, raw, part in products.kept:
            if raw:  # continues the block summed so far
                block_sum += part
                continue
            if block_sum is not None:
                total = _fold(total, block_sum, dtype)
            block_sum = part
    if block_sum is not None:
        total = _fold(total, block_sum, dtype)
    return np.zeros(shape, dtype) if total is None else total


def _input_grad_col2im(
    w: np.ndarray, g2: np.ndarray, x_shape: tuple[int, ...], chunks: Sequence[Chunk], geo: tuple[int, ...]
) -> np.ndarray:
    """dL/dx for fewer than TAPS_BELOW input channels, any stride: per chunk, a GEMM to patch
    gradients, column-major (tap by tap, as im2col makes these patches) so that col2im adds long
    rows, then col2im onto the rows of x those output rows reach. A row chunk's rows overlap the
    next one's, so each adds onto what the one before added (serially: no threads here)."""
    kh, kw, sh, sw, ph, pw, Ho, Wo = geo
    H = x_shape[1]
    w2 = w.reshape(-1, w.shape[3])
    gx = np.zeros(x_shape, dtype=g2.dtype)
    for chunk in chunks:
        images, rows = chunk
        gcols = (w2 @ g2[_positions(chunk, Ho * Wo, Wo)].T).T
        y0 = max(0, rows.start * sh - ph)  # x's first row these output rows reach, and its padding
        y1 = min(H, (rows.stop - 1) * sh - ph + kh)
        col2im(gcols, gx[images, y0:y1], kh, kw, sh, sw, ph - rows.start * sh + y0, pw,
               rows.stop - rows.start, Wo, zero=False)
    return gx


def _axis_phases(n_in: int, n_out: int, k: int, s: int, p: int) -> tuple[list[Any], int, int]:
    """How the gradient reaches one axis of x, residue by residue of the stride.

    Input position y = r + s*m receives from kernel taps i with (r + p - i) % s == 0, from
    output position m + (r + p - i) // s. Per residue r: (r, taps ordered so that this output
    offset rises by one per tap, the first offset, how many positions m). Also the zero padding
    the gradient needs before and after for every offset to land inside it."""
    phases = []
    for r in range(min(s, n_in)):
        taps = [i for i in range(k - 1, -1, -1) if (r + p - i) % s == 0]
        phases.append((r, taps, (r + p - taps[0]) // s if taps else 0, len(range(r, n_in, s))))
    before = max([0] + [-d for _, taps, d, _ in phases if taps])
    after = max([0] + [m + d + len(taps) - 1 - n_out for _, taps, d, m in phases if taps])
    return phases, before, after


def _phase_rows(rows: slice, s: int, m: int, n_in: int) -> tuple[int, int]:
    """The positions [lo, hi) of a phase of x's rows (r + s * k for k < m, r < s) inside a chunk's
    rows: these start at a multiple of the stride s and end at one or at x's last row n_in."""
    return rows.start // s, m if rows.stop == n_in else min(m, rows.stop // s)


def _correlation_plan(
    rows: slice, live: list[Any], s: int, n_in: int, top: int
) -> tuple[list[tuple[int, int]], slice]:
    """A chunk's rows of x, for the correlation: each live phase's positions in them
    (`_phase_rows`) and the rows of the padded gradient those phases read (empty where none
    has a position)."""
    spans = [_phase_rows(rows, s, my, n_in) for (_, _, _, my), _ in live]
    reads = [(top + dy + lo, top + dy + hi + len(taps) - 1)
             for ((_, taps, dy, _), _), (lo, hi) in zip(live, spans) if lo < hi]
    if not reads:
        return spans, slice(0, 0)
    return spans, slice(min(a for a, _ in reads), max(b for _, b in reads))


def _correlation_buffers(
    plans: dict[tuple[int, int], Any], live: list[Any], n_in: int
) -> tuple[int, int, int]:
    """Per image, for a group's chunk plans (`_correlation_plan`, by their rows of x): the most
    patch elements per Cout channels of one phase, the most positions of one phase, and the most
    padded-gradient rows a row chunk reads (0 for whole images, which pad all of it)."""
    patch = phase = window = 0
    for (r0, r1), (spans, reads) in plans.items():
        window = max(window, reads.stop - reads.start if r1 - r0 < n_in else 0)
        for ((_, taps_y, _, _), (_, taps_x, _, mx)), (lo, hi) in zip(live, spans):
            patch = max(patch, (hi - lo) * mx * len(taps_y) * len(taps_x))
            phase = max(phase, (hi - lo) * mx)
    return patch, phase, window


def _input_grad_by_phases(
    x: np.ndarray, w: np.ndarray, grad: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...],
    need_w: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """dL/dx as a stride-1 correlation of the (padded) gradient with the flipped kernel, once per
    phase of the stride: each phase of x (rows r::s, columns q::s) takes only the kernel taps
    that reach it, so no patch gradients are scattered back (no col2im). Stride 1 is one phase
    with every tap, and its patch matrix (one row per input position) also gives dL/dw, as
    gcols^T @ x with the kernel flipped back; for other strides dL/dw is left to the caller.
    `chunks` are of x's rows (`plan_chunks` with the stride as its step)."""
    kh, kw, sh, sw, ph, pw, Ho, Wo = geo
    _, H, W, C = x.shape
    rows, top, bottom = _axis_phases(H, Ho, kh, sh, ph)
    cols_, left, right = _axis_phases(W, Wo, kw, sw, pw)
    phases = [(r, q) for r in rows for q in cols_]
    live = [(r, q) for r, q in phases if r[1] and q[1]]
    flipped = w.transpose(0, 1, 3, 2)  # (kh, kw, Cout, Cin): taps of the gradient's correlation
    kernels = [gemm.aligned(flipped[np.ix_(r[1], q[1])].reshape(-1, C)) for r, q in live]
    # one phase that every tap reaches (stride 1); a stride larger than the input also leaves one
    # phase, but then only some taps reach it (or none, where the padding covers every window)
    whole = len(phases) == len(live) == 1 and len(live[0][0][1]) == kh and len(live[0][1][1]) == kw
    gx = np.empty(x.shape, dtype=grad.dtype)
    want_w = whole and need_w
    # with a stride, each phase's GEMM goes a row of positions at a time straight into dL/dx's
    # strided rows where OpenBLAS has its small-matrix kernels (3% off the conv net's step); other
    # kernels pack the kernel matrix on every call (AVX2: up to 1.5x slower that way), so there
    # the phase goes whole into a scratch block and then into place
    per_row = gemm.small_kernels()

    def correlate(group: Sequence[Chunk]) -> _ChunkProducts:
        """dL/dx for each thread's chunks, in buffers of its own; each chunk's dL/dw product."""
        by_rows: dict[tuple[int, int], Any] = {}  # whole images all share one plan
        for chunk in group:
            key = chunk.rows.start, chunk.rows.stop
            if key not in by_rows:
                by_rows[key] = _correlation_plan(chunk.rows, live, sh, H, top)
        plans = [(chunk, by_rows[chunk.rows.start, chunk.rows.stop]) for chunk in group]
        n0 = _largest(group)[0]
        patch, phase, window = _correlation_buffers(by_rows, live, H)
        phase = 0 if whole or per_row else phase
        pad = _Padder(n0, Ho, Wo, w.shape[3], (top, bottom), (left, right), grad.dtype,
                      rows=window or None)
        scratch = np.empty(n0 * patch * w.shape[3], dtype=grad.dtype)  # the largest phase's patches
        phase_out = np.empty(n0 * phase * C, dtype=grad.dtype)  # a phase of dL/dx, before its place
        products = _ChunkProducts(group, w.dtype, H)  # w's dtype: the total's (`kernels`)
        untouched = len(live) < len(phases)  # positions no tap reaches (a kernel smaller than the stride)
        for chunk, (spans, reads) in plans:
            images, rows = chunk
            n = images.stop - images.start
            if untouched:
                gx[images, rows] = 0.0
            if reads.start >= reads.stop:
                continue
            if rows.stop - rows.start < H:  # a row chunk: the padded gradient's rows it reads
                gp, base = pad(grad, images, reads), reads.start
            else:
                gp, base = pad(grad, images), 0
            for ((r, taps_y, dy, _), (q, taps_x, dx, mx)), kernel, (lo, hi) in zip(live, kernels, spans):
                if lo >= hi:
                    continue
                ty, tx = len(taps_y), len(taps_x)
                y0, m = top + dy + lo - base, hi - lo  # the phase's first row in gp; its rows in the chunk
                if whole:  # the padded gradient's window that every tap reads
                    region = gp[:, y0 : y0 + m + ty - 1, left + dx : left + dx + mx + tx - 1]
                    gcols = im2col(region, ty, tx, 1, 1, scratch)
                    gemm.matmul(gcols, kernel, gx[images, lo:hi].reshape(n * m * W, C))
                    if want_w:  # in OpenBLAS-small blocks, 14% faster than (x^T @ gcols)^T
                        products.add(chunk, gemm.matmul_tn(gcols, x[images, lo:hi].reshape(n * m * W, C)))
                    continue
                dst = gx[images, r + lo * sh : r + (hi - 1) * sh + 1 : sh, q::sw]
                if per_row and ty == tx == 1:  # one tap: the gradient's rows as they lie, no patches
                    np.matmul(gp[:, y0 : y0 + m, left + dx : left + dx + mx], kernel, out=dst)
                    continue
                # the window's patches, by whole kernel rows from the (C-contiguous) padded gp
                lhs = _im2col_runs(gp, ty, tx, 1, 1, m, mx, scratch, y0, left + dx)
                if per_row:
                    np.matmul(lhs.reshape(n, m, mx, ty * tx * grad.shape[3]), kernel, out=dst)
                else:
                    part = phase_out[: n * m * mx * C].reshape(n * m * mx, C)
                    dst[...] = gemm.matmul(lhs, kernel, part).reshape(dst.shape)
        return products

    products = parallel.map_groups(correlate, chunks)
    if not want_w:
        return gx, None
    return gx, _unflipped(_add_in_chunk_order(products, kernels[0].shape, kernels[0].dtype), x, grad, geo)


def _unflipped(gwf: np.ndarray, x: np.ndarray, grad: np.ndarray, geo: tuple[int, ...]) -> np.ndarray:
    """dL/dw from dL/d(flipped kernel) (kh*kw*Cout, Cin), the product of the gradient's patches and
    x; from x's own patches where that product misses how the forward paired non-finite values."""
    kh, kw, _, _, ph, pw = geo[:6]
    C, Cout = x.shape[3], grad.shape[3]
    gw = np.ascontiguousarray(gwf.reshape(kh, kw, Cout, C)[::-1, ::-1].transpose(0, 1, 3, 2))
    # pair x and the gradient as the forward did (x's padded patches), as PyTorch does, where
    # NaN/Inf would otherwise miss the padding's zeros: in x (then some tap of gw is not finite),
    # or in the gradient at an output whose window lies wholly in the padding (padding >= kernel)
    outside = (ph >= kh or pw >= kw) and not np.isfinite(grad).all()
    if outside or not np.isfinite(gw).all():
        gw = _weight_grad(x, grad.reshape(-1, Cout), _output_chunks(x, geo, C), geo)
    return gw


def _input_grad_by_rows(
    x: np.ndarray, w: np.ndarray, grad: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...],
    need_w: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """dL/dx of a stride-1 convolution as the gradient's stride-1 convolution with the flipped
    kernel by kernel rows (`conv_rows`; `chunks` from `_row_plan`); with `need_w`, dL/dw from the
    same row patches times x."""
    kh, kw, _, _, ph, pw = geo[:6]
    B, H, W, C = x.shape
    Cout = w.shape[3]
    kernels = kernel_rows(w[::-1, ::-1].transpose(0, 1, 3, 2))  # the correlation's (kh, kw, Cout, Cin)
    gx = np.empty((B, H * W, C), dtype=grad.dtype)
    pads = (kh - 1 - ph, kh - 1 - ph, kw - 1 - pw, kw - 1 - pw)
    x3 = x.reshape(B, H * W, C) if need_w else None

    def correlate(group: Sequence[Chunk]) -> _ChunkProducts:
        return _convolve_rows(grad, (kh, kw), (1, 1), pads, group, forward=(kernels, gx), b3=x3, rows=H,
                              dtype=kernels[0].dtype)

    products = parallel.map_groups(correlate, chunks)
    gx4 = gx.reshape(x.shape)
    if not need_w:
        return gx4, None
    gwf = _add_in_chunk_order(products, (kh * kw * Cout, C), kernels[0].dtype)
    return gx4, _unflipped(gwf, x, grad, geo)


def _output_chunks(x: Any, geo: tuple[int, ...], channels: int, scale: int = 1) -> list[Chunk]:
    """Chunks of the output's rows whose patches, of `channels` channels, hold about `scale`
    times CHUNK_BYTES."""
    kh, kw, _, _, _, _, Ho, Wo = geo
    return plan_chunks(x.shape[0], Ho, Wo * kh * kw * channels * x.itemsize, row_width=Wo, scale=scale)


ROW_PATCH_SCALE = 0.5
"""Row-patch bytes per chunk of the kernel-row path, in CHUNK_BYTES: the 16 -> 16 layer at 28x28
ran fastest in chunks of 4 images (0.6 MiB of row patches), the 32- and 64-channel ones in 8."""


def _row_plan(x: np.ndarray, C: int, n_out: int, kh: int, kw: int, sh: int,
              pads: tuple[int, ...], rows: int, cols: int) -> list[Chunk] | None:
    """Whole-image chunks for the kernel-row path (`conv_rows`) of a convolution of x (its images
    padded by `pads`, at row stride sh, `rows` x `cols` outputs of `n_out` channels each), or
    None where that path does not apply: a single kernel row, few channels (`_tap_by_tap`), a
    padding beyond the kernel, an x that is not C-contiguous, an image whose row patches outgrow
    a chunk, or GEMMs that OpenBLAS's small-matrix kernels cannot take in blocks of MIN_ROWS
    (`gemm.block_len`; also where numpy's BLAS has no such kernels). Measured there: 256 -> 256
    at 7x7 (K = 768, N = 256) 1.61 -> 1.99x PyTorch's time by kernel rows; on AVX2 (Haswell)
    kernels, three K = 3C GEMMs with their additions were 1.3-1.6x slower than im2col."""
    if kh == 1 or _tap_by_tap(C) or not x.flags.c_contiguous or not x.size:
        return None
    if not gemm.block_len(kw * C, n_out):
        return None
    top, bottom, left, right = pads
    if min(pads) < 0 or max(top, bottom) >= kh or max(left, right) >= kw:
        return None
    image = math.prod(row_patch_shape((kh, kw), sh, (rows, cols), C)) * x.itemsize  # one image's row patches
    if image > CHUNK_BYTES:  # a large image goes by row chunks, through im2col
        return None
    B, per = x.shape[0], max(1, int(ROW_PATCH_SCALE * CHUNK_BYTES // image))
    return image_chunks(B, per, rows)


COL2IM_CHUNKS = 2
"""Patch gradients per col2im call, in CHUNK_BYTES: a chunk's kh*kw*C slice additions cost the
same Python calls however few rows it has. A 7x7 stride-2 stem on RGB 224x224 images, forward +
backward with dL/dx, against whole images: batch 1 9.2 -> 9.7 ms and 12.6 -> 4.1 MiB, batch 8
77.5 -> 76.0 ms and 32.1 -> 25.5 MiB (one CHUNK_BYTES: about 10% slower; four: faster, 7.6 MiB)."""


def _convolve_rows(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int],
    group: Sequence[Chunk], forward: tuple[list[np.ndarray], np.ndarray] | None = None,
    b3: np.ndarray | None = None, rows: int = 0, dtype: Any = None,
) -> _ChunkProducts:
    """For one thread's chunks, in buffers of its own, x's row patches for a kh x kw kernel
    (`conv_rows`) and: with `forward` = (kernel rows, out), out[images] (n, Ho*Wo, N) = x's
    convolution by kernel rows; with `b3` (B, Ho*Wo, N'), each chunk's row patches times b3
    (`tap_rows_tn`), summed in chunk order into the products returned (`_ChunkProducts`, `rows`
    an image's, in `dtype`; without `b3` they stay empty)."""
    _, H, W, C = x.shape
    n0 = _largest(group)[0]
    patches = RowPatches(n0, (H, W, C), kernel, stride, pads, x.dtype)
    tmp = None
    if forward is not None:
        kernels, out = forward
        tmp = np.empty((n0, *out.shape[1:]), out.dtype)
    products = _ChunkProducts(group, dtype, rows)
    for chunk in group:
        images = chunk.images
        kernel_row_patches = patches(x, images)
        if tmp is not None:
            tap_rows(kernel_row_patches, kernels, out[images], tmp[: images.stop - images.start])
        if b3 is not None:
            products.add(chunk, tap_rows_tn(kernel_row_patches, b3[images], dtype))
    return products


def _weight_grad_by_rows(
    x: np.ndarray, grad: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...]
) -> np.ndarray:
    """dL/dw as the sum over x's row patches (`conv_rows`, `chunks` from `_row_plan`) of each
    kernel row's patches^T @ grad: the pairs of x and the gradient that the forward paired, with
    a third of im2col's copy (at stride 2, 16 -> 32 channels at 28x28: 3.9 -> 3.5 ms)."""
    kh, kw, sh, sw, ph, pw, Ho, Wo = geo
    B, Cout = x.shape[0], grad.shape[3]
    g3 = grad.reshape(B, Ho * Wo, Cout)
    dtype = np.result_type(x.dtype, grad.dtype)

    def products(group: Sequence[Chunk]) -> _ChunkProducts:
        return _convolve_rows(x, (kh, kw), (sh, sw), (ph, ph, pw, pw), group, b3=g3, rows=Ho, dtype=dtype)

    return _add_in_chunk_order(parallel.map_groups(products, chunks), (kh * kw * x.shape[3], Cout), dtype)


class Conv2d(NumpyOp):
    """Cross-correlation, x (B,H,W,Cin) * w (kh,kw,Cin,Cout) + b, as im2col + GEMM over chunks of
    the batch, or of one image's rows where its patches alone outgrow a chunk (each chunk's patch
    matrix ~CHUNK_BYTES, so patch memory stays small and in cache). Saves x and w (references,
    no extra memory); backward rebuilds the patches the same way, chunk by chunk."""

    def forward(
        self, x: np.ndarray, w: np.ndarray, b: Any = None, stride: Any = 1, padding: Any = 0
    ) -> np.ndarray:
        """The NHWC output (B, Ho, Wo, Cout): each chunk of the batch as im2col patches times w;
        raw arrays in the dtype they count as (`computed`: float32 or float64)."""
        x, w, b = computed("Conv2d", ("x", "w", "b"), x, w, b)
        (sh, sw), (ph, pw), (Ho, Wo) = conv_geometry(x.shape, w.shape, None if b is None else b.shape,
                                                     stride, padding)
        B, _, _, C = x.shape
        kh, kw, _, Cout = w.shape
        # few channels: the bias as the kernel's last row, against a column of ones in the patches,
        # so the GEMM writes the output once (a 1 -> 32 layer at batch 128: 1.47 -> 1.06 ms); the
        # output of a wider input is as large against a far larger GEMM, and its bias stays a pass
        fold = b is not None and _tap_by_tap(C) and b.dtype == w.dtype
        out = np.empty((B, Ho * Wo, Cout), dtype=np.result_type(x, w, *(() if b is None else (b.dtype,))))
        geo = (kh, kw, sh, sw, ph, pw, Ho, Wo)
        out2 = out.reshape(B * Ho * Wo, Cout)
        by_rows = _row_plan(x, C, Cout, kh, kw, sh, (ph, ph, pw, pw), Ho, Wo)
        if by_rows is None:
            w2 = w.reshape(kh * kw * C, Cout)
            w2 = gemm.aligned(np.concatenate([w2, b[None]]) if fold else w2)  # once, not per chunk

            def convolve(group: Sequence[Chunk]) -> None:  # each thread's chunks, in buffers of its own
                for _, at, cols in _patch_chunks(x, group, geo, ones=fold):
                    gemm.matmul(cols, w2, out2[at])

            parallel.map_groups(convolve, _output_chunks(x, geo, C))
        else:
            kernels, pads = kernel_rows(w), (ph, ph, pw, pw)

            def convolve_by_rows(group: Sequence[Chunk]) -> None:
                _convolve_rows(x, (kh, kw), (sh, sw), pads, group, forward=(kernels, out))

            parallel.map_groups(convolve_by_rows, by_rows)
        if b is not None and not fold:
            _bias(out2, b)
        self.save_for_backward(x=x, w=w)
        self.stride, self.padding = (sh, sw), (ph, pw)  # public names: graph() and to_dot show them
        self.geometry = (x.shape, Ho, Wo, b is not None)
        return out.reshape(B, Ho, Wo, Cout)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """Gradients of x (grad correlated with w, or col2im for few channels), w (patchesᵀ @ grad), b."""
        x, w = self._intermediate
        x_shape, Ho, Wo, has_bias = self.geometry
        (sh, sw), (ph, pw) = self.stride, self.padding
        B, _, _, C = x_shape
        kh, kw, _, Cout = w.shape
        geo = (kh, kw, sh, sw, ph, pw, Ho, Wo)
        grad = np.ascontiguousarray(grad)
        g2 = grad.reshape(B * Ho * Wo, Cout)
        need_x, need_w = self.needs_grad(0), self.needs_grad(1)  # no dL/dx for an input batch
        # dL/dx as a correlation of the gradient, phase by phase of the stride, except for a few
        # input channels (an image batch), where GEMMs to patch gradients and col2im are cheaper,
        # and for a kernel with a NaN or Inf tap: the correlation would meet it with the padded
        # gradient's zeros (0 * NaN) and spread it to pixels the tap never reads; col2im does not
        by_phases = need_x and not _tap_by_tap(C) and bool(np.isfinite(w).all())
        # the correlation's patches have Cout channels, x's (for dL/dw and col2im) C: in chunks
        # sized by Cout, a 1 -> 32 stem at batch 128 ran 128 GEMMs of one image each (1 MiB
        # chunks), and its backward took 2.56 ms against 1.86 in chunks sized by C (Intel Xeon);
        # with dL/dx through col2im, 8.7 ms against 5.1
        channels = max(C, Cout) if by_phases else C
        gx = gw = None
        if by_phases:
            # stride 1 takes dL/dw from the correlation's patches, one row per input position; where
            # the outputs are far fewer (a large kernel, no padding), x's patches have fewer rows
            wasted = Ho * Wo < REUSE_BELOW * x_shape[1] * x_shape[2]
            H = x_shape[1]
            full = (kh - 1 - ph, kh - 1 - ph, kw - 1 - pw, kw - 1 - pw)  # the correlation's padding
            # at stride 1 the correlation is a stride-1 convolution of the gradient, by kernel rows
            strided = (sh, sw) != (1, 1)
            by_rows = None if strided else _row_plan(grad, Cout, C, kh, kw, 1, full, H, x_shape[2])
            if by_rows is not None:
                gx, gw = _input_grad_by_rows(x, w, grad, by_rows, geo, need_w and not wasted)
            else:  # the correlation's chunks are of x's rows, as many bytes as the output's
                x_rows = plan_chunks(B, H, Ho * Wo * kh * kw * channels * x.itemsize / max(1, H), step=sh,
                                     row_width=x_shape[2])
                gx, gw = _input_grad_by_phases(x, w, grad, x_rows, geo, need_w and not wasted)
        elif need_x:
            gx = _input_grad_col2im(w, g2, x_shape, _output_chunks(x, geo, C, COL2IM_CHUNKS), geo)
        gb = None
        if need_w and gw is None:
            x_plan = _row_plan(x, C, Cout, kh, kw, sh, (ph, ph, pw, pw), Ho, Wo)
            if x_plan is not None:  # from x's row patches, as the forward made them
                gw = _weight_grad_by_rows(x, grad, x_plan, geo)
            else:
                # few channels: dL/db as the ones column's row of dL/dw, not a pass of its own
                # over the gradient (the forward's bias is in its GEMM the same way)
                fold = has_bias and _tap_by_tap(C)
                gw = _weight_grad(x, g2, _output_chunks(x, geo, channels), geo, ones=fold)
                if fold:
                    gw, gb = gw[:-1], gw[-1].copy()
        if has_bias and gb is None:
            gb = colsum(g2)
        return gx, None if gw is None else gw.reshape(w.shape), gb
