"""Normalization layers: BatchNorm (over every axis but the last) and LayerNorm (over the last)."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Op, Tensor


def _check_affine(op: str, x: np.ndarray, gamma: Any, beta: Any) -> int:
    if x.ndim < 1:
        raise ValueError(f"{op}: needs an input with a feature axis, got shape {x.shape}")
    C = x.shape[-1]
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
    """Batch normalization over all axes but the last; saves x-hat (size of x) and 1/std (C floats).

    Training uses the batch statistics and, when given, updates the running ones as
    `torch.nn.functional.batch_norm` does (momentum, unbiased variance); eval uses the running ones.
    """

    def forward(
        self, x: np.ndarray, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
        training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
    ) -> np.ndarray:
        C = _check_affine("BatchNorm", x, gamma, beta)
        x2 = x.reshape(-1, C)
        n = x2.shape[0]
        if training:
            if n < 2:
                raise ValueError(
                    f"BatchNorm: training needs more than one value per channel, got x {x.shape}"
                )
            mean = x2.sum(axis=0)
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
            xc = x2 - _stat_array(running_mean)
            var = _stat_array(running_var)
        invstd = var + eps
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        xc *= invstd
        self.save_for_backward(xc, invstd, gamma)
        self.training, self.has = training, (gamma is not None, beta is not None)
        return _affine(xc, gamma, beta).reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        xhat, invstd, gamma = self._intermediate
        g2 = grad.reshape(xhat.shape)
        gbeta = g2.sum(axis=0)
        ggamma = np.einsum("nc,nc->c", g2, xhat)
        scale = invstd * gamma if gamma is not None else invstd
        if self.training:
            inv_n = 1.0 / xhat.shape[0]
            gx = xhat * (ggamma * -inv_n)
            gx += g2
            gx -= gbeta * inv_n
            gx *= scale
        else:
            gx = g2 * scale
        has_gamma, has_beta = self.has
        return gx.reshape(grad.shape), ggamma if has_gamma else None, gbeta if has_beta else None


class LayerNorm(Op):
    """Layer normalization over the last axis; saves x-hat (size of x), 1/std (one per row) and gamma."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = _check_affine("LayerNorm", x, gamma, beta)
        mean = x.sum(axis=-1, keepdims=True)
        mean *= 1.0 / C
        xc = x - mean
        var = np.einsum("...c,...c->...", xc, xc)[..., None]
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
        mean_g = gxhat.sum(axis=-1, keepdims=True)
        mean_g *= 1.0 / C
        mean_gx = np.einsum("...c,...c->...", gxhat, xhat)[..., None]
        mean_gx *= 1.0 / C
        gxhat -= mean_g
        gxhat -= xhat * mean_gx
        gxhat *= invstd
        g2 = grad.reshape(-1, C)
        has_gamma, has_beta = self.has
        ggamma = np.einsum("nc,nc->c", g2, xhat.reshape(-1, C)) if has_gamma else None
        gbeta = g2.sum(axis=0) if has_beta else None
        return gxhat, ggamma, gbeta
