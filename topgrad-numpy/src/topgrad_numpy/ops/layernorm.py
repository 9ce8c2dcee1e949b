"""LayerNorm: normalization over the last axis, with no per-row broadcast.

With a short feature axis (the attention model's is 64), numpy broadcasting a per-row number
(the mean, 1/std) over its row runs a buffered inner loop C long, ~3x a flat pass. Every
per-row factor here is instead expanded to full rows by a GEMM (`outer`, about a copy's
cost), and the op that uses it is a flat pass. Row sums are matrix-vector products.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from topgrad_numpy.ops._util import NumpyOp, check_affine, colsum, ones, outer, row_blocks, row_squares, wide

FAR = 16.0**2
"""Where a row's mean exceeds 16 standard deviations (FAR is that ratio squared), every row's
float32 mean, a sum of C values, is corrected by the deviations' own sum (two more passes over
the whole input, taken only then; rows nearer zero come out the same either way): at
C = 4096 the plain sum's error reaches every output and dL/dgamma, 4x PyTorch's float32 error at
60 standard deviations (8e-6 of dL/dgamma) and 1e-4 at 1000; corrected, ~2e-7 at any offset.
Rows nearer zero (a transformer's usually are) lose less than PyTorch does."""


class LayerNorm(NumpyOp):
    """Layer normalization over the last axis; saves x - mean (a new array, centred so rows
    of tiny variance stay accurate), 1/std (one per row) and gamma."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        """Normalize each row over the last axis, then scale by gamma and shift by beta."""
        C = check_affine("LayerNorm", x, gamma=gamma, beta=beta)
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        one = ones(C, x2.dtype)  # a cached vector: np.full costs ~4 us a call
        neg_mean = x2 @ one
        neg_mean *= -1.0 / C
        xc = outer(neg_mean, one, np.empty_like(x2))
        xc += x2  # x - mean
        out = np.empty_like(x2)
        invstd = row_squares(xc, out)
        invstd *= 1.0 / C  # the variance, until it becomes 1/std below
        if (neg_mean * neg_mean > FAR * invstd).any():  # a row's float32 mean is off by ulps of |mean|
            # the corrected two-pass mean, mean + sum(x - mean) / C, summed in float64: a constant
            # row's deviations then cancel exactly, and it normalizes to 0 as in PyTorch
            shift = (xc.sum(axis=1, dtype=np.float64) * (1.0 / C)).astype(x2.dtype)
            xc -= outer(shift, one, out)
            invstd -= shift * shift
            np.maximum(invstd, 0.0, out=invstd)  # a constant row's variance may round below zero
        invstd += eps
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        outer(invstd, gamma if gamma is not None else one, out)  # gamma / std per element
        out *= xc
        if beta is not None:
            ow, bw = wide(out, beta)
            ow += bw
        self.save_for_backward(x_minus_mean=xc, inv_std=invstd, gamma=gamma)
        self.has_gamma, self.has_beta = gamma is not None, beta is not None
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """With s = 1/std and xc = x - mean (x-hat = s * xc), per row:
        dL/dx = s * gamma * g + c * xc + d, c = -s^3 * sum(g * gamma * xc) / C, d = -s * sum(g * gamma) / C;
        dL/dgamma = sum over rows of s * g * xc, dL/dbeta = sum over rows of g.

        Two row blocks, each while it is in cache: its rows' sums (matrix-vector products), then
        their dL/dx written over xc (the engine drops saved arrays after backward) through a
        scratch half the size of x."""
        xc, invstd, gamma = self._intermediate
        if not self.saved_are_scratch:  # called by hand: the engine's backward reads xc later
            xc = xc.copy()
        has_gamma, has_beta = self.has_gamma, self.has_beta
        n, C = xc.shape
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        one = ones(C, g2.dtype)
        gam = gamma if gamma is not None else one
        half = max(128, -(-n // 256) * 128)  # rows per block: half of n, a multiple of 128 for `wide`
        blocks = list(row_blocks(xc, half))
        scratch = np.empty((min(half, n), C), dtype=g2.dtype)
        ggamma = np.zeros(C, dtype=g2.dtype)
        gbeta = np.zeros(C, dtype=g2.dtype) if has_beta else None
        for rows in blocks:  # a row's sums need only its own block: dL/dx follows while it is in cache
            g, xcb, s = g2[rows], xc[rows], invstd[rows]  # xcb: x - mean, until dL/dx is written over it
            part = np.multiply(g, xcb, out=scratch[: rows.stop - rows.start])  # g * xc
            ggamma += s @ part
            cb = part @ gam  # per row: sum of g * gamma * xc ...
            db = g @ gam  # ... and of g * gamma
            if gbeta is not None:
                gbeta += colsum(g)
            cb *= s
            cb *= s
            cb *= s
            cb *= -1.0 / C
            db *= s
            db *= -1.0 / C
            outer(cb, one, part)
            part *= xcb  # c * xc: the last read of x - mean
            dx = outer(db, one, xcb)  # dL/dx takes xc's place: d ...
            dx += part  # ... + c * xc
            outer(s, gam, part)
            part *= g
            dx += part  # ... + s * gamma * g
        if C == 1:  # x-hat is 0: dL/dx = s * (g * gamma - mean(g * gamma)), exactly 0 (NaN where g
            u = g2 * gam  # is not finite) as in PyTorch; the sum above rounds s * g * gamma twice
            np.multiply(u - u, invstd[:, None], out=xc)
        return xc.reshape(grad.shape), ggamma if has_gamma else None, gbeta
