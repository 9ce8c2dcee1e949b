"""LayerNorm: normalization over the last axis, in as few whole-array passes as numpy allows.

With a short feature axis (the attention model's is 64), every per-row operation runs numpy's
inner loop only C long (~2x the cost of a flat pass), so what counts is how many of those
per-row passes each direction makes: forward two, backward three, by saving x-hat (one array
the size of x) so that backward never rebuilds x - mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op

from topgrad_numpy.ops._util import check_affine, colsum, ones, row_blocks, wide


class LayerNorm(Op):
    """Layer normalization over the last axis; saves x-hat = (x - mean) / std, 1/std (one per
    row) and gamma. x-hat is computed centred, so rows of tiny variance stay accurate."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = check_affine("LayerNorm", x, gamma, beta)
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        mean = x2 @ ones(C, x2.dtype)  # a cached vector: np.full costs ~4 us a call
        mean *= 1.0 / C
        xhat = np.subtract(x2, mean[:, None])
        out = np.multiply(xhat, xhat)  # the squares, in the array that becomes the output
        invstd = out @ ones(C, x2.dtype)
        invstd *= 1.0 / C
        invstd += eps
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        xhat *= invstd[:, None]
        if gamma is not None:
            xw, gw = wide(xhat, gamma)
            np.multiply(xw, gw, out=out.reshape(xw.shape))
        else:
            np.copyto(out, xhat)  # the output is the caller's; x-hat stays the op's
        if beta is not None:
            ow, bw = wide(out, beta)
            ow += bw
        self.save_for_backward(xhat, invstd, gamma)
        self.has = (gamma is not None, beta is not None)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """dL/dx = invstd * (gxh - mean(gxh) - x-hat * mean(gxh * x-hat)), gxh = g * gamma,
        written as invstd * gxh + a * x-hat + b with a and b one number per row: three per-row
        passes. dL/dx is written over x-hat (the engine drops saved arrays after backward), and
        the products of g go through a scratch half the size of x, in two row blocks; every sum
        that reads g (per row and per feature) is taken on its block while it is in cache."""
        xhat, invstd, gamma = self._intermediate
        has_gamma, has_beta = self.has
        n, C = xhat.shape
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        gam = gamma if gamma is not None else ones(C, g2.dtype)
        half = max(128, -(-n // 256) * 128)  # rows per block: half of n, a multiple of 128 for `wide`
        blocks = list(row_blocks(xhat, half))
        scratch = np.empty((min(half, n), C), dtype=g2.dtype)
        ggamma = np.zeros(C, dtype=g2.dtype)
        a = np.empty(n, dtype=g2.dtype)  # per row: sum of gxh * x-hat ...
        b = np.empty(n, dtype=g2.dtype)  # ... and of gxh
        gbeta = np.zeros(C, dtype=g2.dtype) if has_beta else None
        for rows in blocks:
            g = g2[rows]
            g_xhat = np.multiply(g, xhat[rows], out=scratch[: rows.stop - rows.start])
            ggamma += colsum(g_xhat)  # sum over rows of g * x-hat
            np.matmul(g_xhat, gam, out=a[rows])
            np.matmul(g, gam, out=b[rows])
            if gbeta is not None:
                gbeta += colsum(g)
        a *= invstd
        a *= -1.0 / C
        b *= invstd
        b *= -1.0 / C
        gx = xhat  # x-hat is not needed after this: dL/dx takes its place
        gx *= a[:, None]
        gx += b[:, None]
        for rows in blocks:  # + invstd * g * gamma
            gw, gamw = wide(g2[rows], gam)
            part = scratch[: rows.stop - rows.start]
            np.multiply(gw, gamw, out=part.reshape(gw.shape))
            part *= invstd[rows, None]
            gx[rows] += part
        return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta
