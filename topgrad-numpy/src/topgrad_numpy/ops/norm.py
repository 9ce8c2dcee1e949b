"""Normalization layers: BatchNorm (over every axis but the last) and LayerNorm (over the last)."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op, Tensor

from topgrad_numpy.ops._util import colsum, rowsum


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


def _affine(xhat: np.ndarray, gamma: Any, beta: Any) -> np.ndarray:
    out = xhat * gamma if gamma is not None else xhat.copy()
    if beta is not None:
        out += beta
    return out


class BatchNorm(Op):
    """Batch normalization over all axes but the last; saves x - mean (size of x) and 1/std.

    Training uses the batch statistics and, when given, updates the running ones as
    `torch.nn.functional.batch_norm` does (momentum, unbiased variance); eval uses the
    running ones and saves x itself (a reference) instead of a centred copy.
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
            xc = x2 - mean
            var = np.einsum("nc,nc->c", xc, xc)
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
            out = xc * scale
            self.save_for_backward(xc, invstd, scale)
        else:  # y = x * scale + (beta - mean * scale): two passes over x
            out = x2 * scale
            out -= mean * scale
            self.save_for_backward(x2, invstd, scale, np.array(mean, dtype=np.float32))
        if beta is not None:
            out += beta
        self.training, self.has = training, (gamma is not None, beta is not None)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        has_gamma, has_beta = self.has
        if self.training:
            xc, invstd, scale = self._intermediate
            g2 = grad.reshape(xc.shape)
            gbeta = colsum(g2)
            ggamma = np.einsum("nc,nc->c", g2, xc)
            ggamma *= invstd  # sum(g * x-hat)
            inv_n = 1.0 / xc.shape[0]
            # dL/dx = scale * (g - mean(g) - x-hat * mean(g * x-hat)), x-hat = xc * invstd
            gx = xc * (ggamma * invstd * -inv_n)
            gx += g2
            gx -= gbeta * inv_n
            gx *= scale
        else:
            x2, invstd, scale, mean = self._intermediate
            g2 = grad.reshape(x2.shape)
            gbeta = colsum(g2)
            ggamma = np.einsum("nc,nc->c", g2, x2)
            ggamma -= mean * gbeta
            ggamma *= invstd
            gx = g2 * scale
        return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta if has_beta else None


class LayerNorm(Op):
    """Layer normalization over the last axis; saves x-hat (size of x), 1/std (one per row) and gamma."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = _check_affine("LayerNorm", x, gamma, beta)
        mean = rowsum(x)
        mean *= 1.0 / C
        xc = x - mean
        var = rowsum(np.square(xc))
        var *= 1.0 / C
        var += eps
        invstd = np.sqrt(var, out=var)
        np.divide(1.0, invstd, out=invstd)
        xc *= invstd
        self.save_for_backward(xc, invstd, gamma)
        self.has = (gamma is not None, beta is not None)
        return _affine(xc, gamma, beta)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        xhat, invstd, gamma = self._intermediate
        C = xhat.shape[-1]
        gxhat = grad * gamma if gamma is not None else grad.copy()
        mean_g = rowsum(gxhat)
        mean_g *= 1.0 / C
        mean_gx = rowsum(gxhat * xhat)
        mean_gx *= 1.0 / C
        gxhat -= mean_g
        gxhat -= xhat * mean_gx
        gxhat *= invstd
        g2 = grad.reshape(-1, C)
        has_gamma, has_beta = self.has
        ggamma = np.einsum("nc,nc->c", g2, xhat.reshape(-1, C)) if has_gamma else None
        gbeta = colsum(g2) if has_beta else None
        return gxhat, ggamma, gbeta
