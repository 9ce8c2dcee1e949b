"""MaxPool2d: the maximum of each window of an NHWC image, as torch's max_pool2d.

Forward copies the windows tap-major, (taps, B, OH, OW, C), so that every pass after it is a
flat one: numpy's passes over a strided tap of the image run an inner loop only C long. Which
tap gave each maximum is found arithmetically (a running minimum of "t where the tap equals the
maximum"): `np.copyto(tap, t, where=mask)` is ~30x slower than a flat multiply. Backward adds
each tap's share of the gradient back through that tap's strided view of the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad.pooling import first_inside, pool_geometry

from topgrad_numpy.ops._util import NumpyOp, int_like, select


def _tap_view(a: np.ndarray, i: int, j: int, geo: tuple[Any, ...]) -> np.ndarray:
    """The view of the padded image `a` that tap (i, j) of every window reads."""
    _, (sh, sw), _, (ho, wo) = geo
    return a[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def _windows(xp: np.ndarray, geo: tuple[Any, ...]) -> np.ndarray:
    """(kh*kw, B, OH, OW, C): tap t (row by row of the window) of every window, one dense block each."""
    (kh, kw), _, _, _ = geo
    return np.stack([_tap_view(xp, i, j, geo) for i in range(kh) for j in range(kw)])


def _first_taps(geo: tuple[Any, ...]) -> np.ndarray:
    """Per output position (1, OH, OW, 1): the window's first tap inside the image."""
    (_, kw), (sh, sw), (ph, pw), (ho, wo) = geo
    rows = [first_inside(o, sh, ph) * kw for o in range(ho)]
    cols = [first_inside(o, sw, pw) for o in range(wo)]
    return np.add.outer(rows, cols)[None, :, :, None]


class MaxPool2d(NumpyOp):
    """The maximum of each window; saves, per output, the tap of its window that gave it (one
    byte each for windows of up to 127 taps). As PyTorch's scan: ties go to the first tap, a NaN
    beats any number (the window's last NaN), a window of -inf keeps its first tap inside the
    image (not the padding)."""

    def forward(self, x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0) -> np.ndarray:
        """The maximum of each window of NHWC x; saves which tap of the window gave each output."""
        geo = pool_geometry(x.shape, kernel_size, stride, padding)
        (kh, kw), step, (ph, pw), _ = geo
        B, H, W, C = x.shape
        xp = x
        if ph or pw:
            xp = np.full((B, H + 2 * ph, W + 2 * pw, C), -np.inf, dtype=x.dtype)
            xp[:, ph : ph + H, pw : pw + W] = x
        win = _windows(xp, geo)
        best = np.maximum.reduce(win, axis=0)  # NaN wins, as in PyTorch's output
        taps = kh * kw
        tap = np.full(best.shape, taps, dtype=np.int8 if taps <= 127 else np.int32)  # taps: none yet
        same = np.empty(best.shape, dtype=bool)
        candidate = np.empty_like(tap)
        for t in range(taps):  # tap = min over t of (t where win[t] == best, else taps)
            np.equal(win[t], best, out=same)
            candidate[...] = same
            candidate *= t - taps
            candidate += taps
            np.minimum(tap, candidate, out=tap)
        unmatched = tap == taps  # windows holding a NaN: their last NaN
        if unmatched.any():
            for t in range(taps):
                np.copyto(tap, t, where=unmatched & np.isnan(win[t]))
        if ph or pw:  # a window of -inf matched its first tap, which may be padding
            dead = best == -np.inf
            if dead.any():
                np.copyto(tap, np.broadcast_to(_first_taps(geo), tap.shape), where=dead, casting="unsafe")
        self.save_for_backward(argmax_tap=tap)
        self.kernel_size, self.stride, self.padding = (kh, kw), step, (ph, pw)  # graph() shows them
        self.geometry = (x.shape, geo)
        return best

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        """Each tap's share is grad where the output took that tap, else +0.0 even where grad is
        NaN (as PyTorch's scatter): `_util.select`, as ReLU's backward."""
        (tap,) = self._intermediate
        (B, H, W, C), geo = self.geometry
        (kh, kw), _, (ph, pw), _ = geo
        grad = np.ascontiguousarray(grad)
        gxp = np.zeros((B, H + 2 * ph, W + 2 * pw, C), dtype=grad.dtype)
        share = np.empty(grad.shape, dtype=int_like(grad.dtype))
        for i in range(kh):
            for j in range(kw):
                view = _tap_view(gxp, i, j, geo)  # holds each position once: a plain add
                view += select(np.equal, tap, i * kw + j, grad, share)
        if ph or pw:
            return (np.ascontiguousarray(gxp[:, ph : ph + H, pw : pw + W]),)
        return (gxp,)
