"""2-d convolution on NHWC images with HWIO kernels: im2col (a strided view, one copy) + one GEMM.

Backward: dL/dw is one GEMM with the rebuilt patch matrix. dL/dx is, for stride 1, a
convolution of the gradient with the flipped kernel (im2col + GEMM); otherwise a GEMM to
patch gradients and a col2im of kh*kw strided slice additions (never `np.add.at`, which
is unbuffered and slow).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from topgrad import Op

from topgrad_numpy.ops._util import colsum


def _pair(op: str, name: str, v: Any, low: int) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and p >= low for p in pair):
        raise ValueError(f"{op}: {name} must be an int >= {low} or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])


def _check(x: np.ndarray, w: np.ndarray, b: Any) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(
            f"Conv2d: needs x of shape (B, H, W, Cin) and w of shape (kh, kw, Cin, Cout); "
            f"got x {x.shape} and w {w.shape}"
        )
    if x.shape[3] != w.shape[2]:
        raise ValueError(
            f"Conv2d: channel mismatch, x {x.shape} has Cin={x.shape[3]} but w {w.shape} "
            f"expects Cin={w.shape[2]}"
        )
    if b is not None and b.shape != (w.shape[3],):
        raise ValueError(f"Conv2d: bias must have shape ({w.shape[3]},) for w {w.shape}, got {b.shape}")


def _pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    if not (ph or pw):
        return x
    B, H, W, C = x.shape
    xp = np.zeros((B, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    xp[:, ph : ph + H, pw : pw + W, :] = x
    return xp


def im2col(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """Patches of padded xp as a (B*Ho*Wo, kh*kw*C) matrix: a strided view copied once."""
    B, Hp, Wp, C = xp.shape
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    s0, s1, s2, s3 = xp.strides
    view = as_strided(
        xp, shape=(B, Ho, Wo, kh, kw, C), strides=(s0, s1 * sh, s2 * sw, s1, s2, s3), writeable=False
    )
    return view.reshape(B * Ho * Wo, kh * kw * C)


def _valid(o: int, k: int, s: int, p: int, n: int) -> tuple[int, int]:
    """Output positions [lo, hi) whose input index o*s + k - p lands inside [0, n)."""
    lo = max(0, -((k - p) // s)) if k < p else 0
    hi = min(o, (n - 1 + p - k) // s + 1) if n - 1 + p - k >= 0 else 0
    return lo, max(lo, hi)


def col2im(
    gcols: np.ndarray, x_shape: tuple[int, ...], kh: int, kw: int, sh: int, sw: int,
    ph: int, pw: int, Ho: int, Wo: int,
) -> np.ndarray:
    """Scatter-add patch gradients back onto an unpadded (B, H, W, C) image."""
    B, H, W, C = x_shape
    g6 = gcols.reshape(B, Ho, Wo, kh, kw, C)
    gx = np.zeros(x_shape, dtype=gcols.dtype)
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
            gx[:, ys, xs, :] += g6[:, ylo:yhi, xlo:xhi, i, j, :]
    return gx


def _input_grad_as_conv(grad: np.ndarray, w: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """For stride 1, dL/dx is grad correlated with the flipped, transposed kernel.

    One im2col of the re-padded gradient and one GEMM straight into dL/dx: cheaper than
    the (B*Ho*Wo, kh*kw*Cin) patch gradient followed by col2im.
    """
    kh, kw, C, Cout = w.shape
    B, Ho, Wo, _ = grad.shape
    w_flip = np.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(kh * kw * Cout, C)
    cols = im2col(_pad(grad, kh - 1 - ph, kw - 1 - pw), kh, kw, 1, 1)
    return (cols @ w_flip).reshape(B, Ho + kh - 1 - 2 * ph, Wo + kw - 1 - 2 * pw, C)


class Conv2d(Op):
    """Cross-correlation, x (B,H,W,Cin) * w (kh,kw,Cin,Cout) + b; saves x and w (references, no
    extra memory) and rebuilds the kh*kw-times larger patch matrix in backward: a copy is
    cheaper than keeping it (and page-faulting it in again every step)."""

    def forward(
        self, x: np.ndarray, w: np.ndarray, b: Any = None, stride: Any = 1, padding: Any = 0
    ) -> np.ndarray:
        _check(x, w, b)
        sh, sw = _pair("Conv2d", "stride", stride, 1)
        ph, pw = _pair("Conv2d", "padding", padding, 0)
        B, H, W, C = x.shape
        kh, kw, _, Cout = w.shape
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"Conv2d: kernel {w.shape[:2]} is larger than the padded input of x {x.shape} "
                f"(padding {padding})"
            )
        cols = im2col(_pad(x, ph, pw), kh, kw, sh, sw)
        out = cols @ w.reshape(kh * kw * C, Cout)
        del cols
        if b is not None:
            out += b
        self.save_for_backward(x, w)
        self.geometry = (x.shape, sh, sw, ph, pw, Ho, Wo, b is not None)
        return out.reshape(B, Ho, Wo, Cout)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x, w = self._intermediate
        x_shape, sh, sw, ph, pw, Ho, Wo, has_bias = self.geometry
        kh, kw, C, Cout = w.shape
        cols = im2col(_pad(x, ph, pw), kh, kw, sh, sw)
        g2 = grad.reshape(cols.shape[0], Cout)
        gw = (cols.T @ g2).reshape(w.shape)
        del cols
        if sh == sw == 1 and ph < kh and pw < kw:
            gx = _input_grad_as_conv(grad, w, ph, pw)
        else:
            gcols = g2 @ w.reshape(kh * kw * C, Cout).T
            gx = col2im(gcols, x_shape, kh, kw, sh, sw, ph, pw, Ho, Wo)
        gb = colsum(g2) if has_bias else None
        return gx, gw, gb
