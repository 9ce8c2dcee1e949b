"""Normalization layers: BatchNorm (over every axis but the last) and LayerNorm (over the last)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from topgrad import Op, Tensor

from topgrad_numpy.ops._util import colsum, ones, wide


def _check_affine(op: str, x: np.ndarray, gamma: Any, beta: Any) -> int:
    if x.ndim < 1:
        raise ValueError(f"{op}: needs an input with a feature axis, got shape {x.shape}")
    C = x.shape[-1]
    if C == 0:
        raise ValueError(f"{op}: needs at least one feature on the last axis, got x of shape {x.shape}")
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and p.shape != (C,):
            raise ValueError(f"{op}: {name} must have shape ({C},) for x of shape {x.shape}, got {p.shape}")
    return C


def _set_stat(stat: Any, value: np.ndarray) -> None:
    """Store a new running statistic: a Tensor gets a new array, a raw array is written in place."""
    if isinstance(stat, Tensor):
        stat.data = value
    else:
        stat[...] = value


def _stat_array(stat: Any) -> np.ndarray:
    return stat.data if isinstance(stat, Tensor) else stat


ROWS_BYTES = 256 << 10
"""Bytes of scratch per pass in the chunked BatchNorm loops: a cache-sized block instead of a
temporary the size of x (the op's peak memory stays at PyTorch's: output and gradient)."""


def _row_chunks(a: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Row slices of a 2-d array, each with a matching scratch block (one buffer reused)."""
    per = max(1, ROWS_BYTES // max(1, a.shape[1] * a.itemsize))
    scratch = np.empty((min(per, a.shape[0]), a.shape[1]), dtype=a.dtype)
    for i in range(0, a.shape[0], per):
        j = min(a.shape[0], i + per)
        yield slice(i, j), scratch[: j - i]


def _colsum_of(ufunc: Any, a: np.ndarray, b: np.ndarray, C: int) -> np.ndarray:
    """Per-channel sums of ufunc(a, b) for 2-d a, b whose columns repeat C channels (wide views),
    through a small scratch: gemv per chunk, then the k repeats folded."""
    acc = np.zeros(a.shape[1], dtype=np.float64 if a.shape[0] * a.shape[1] > (1 << 24) else a.dtype)
    for rows, tmp in _row_chunks(a):
        ufunc(a[rows], b[rows], out=tmp)
        acc += colsum(tmp)
    return acc.reshape(-1, C).sum(axis=0).astype(a.dtype)


class BatchNorm(Op):
    """Batch normalization over all axes but the last; saves x (a reference), mean, 1/std and gamma.

    Training uses the batch statistics and, when given, updates the running ones as
    `torch.nn.functional.batch_norm` does (momentum, unbiased variance); eval uses the
    running ones. Backward rebuilds x - mean from x instead of keeping a centred copy (one
    activation less per layer). Per-channel vectors are broadcast on a wide view of x
    (`wide`), since numpy's inner loop over C <= 64 channels alone is slow.
    """

    def forward(
        self, x: np.ndarray, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
        training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
    ) -> np.ndarray:
        C = _check_affine("BatchNorm", x, gamma, beta)
        n = x.size // C
        x2 = x.reshape(n, C)
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None and stat.shape != (C,):
                raise ValueError(
                    f"BatchNorm: {name} must have shape ({C},) for x of shape {x.shape}, got {stat.shape}"
                )
        if training:
            if n < 2:
                raise ValueError(
                    f"BatchNorm: training needs more than one value per channel, got x {x.shape}"
                )
            mean = colsum(x2)
            mean *= 1.0 / n
            xw, mw = wide(x2, mean)
            out = np.subtract(xw, mw)  # x - mean; becomes the output in place
            var = _colsum_of(np.multiply, out, out, C)
            var *= 1.0 / n
            if running_mean is not None:
                rm = _stat_array(running_mean)
                _set_stat(running_mean, rm * (1.0 - momentum) + mean * momentum)
            if running_var is not None:
                rv = _stat_array(running_var)
                _set_stat(running_var, rv * (1.0 - momentum) + var * (momentum * n / (n - 1)))
        else:
            if running_mean is None or running_var is None:
                raise ValueError("BatchNorm: eval mode (training=False) needs running_mean and running_var")
            mean, var = _stat_array(running_mean), _stat_array(running_var)
        invstd = var + eps
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        scale = invstd * gamma if gamma is not None else invstd
        if training:  # y = (x - mean) * scale + beta
            _, sw_ = wide(x2, scale)
            out *= sw_
            self.save_for_backward(x2, np.array(mean, dtype=x2.dtype), invstd, gamma)
        else:  # y = x * scale + (beta - mean * scale): two passes over x
            xw, sw_ = wide(x2, scale)
            out = xw * sw_
            out -= wide(x2, mean * scale)[1]
            self.save_for_backward(x2, invstd, scale, np.array(mean, dtype=np.float32))
        if beta is not None:
            out += wide(x2, beta)[1]
        self.training, self.has = training, (gamma is not None, beta is not None)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        has_gamma, has_beta = self.has
        if not self.training:
            x2, invstd, scale, mean = self._intermediate
            g2 = grad.reshape(x2.shape)
            gbeta = colsum(g2)
            ggamma = np.einsum("nc,nc->c", g2, x2)
            ggamma -= mean * gbeta
            ggamma *= invstd
            gw, sw_ = wide(np.ascontiguousarray(g2), scale)
            gx = gw * sw_
            return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta if has_beta else None
        x2, mean, invstd, gamma = self._intermediate
        n, C = x2.shape
        g2 = np.ascontiguousarray(grad).reshape(n, C)
        scale = invstd * gamma if gamma is not None else invstd
        gbeta = colsum(g2)
        xw, mw = wide(x2, mean)
        gx = np.subtract(xw, mw)  # x - mean, rebuilt where dL/dx will be
        gw_ = g2.reshape(gx.shape)
        ggamma = _colsum_of(np.multiply, gw_, gx, C)
        ggamma *= invstd  # sum(g * x-hat)
        # dL/dx = scale * (g - mean(g) - x-hat * mean(g * x-hat)), x-hat = (x - mean) * invstd
        coef = scale * invstd * ggamma * (-1.0 / n)  # on x - mean
        _, sw_, aw, cw = wide(x2, scale, coef, scale * gbeta * (-1.0 / n))
        gx *= aw
        for rows, tmp in _row_chunks(gx):
            np.multiply(gw_[rows], sw_, out=tmp)
            gx[rows] += tmp
        gx += cw
        return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta if has_beta else None


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of matching rows of two 2-d arrays; no temporary."""
    return np.einsum("nc,nc->n", a, b)


class _Tiled:
    """A (C,) vector tiled k times, to broadcast it over (r, C) blocks on their (r/k, k*C) view."""

    def __init__(self, v: np.ndarray, C: int) -> None:
        self.k = max(1, 1024 // C)
        self.v, self.t = v, np.tile(v, self.k)

    def apply(self, ufunc: Any, a: np.ndarray, out: np.ndarray) -> None:
        """out = ufunc(a, v) for contiguous (r, C) blocks a and out."""
        r = a.shape[0]
        if r % self.k:
            ufunc(a, self.v, out=out)
        else:
            ufunc(a.reshape(r // self.k, -1), self.t, out=out.reshape(r // self.k, -1))


class LayerNorm(Op):
    """Layer normalization over the last axis; saves x (a reference), mean and 1/std (one per row)
    and gamma.

    Forward and backward run over blocks of rows (~256 KiB) with cache-sized scratch, rebuilding
    x-hat per block: no temporary the size of x, and the passes run from cache."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = _check_affine("LayerNorm", x, gamma, beta)
        x2 = np.ascontiguousarray(x).reshape(-1, C)
        n = x2.shape[0]
        out = np.empty_like(x2)
        mean, invstd = np.empty(n, dtype=x2.dtype), np.empty(n, dtype=x2.dtype)
        g = _Tiled(gamma, C) if gamma is not None else None
        b = _Tiled(beta, C) if beta is not None else None
        sq = np.empty_like(x2[: ROWS_BYTES // (C * x2.itemsize) + 1])
        for rows, tmp in _row_chunks(x2):
            xr, m, s = x2[rows], mean[rows], invstd[rows]
            np.matmul(xr, ones(C, x2.dtype), out=m)
            m *= 1.0 / C
            np.subtract(xr, m[:, None], out=tmp)
            np.square(tmp, out=sq[: tmp.shape[0]])
            np.matmul(sq[: tmp.shape[0]], ones(C, x2.dtype), out=s)
            s *= 1.0 / C
            s += eps
            np.sqrt(s, out=s)
            np.divide(1.0, s, out=s)
            o = out[rows]
            if g is not None:
                np.multiply(tmp, s[:, None], out=tmp)
                g.apply(np.multiply, tmp, o)
            else:
                np.multiply(tmp, s[:, None], out=o)
            if b is not None:
                b.apply(np.add, o, o)
        self.save_for_backward(x2, mean, invstd, gamma)
        self.has = (gamma is not None, beta is not None)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x2, mean, invstd, gamma = self._intermediate
        C = x2.shape[1]
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        gx = np.empty_like(g2)
        has_gamma, has_beta = self.has
        ggamma = np.zeros(C, dtype=np.float64)
        gam = _Tiled(gamma, C) if gamma is not None else None
        prods = _row_chunks(g2)
        for rows, xc in _row_chunks(x2):
            _, prod = next(prods)
            gr, o, sv = g2[rows], gx[rows], invstd[rows]
            np.subtract(x2[rows], mean[rows, None], out=xc)  # x - mean; x-hat = xc * invstd
            if has_gamma:  # sum over rows of g * x-hat, as an invstd-weighted gemv
                np.multiply(gr, xc, out=prod)
                ggamma += sv @ prod
            if gam is not None:
                gam.apply(np.multiply, gr, o)  # dL/dx-hat
            else:
                o[...] = gr
            mean_g = np.matmul(o, ones(C, o.dtype))
            mean_g *= sv * (1.0 / C)
            k = _rowdot(o, xc)  # sum(gxhat * xc) -> invstd^3 * that / C multiplies xc
            k *= sv * sv * sv * (1.0 / C)
            # dL/dx = invstd * (gxhat - mean(gxhat) - x-hat * mean(gxhat * x-hat))
            xc *= k[:, None]
            xc += mean_g[:, None]
            o *= sv[:, None]
            o -= xc
        gbeta = colsum(g2) if has_beta else None
        return gx.reshape(grad.shape), ggamma.astype(g2.dtype) if has_gamma else None, gbeta
