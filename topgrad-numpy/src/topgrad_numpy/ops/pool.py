"""MaxPool2d: the maximum of each window of an NHWC image, as torch's max_pool2d.

Forward copies the windows tap-major, (taps, n, rows, OW, C), so that every pass after it is a
flat one: numpy's passes over a strided tap of the image run an inner loop only C long. It does
so a chunk at a time (a few images, or a few output rows of one large image; `CHUNK_BYTES`),
padding only the chunk's rows, so the stack stays in cache and the peak is the output, not taps
times it (5x5 windows: 4.7x PyTorch's peak before, and 1.5x its time). Which tap gave each
maximum is found arithmetically over the whole stack (`_first_max`): `np.copyto(tap, t,
where=mask)` is ~30x slower than a flat multiply, and one call per tap costs more than the pass
on small chunks. Backward, chunk by chunk too, makes every tap's share in one stack and adds each
back through that tap's strided view of the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad.pooling import first_inside, pool_geometry

from topgrad_numpy.ops._util import Chunk, NumpyOp, image_chunks, input_rows, int_like, rows_inside, select

CHUNK_BYTES = 1 << 20
"""Bytes of one chunk's window stack: about half a 2 MiB L2, so the stack and the chunk's padded
input, output and scratch stay in cache across the passes over it (tests set it smaller)."""


def _tap_view(a: np.ndarray, i: int, j: int, geo: tuple[Any, ...]) -> np.ndarray:
    """The view of the padded image `a` that tap (i, j) of every window reads."""
    _, (sh, sw), _, (ho, wo) = geo
    return a[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _chunks(batch: int, rows: int, row_bytes: int) -> list[Chunk]:
    """Chunks whose window stacks (row_bytes per output row) hold about CHUNK_BYTES: whole images
    while one image fits, else a few output rows of one image (a batch of one large image). The
    first chunk is the largest."""
    per = max(1, CHUNK_BYTES // max(1, row_bytes))
    if per >= rows:
        n = per // rows
        return image_chunks(batch, n, rows)
    starts = range(0, rows, per)
    return [Chunk(slice(b, b + 1), slice(r, min(rows, r + per))) for b in range(batch) for r in starts]


def _cut(chunk: Chunk) -> tuple[slice, slice]:
    """The chunk's images and rows counted from 0: its part of a buffer shaped for the first chunk
    (each tap's block of it stays contiguous: fewer images, or fewer rows of one image)."""
    images, rows = chunk
    return slice(0, images.stop - images.start), slice(0, rows.stop - rows.start)


def _padded_rows(x: np.ndarray, images: slice, lo: int, pad: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """`out` = rows lo:lo+len, counted in the -inf-padded image, of x[images] padded (filled
    whole first: one pass over a cache-sized chunk, fewer calls than its borders alone)."""
    ph, pw = pad
    _, H, W, _ = x.shape
    top, end = rows_inside(lo, out.shape[1], ph, H)
    out.fill(-np.inf)
    out[:, top:end, pw : pw + W] = x[images, lo + top - ph : lo + end - ph]
    return out


def _pad_buffer(shape: tuple[int, ...], geo: tuple[Any, ...], chunk: Chunk, dtype: Any) -> np.ndarray | None:
    """Room for the padded input rows of the chunk (the first, the largest); None without padding."""
    (kh, _), (sh, _), (ph, pw), _ = geo
    if not (ph or pw):
        return None
    images, rows = _cut(chunk)
    lo, hi = input_rows(rows, sh, kh)
    return np.empty((images.stop, hi - lo, shape[2] + 2 * pw, shape[3]), dtype=dtype)


def _windows(xc: np.ndarray, geo: tuple[Any, ...], out: np.ndarray) -> np.ndarray:
    """`out` (kh*kw, n, OH, OW, C) = tap t (row by row of the window) of every window of the
    padded chunk xc, one block each; geo's output size is the chunk's. (np.stack's Python side
    costs ~2 us more than concatenating views with a leading axis.)"""
    (kh, kw), *_ = geo
    taps = [_tap_view(xc, i, j, geo)[None] for i in range(kh) for j in range(kw)]
    return np.concatenate(taps, out=out)


def _first_taps(geo: tuple[Any, ...]) -> np.ndarray:
    """Per output position (1, OH, OW, 1): the window's first tap inside the image."""
    (_, kw), (sh, sw), (ph, pw), (ho, wo) = geo
    rows = [first_inside(o, sh, ph) * kw for o in range(ho)]
    cols = [first_inside(o, sw, pw) for o in range(wo)]
    return np.add.outer(rows, cols)[None, :, :, None]


def _tap_numbers(taps: int, dtype: Any) -> np.ndarray:
    """0, 1, ..., taps-1 along axis 0 of a window stack, to broadcast over the rest of it."""
    return np.arange(taps, dtype=dtype).reshape(taps, 1, 1, 1, 1)


def _first_max(win: np.ndarray, best: np.ndarray, tap: np.ndarray, eq: np.ndarray) -> None:
    """tap = the first t with win[t] == best, as PyTorch breaks ties: taps - the max over t of
    (taps - t where equal, else 0), three passes over the whole stack (`eq`, a bool stack, is
    scratch), not five calls per tap. Where best is NaN no tap equals it: the window's last NaN."""
    taps = len(win)
    np.equal(win, best, out=eq)
    score = eq.view(tap.dtype) if tap.dtype.itemsize == 1 else eq.astype(tap.dtype)  # 0/1
    np.multiply(score, taps - _tap_numbers(taps, tap.dtype), out=score)
    np.maximum.reduce(score, axis=0, out=tap)
    np.subtract(taps, tap, out=tap)  # taps: none equal
    unmatched = np.equal(tap, taps, out=eq[0])  # windows holding a NaN: their last NaN
    if unmatched.any():
        for t in range(taps):
            np.copyto(tap, t, where=unmatched & np.isnan(win[t]))


def _unpad_into(
    gx: np.ndarray, acc: np.ndarray, images: slice, lo: int, pad: tuple[int, int], done: tuple[int, int]
) -> tuple[int, int]:
    """Moves the inside of `acc`, the padded rows from lo of gx[images], into gx: rows that the
    previous chunk of the same image wrote (`done`: image, rows) are added to, the rest written."""
    ph, pw = pad
    _, H, W, _ = gx.shape
    top, end = rows_inside(lo, acc.shape[1], ph, H)
    first, last = lo + top - ph, lo + end - ph  # the image rows acc holds
    seen = min(max(done[1] if done[0] == images.start else 0, first), last)
    inside = acc[:, top:end, pw : pw + W]
    if seen > first:
        gx[images, first:seen] += inside[:, : seen - first]
    gx[images, seen:last] = inside[:, seen - first :]
    return images.start, last


class MaxPool2d(NumpyOp):
    """The maximum of each window; saves, per output, the tap of its window that gave it (one
    byte each for windows of up to 127 taps). As PyTorch's scan: ties go to the first tap, a NaN
    beats any number (the window's last NaN), a window of -inf keeps its first tap inside the
    image (not the padding)."""

    def forward(self, x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0) -> np.ndarray:
        """The maximum of each window of NHWC x; saves which tap of the window gave each output.
        Chunk by chunk (`_chunks`), each into its slice of the output and of the taps."""
        geo = pool_geometry(x.shape, kernel_size, stride, padding)
        (kh, kw), step, pad, (ho, wo) = geo
        B, _, _, C = x.shape
        taps = kh * kw
        best = np.empty((B, ho, wo, C), dtype=x.dtype)
        tap = np.empty(best.shape, dtype=np.int8 if taps <= 127 else np.int32)
        chunks = _chunks(B, ho, taps * wo * C * x.dtype.itemsize)
        if chunks:
            _pool_chunks(x, geo, chunks, best, tap)
        self.save_for_backward(argmax_tap=tap)
        self.kernel_size, self.stride, self.padding = (kh, kw), step, pad  # graph() shows them
        self.geometry = (x.shape, geo)
        return best

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """Each tap's share is grad where the output took that tap, else +0.0 even where grad is
        NaN (as PyTorch's scatter): `_util.select`, as ReLU's backward. Chunk by chunk, as forward."""
        (tap,) = self._intermediate
        (B, H, W, C), geo = self.geometry
        (kh, kw), _, _, (ho, wo) = geo
        grad = np.ascontiguousarray(grad)
        gx = np.zeros((B, H, W, C), dtype=grad.dtype)
        chunks = _chunks(B, ho, kh * kw * wo * C * grad.dtype.itemsize)
        if chunks:
            _unpool_chunks(grad, tap, geo, chunks, gx)
        return (gx,)


def _pool_chunks(
    x: np.ndarray, geo: tuple[Any, ...], chunks: list[Chunk], best: np.ndarray, tap: np.ndarray
) -> None:
    """Fills best and tap chunk by chunk, every chunk in the same scratch buffers."""
    (kh, kw), (sh, _), pad, (_, wo) = geo
    first_shape = best[chunks[0]].shape
    win_buf = np.empty((kh * kw, *first_shape), dtype=x.dtype)
    eq_buf = np.empty(win_buf.shape, dtype=bool)
    pad_buf = _pad_buffer(x.shape, geo, chunks[0], x.dtype)
    for chunk in chunks:
        (images, rows), (m, r) = chunk, _cut(chunk)
        lo, hi = input_rows(rows, sh, kh)
        xc = x[images, lo:hi] if pad_buf is None else _padded_rows(x, images, lo, pad, pad_buf[m, : hi - lo])
        win = _windows(xc, (geo[0], geo[1], pad, (r.stop, wo)), win_buf[:, m, r])
        top, taken = best[chunk], tap[chunk]
        np.maximum.reduce(win, axis=0, out=top)  # NaN wins, as in PyTorch's output
        _first_max(win, top, taken, eq_buf[:, m, r])
        if pad_buf is not None:  # a window of -inf matched its first tap, which may be padding
            dead = np.equal(top, -np.inf, out=eq_buf[0, m, r])
            if dead.any():
                first = _first_taps(geo)[:, rows]
                np.copyto(taken, np.broadcast_to(first, top.shape), where=dead, casting="unsafe")


def _unpool_chunks(
    grad: np.ndarray, tap: np.ndarray, geo: tuple[Any, ...], chunks: list[Chunk], gx: np.ndarray
) -> None:
    """Adds each chunk's shares into gx: straight into its rows without padding, else into a
    padded buffer whose inside then goes to gx (`_unpad_into`)."""
    (kh, kw), (sh, _), pad, (_, wo) = geo
    share_buf = np.empty((kh * kw, *grad[chunks[0]].shape), dtype=int_like(grad.dtype))
    numbers = _tap_numbers(kh * kw, tap.dtype)
    pad_buf = _pad_buffer(gx.shape, geo, chunks[0], gx.dtype)
    done = (-1, 0)  # (image, rows of it written) by the chunks so far
    for chunk in chunks:
        (images, rows), (m, r) = chunk, _cut(chunk)
        lo, hi = input_rows(rows, sh, kh)
        acc = gx[images, lo:hi] if pad_buf is None else pad_buf[m, : hi - lo]
        if pad_buf is not None:
            acc.fill(0.0)
        cgeo = (geo[0], geo[1], pad, (r.stop, wo))
        shares = select(np.equal, tap[chunk], numbers, grad[chunk], share_buf[:, m, r])  # every tap's
        for i in range(kh):
            for j in range(kw):
                view = _tap_view(acc, i, j, cgeo)  # holds each position once: a plain add
                view += shares[i * kw + j]
        if pad_buf is not None:
            done = _unpad_into(gx, acc, images, lo, pad, done)
