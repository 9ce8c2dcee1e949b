"""2-d convolution on NHWC images with HWIO kernels: im2col (a strided view, one copy) + GEMM,
over chunks of the batch (or of a large image's rows) so each patch matrix is small (`CHUNK_BYTES`)
and still in cache; the chunks split over the backend's threads (`parallel`), each thread with
buffers of its own.

Backward, chunk by chunk: dL/dx is a correlation of the gradient with the flipped kernel
(im2col + GEMM), one per phase of the stride (rows r::s, columns q::s each take only the taps
that reach them); with stride 1 the same patch matrix gives dL/dw, otherwise dL/dw
accumulates GEMMs with the rebuilt patch matrices of x. For fewer than four input channels
(an image batch) dL/dx is a GEMM to patch gradients and a col2im of kh*kw strided slice
additions (never `np.add.at`, which is unbuffered and slow). A constant input gets no dL/dx.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from topgrad.convolution import conv_geometry

from topgrad_numpy import cpu_cache, parallel
from topgrad_numpy.ops import gemm
from topgrad_numpy.ops._util import NumpyOp, colsum, wide_add


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
    ph: int, pw: int, Ho: int, Wo: int,
) -> np.ndarray:
    """Scatter-add patch gradients (a (B*Ho*Wo, kh*kw*C) matrix in either memory order, as
    `im2col` makes it) onto the unpadded (B, H, W, C) image `gx` (zeroed here): kh*kw strided
    slice additions, never the slow unbuffered `np.add.at`.

    Column-major patches (few channels) are added channel by channel, each a plane of image rows,
    so numpy's inner loop runs along a row instead of over C values: 3x faster for 3 channels."""
    B, H, W, C = gx.shape
    by_plane = not gcols.flags.c_contiguous
    if by_plane:  # column-major: rows of (kh, kw, C) taps
        g6 = gcols.T.reshape(kh, kw, C, B, Ho, Wo)
        planes = gx.transpose(3, 0, 1, 2)
    else:
        g6 = gcols.reshape(B, Ho, Wo, kh, kw, C)
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


class Chunk(NamedTuple):
    """Images of the batch and, of each, the rows (of the output, or of x for dL/dx's correlation)
    that one patch matrix covers: every row, unless one image's patches outgrow CHUNK_BYTES."""

    images: slice
    rows: slice


def plan_chunks(batch: int, rows: int, bytes_per_row: float, step: int = 1) -> list[Chunk]:
    """Consecutive chunks whose patch matrices hold about CHUNK_BYTES each: whole images where one
    fits, else ranges of one image's rows, a multiple of `step` rows each (the stride, for x's rows;
    `rows` itself keeps images whole). A single large image's patches then stay a chunk's size: a
    64 -> 64 3x3 layer on one 56x56 image held 7 MiB of them, three times PyTorch's peak."""
    if rows * bytes_per_row <= CHUNK_BYTES or rows <= step:
        per = max(1, int(CHUNK_BYTES // max(1.0, rows * bytes_per_row)))
        return [Chunk(slice(i, min(batch, i + per)), slice(0, rows)) for i in range(0, batch, per)]
    per_rows = max(step, int(CHUNK_BYTES // bytes_per_row) // step * step)
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
    """Pads slices of a batch into one reused zero-bordered buffer (borders are written once).
    A padding is an int (both sides) or a (before, after) pair. A `planar` buffer holds each
    channel as a plane, (C, n, H, W) in memory, and is returned as its NHWC view; it is made even
    without padding."""

    def __init__(
        self, n: int, H: int, W: int, C: int, ph: Any, pw: Any, dtype: Any, planar: bool = False
    ) -> None:
        (self.top, bottom), (self.left, right) = (p if isinstance(p, tuple) else (p, p) for p in (ph, pw))
        self.H, self.W = H, W
        self.images: slice | None = None  # the images in the buffer (a row chunk's pads once per image)
        padded = self.top or bottom or self.left or right
        shape = (n, self.top + H + bottom, self.left + W + right, C)
        self.buf = None
        if planar:
            self.buf = np.zeros((C, *shape[:3]), dtype=dtype).transpose(1, 2, 3, 0)
        elif padded:
            self.buf = np.zeros(shape, dtype=dtype)

    def __call__(self, x: np.ndarray, images: slice) -> np.ndarray:
        """x[images], padded (copied only where those are not the images padded last)."""
        if self.buf is None:
            return x[images]
        xp = self.buf[: images.stop - images.start]
        if images != self.images:
            xp[:, self.top : self.top + self.H, self.left : self.left + self.W, :] = x[images]
            self.images = images
        return xp


def _bias(out2: np.ndarray, b: np.ndarray) -> None:
    """out2 (N, C) += b, on a (N/k, k*C) view so numpy's inner loop is long for small C."""
    wide_add(out2, b)


def _patch_chunks(
    x: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...], ones: bool = False
) -> Iterator[tuple[slice, np.ndarray]]:
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
    pad = _Padder(n0, H, W, C, ph, pw, x.dtype, planar=planar)
    scratch = np.empty(n0 * rows0 * Wo * (K + 1 if ones else K), dtype=x.dtype)
    for chunk in chunks:
        xp = pad(x, chunk.images)
        r0, r1 = chunk.rows.start, chunk.rows.stop
        if (r0, r1) != (0, Ho):  # the padded rows this chunk's output rows read
            xp = xp[:, r0 * sh : (r1 - 1) * sh + kh]
        cols = im2col(xp, kh, kw, sh, sw, scratch)
        if ones:  # the patches are scratch's first K rows of m (column-major): one more row
            m = cols.shape[0]
            scratch[K * m : (K + 1) * m] = 1.0
            cols = scratch[: (K + 1) * m].reshape(K + 1, m).T
        yield _positions(chunk, Ho * Wo, Wo), cols


def _weight_grad(
    x: np.ndarray, g2: np.ndarray, chunks: Sequence[Chunk], geo: tuple[int, ...], ones: bool = False
) -> np.ndarray:
    """dL/dw as sum over chunks of im2col(x)^T @ grad: only pairs of x and the gradient that the
    forward paired (so NaN or Inf in x reaches exactly the weights PyTorch's does). With `ones`
    (few channels, see `_patch_chunks`) a last row, the gradient's column sums: dL/db."""
    kh, kw = geo[:2]

    def products(group: Sequence[Chunk]) -> list[np.ndarray]:  # per chunk, summed in order below
        parts = _ChunkProducts(group, g2.dtype)
        for at, cols in _patch_chunks(x, group, geo, ones):
            parts.add(gemm.matmul_tn(cols, g2[at]))
        return parts.kept

    shape = (kh * kw * x.shape[3] + int(ones), g2.shape[1])
    return _add_in_chunk_order(parallel.map_groups(products, chunks), shape, g2.dtype)


class _ChunkProducts:
    """A thread group's per-chunk dL/dw products, to be added in chunk order into a total of
    `dtype` (`_add_in_chunk_order`). The group at the batch's start (on one thread, every chunk)
    sums its own as they come, where nothing comes before them in that order: one weight-sized
    array instead of one per chunk (a 256 -> 256 3x3 layer at batch 16 kept eight of 2.4 MB).
    That sum starts from zeros of the total's dtype and adds each product as the total would (a
    float64 product into a float32 total rounds at each addition): the same bits for any thread
    count."""

    def __init__(self, group: Sequence[Chunk], dtype: Any) -> None:
        # the group with the first chunk (the first of `parallel.map_groups`' groups)
        self.summed = bool(group) and group[0].images.start == group[0].rows.start == 0
        self.dtype = dtype
        self.kept: list[np.ndarray] = []

    def add(self, part: np.ndarray) -> None:
        """Keep the next chunk's product, or add it to the running sum."""
        if not self.summed:
            self.kept.append(part)
            return
        if not self.kept:
            self.kept.append(np.zeros(part.shape, self.dtype))
        self.kept[0] += part


def _add_in_chunk_order(groups: list[list[np.ndarray]], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Every group's per-chunk products added in chunk order, as a serial loop adds them: the
    same bits whatever the thread count. The first group's running sum (`_ChunkProducts`, from
    zeros of the total's dtype) is the total, not added into zeros of its own: one weight-sized
    array less at the peak (a 256 -> 256 7x7 layer at batch 16 held four of 2.4 MB)."""
    parts = chain.from_iterable(groups)
    total = next(parts, None)
    if total is None:  # no chunk: an empty batch
        return np.zeros(shape, dtype)
    for part in parts:
        total += part
    return total


def _input_grad_col2im(
    w: np.ndarray, g2: np.ndarray, x_shape: tuple[int, ...], chunks: Sequence[Chunk], geo: tuple[int, ...]
) -> np.ndarray:
    """dL/dx for fewer than TAPS_BELOW input channels, any stride: per chunk (of whole images:
    col2im writes each image's dL/dx at once), a GEMM to patch gradients, column-major (tap by
    tap, as im2col makes these patches) so that col2im adds long rows, then col2im."""
    kh, kw, sh, sw, ph, pw, Ho, Wo = geo
    w2 = w.reshape(-1, w.shape[3])
    gx = np.empty(x_shape, dtype=g2.dtype)
    for chunk in chunks:
        gcols = (w2 @ g2[_positions(chunk, Ho * Wo, Wo)].T).T
        col2im(gcols, gx[chunk.images], kh, kw, sh, sw, ph, pw, Ho, Wo)
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

    def correlate(group: Sequence[Chunk]) -> list[np.ndarray]:
        """dL/dx for each thread's chunks, in buffers of its own; each chunk's dL/dw product."""
        n0, patch, phase = _largest(group)[0], 0, 0
        for (_, taps_y, _, my), (_, taps_x, _, mx) in live:  # each phase's most rows in one chunk
            m = max((hi - lo for lo, hi in (_phase_rows(c.rows, sh, my, H) for c in group)), default=0)
            patch = max(patch, m * mx * len(taps_y) * len(taps_x))
            phase = phase if whole or per_row else max(phase, m * mx)
        pad = _Padder(n0, Ho, Wo, w.shape[3], (top, bottom), (left, right), grad.dtype)
        scratch = np.empty(n0 * patch * w.shape[3], dtype=grad.dtype)  # the largest phase's patches
        phase_out = np.empty(n0 * phase * C, dtype=grad.dtype)  # a phase of dL/dx, before its place
        products = _ChunkProducts(group, w.dtype)  # w's dtype: the total's (`kernels`)
        for chunk in group:
            images, n = chunk.images, chunk.images.stop - chunk.images.start
            gp = pad(grad, images)
            if len(live) < len(phases):
                gx[images, chunk.rows] = 0.0  # positions no tap reaches (a kernel smaller than the stride)
            for ((r, taps_y, dy, my), (q, taps_x, dx, mx)), kernel in zip(live, kernels):
                ty, tx = len(taps_y), len(taps_x)
                lo, hi = _phase_rows(chunk.rows, sh, my, H)
                if lo >= hi:
                    continue
                y0, m = top + dy + lo, hi - lo  # the phase's first row in gp; its rows in the chunk
                if whole:  # the padded gradient's window that every tap reads
                    region = gp[:, y0 : y0 + m + ty - 1, left + dx : left + dx + mx + tx - 1]
                    gcols = im2col(region, ty, tx, 1, 1, scratch)
                    gemm.matmul(gcols, kernel, gx[images, lo:hi].reshape(n * m * W, C))
                    if want_w:  # in OpenBLAS-small blocks, 14% faster than (x^T @ gcols)^T
                        products.add(gemm.matmul_tn(gcols, x[images, lo:hi].reshape(n * m * W, C)))
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
        return products.kept

    products = parallel.map_groups(correlate, chunks)
    if not want_w:
        return gx, None
    gwf = _add_in_chunk_order(products, kernels[0].shape, kernels[0].dtype)
    Cout = w.shape[3]
    gw = np.ascontiguousarray(gwf.reshape(kh, kw, Cout, C)[::-1, ::-1].transpose(0, 1, 3, 2))
    # pair x and the gradient as the forward did (x's padded patches), as PyTorch does, where
    # NaN/Inf would otherwise miss the padding's zeros: in x (then some tap of gw is not finite),
    # or in the gradient at an output whose window lies wholly in the padding (padding >= kernel)
    outside = (ph >= kh or pw >= kw) and not np.isfinite(grad).all()
    if outside or not np.isfinite(gw).all():
        gw = _weight_grad(x, grad.reshape(-1, Cout), _output_chunks(x, geo, C), geo)
    return gx, gw


def _output_chunks(x: Any, geo: tuple[int, ...], channels: int) -> list[Chunk]:
    """Chunks of the output's rows whose patches, of `channels` channels, hold about CHUNK_BYTES."""
    kh, kw, _, _, _, _, Ho, Wo = geo
    return plan_chunks(x.shape[0], Ho, Wo * kh * kw * channels * x.itemsize)


class Conv2d(NumpyOp):
    """Cross-correlation, x (B,H,W,Cin) * w (kh,kw,Cin,Cout) + b, as im2col + GEMM over chunks of
    the batch, or of one image's rows where its patches alone outgrow a chunk (each chunk's patch
    matrix ~CHUNK_BYTES, so patch memory stays small and in cache). Saves x and w (references,
    no extra memory); backward rebuilds the patches the same way, chunk by chunk."""

    def forward(
        self, x: np.ndarray, w: np.ndarray, b: Any = None, stride: Any = 1, padding: Any = 0
    ) -> np.ndarray:
        """The NHWC output (B, Ho, Wo, Cout): each chunk of the batch as im2col patches times w."""
        (sh, sw), (ph, pw), (Ho, Wo) = conv_geometry(x.shape, w.shape, None if b is None else b.shape,
                                                     stride, padding)
        B, _, _, C = x.shape
        kh, kw, _, Cout = w.shape
        w2 = w.reshape(kh * kw * C, Cout)
        # few channels: the bias as the kernel's last row, against a column of ones in the patches,
        # so the GEMM writes the output once (a 1 -> 32 layer at batch 128: 1.47 -> 1.06 ms); the
        # output of a wider input is as large against a far larger GEMM, and its bias stays a pass
        fold = b is not None and _tap_by_tap(C) and b.dtype == w.dtype
        if fold:
            w2 = np.concatenate([w2, b[None]])
        w2 = gemm.aligned(w2)  # once, not once per chunk in gemm.matmul
        out = np.empty((B, Ho * Wo, Cout), dtype=np.result_type(x, w, *(() if b is None else (b.dtype,))))
        geo = (kh, kw, sh, sw, ph, pw, Ho, Wo)
        out2 = out.reshape(B * Ho * Wo, Cout)

        def convolve(group: Sequence[Chunk]) -> None:  # each thread's chunks, in buffers of its own
            for at, cols in _patch_chunks(x, group, geo, ones=fold):
                gemm.matmul(cols, w2, out2[at])

        parallel.map_groups(convolve, _output_chunks(x, geo, C))
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
        # input channels (an image batch), where GEMMs to patch gradients and col2im are cheaper
        by_phases = need_x and not _tap_by_tap(C)
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
            H = x_shape[1]  # the correlation's chunks are of x's rows, as many bytes as the output's
            x_rows = plan_chunks(B, H, Ho * Wo * kh * kw * channels * x.itemsize / max(1, H), step=sh)
            gx, gw = _input_grad_by_phases(x, w, grad, x_rows, geo, need_w and not wasted)
        elif need_x:  # whole images: col2im writes an image's dL/dx at once
            images = plan_chunks(B, Ho, Wo * kh * kw * C * x.itemsize, step=max(1, Ho))
            gx = _input_grad_col2im(w, g2, x_shape, images, geo)
        gb = None
        if need_w and gw is None:
            # few channels: dL/db as the ones column's row of dL/dw, not a pass of its own over
            # the gradient (the forward's bias is in its GEMM the same way)
            fold = has_bias and _tap_by_tap(C)
            gw = _weight_grad(x, g2, _output_chunks(x, geo, channels), geo, ones=fold)
            if fold:
                gw, gb = gw[:-1], gw[-1].copy()
        if has_bias and gb is None:
            gb = colsum(g2)
        return gx, None if gw is None else gw.reshape(w.shape), gb
