"""LayerNorm: normalization over the last axis, in as few whole-array passes as numpy allows.

With a short feature axis (the attention model's is 64), every per-row operation runs numpy's
inner loop only C long, so the cost is the number of passes: forward makes four plus two row
reductions, backward six plus BLAS sums, and no temporary the size of x (fresh temporaries
cost page faults on every call).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op

from topgrad_numpy.ops._util import check_affine, colsum, ones, row_chunks, wide


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of matching rows of two 2-d arrays; no temporary."""
    return np.einsum("nc,nc->n", a, b)


class LayerNorm(Op):
    """Layer normalization over the last axis; saves x (a reference), mean and 1/std (one per row)
    and gamma. Backward rebuilds x - mean instead of keeping a normalized copy."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = check_affine("LayerNorm", x, gamma, beta)
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        mean = x2 @ np.full(C, 1.0 / C, dtype=x2.dtype)
        out = np.subtract(x2, mean[:, None])
        invstd = _rowdot(out, out)
        invstd *= 1.0 / C
        invstd += eps
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        out *= invstd[:, None]  # x-hat
        if gamma is not None:
            ow, gw = wide(out, gamma)
            ow *= gw
        if beta is not None:
            ow, bw = wide(out, beta)
            ow += bw
        self.save_for_backward(x2, mean, invstd, gamma)
        self.has = (gamma is not None, beta is not None)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x2, mean, invstd, gamma = self._intermediate
        has_gamma, has_beta = self.has
        C = x2.shape[1]
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        gam = gamma if gamma is not None else ones(C, g2.dtype)
        gx = np.subtract(x2, mean[:, None])  # x - mean (x-hat = that * invstd) ...
        gx *= g2  # ... times g, for the sums below; gx is a scratch until dL/dx-hat
        ggamma = invstd @ gx if has_gamma else None  # sum over rows of g * x-hat
        gbeta = colsum(g2) if has_beta else None
        sum_gxh, sum_gxh_xc = g2 @ gam, gx @ gam  # per row: sum of dL/dx-hat, and of it * (x - mean)
        gw, gamw = wide(g2, gam)
        np.multiply(gw, gamw, out=gx.reshape(gw.shape))  # dL/dx-hat
        # dL/dx = invstd * (gxh - mean(gxh)) - (x - mean) * invstd^3 * mean(gxh * (x - mean)),
        # gxh = dL/dx-hat; = invstd * gxh + k * (x - mean) + c, with k and c one number per row
        # (x - mean stays centred: k * x - k * mean cancels badly when a row's variance is tiny)
        k = invstd * invstd * invstd * sum_gxh_xc
        k *= -1.0 / C
        c = invstd * sum_gxh
        c *= -1.0 / C
        gx *= invstd[:, None]
        for rows, tmp in row_chunks(x2):  # + k * (x - mean) through a cache-sized scratch
            np.subtract(x2[rows], mean[rows, None], out=tmp)
            tmp *= k[rows, None]
            gx[rows] += tmp
        gx += c[:, None]
        return gx.reshape(grad.shape), ggamma, gbeta
