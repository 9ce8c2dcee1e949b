"""BatchNorm: normalization over every axis but the last, with PyTorch's running statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op, Tensor

from topgrad_numpy.ops._util import check_affine, colsum, row_chunks, wide


def _set_stat(stat: Any, value: np.ndarray) -> None:
    """Store a new running statistic: a Tensor gets a new array, a raw array is written in place."""
    if isinstance(stat, Tensor):
        stat.data = value
    else:
        stat[...] = value


def _stat_array(stat: Any) -> np.ndarray:
    return stat.data if isinstance(stat, Tensor) else stat


def _colsum_of(ufunc: Any, a: np.ndarray, b: np.ndarray, C: int) -> np.ndarray:
    """Per-channel sums of ufunc(a, b) for 2-d a, b whose columns repeat C channels (wide views),
    through a small scratch: gemv per chunk, then the k repeats folded."""
    acc = np.zeros(a.shape[1], dtype=np.float64 if a.shape[0] * a.shape[1] > (1 << 24) else a.dtype)
    for rows, tmp in row_chunks(a):
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
        C = check_affine("BatchNorm", x, gamma, beta)
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
        for rows, tmp in row_chunks(gx):
            np.multiply(gw_[rows], sw_, out=tmp)
            gx[rows] += tmp
        gx += cw
        return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta if has_beta else None
