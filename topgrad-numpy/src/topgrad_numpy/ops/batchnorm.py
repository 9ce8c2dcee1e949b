"""BatchNorm: normalization over every axis but the last, with PyTorch's running statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from topgrad import Tensor
from topgrad.arguments import batchnorm_settings, with_article
from topgrad.errors import qualified_name
from topgrad.normalization import eval_statistics_missing

from topgrad_numpy.ops._util import NumpyOp, block_rows, check_affine, colsum, row_blocks, row_chunks, wide


def _set_stat(stat: Any, value: np.ndarray) -> None:
    """Store a new running statistic in the statistic's own dtype (a float64 batch does not turn
    float32 statistics into float64): a Tensor gets a new array, a raw array is written in place."""
    if isinstance(stat, Tensor):
        stat.data = value.astype(stat.data.dtype, copy=False)
    else:
        stat[...] = value


def _stat_array(stat: Any) -> np.ndarray:
    return stat.data if isinstance(stat, Tensor) else stat


def _centre_into(x2: np.ndarray, mean: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Write d = x - mean into `out` and return the per-channel sums of d and of d * d (float64):
    one blocked pass, each block summed while it is in cache. The output pass then only scales
    and shifts d, and backward reads it (saved), so no pass subtracts the mean twice.

    The sum of d corrects `mean`, a float32 sum of values far from zero (off by ~4e-4 of the
    standard deviation for a channel whose mean is 100 standard deviations, at 100 K values per
    channel): mean + sum(d) / n is the corrected two-pass mean, accurate as PyTorch's."""
    C = x2.shape[1]
    xw, mw = wide(x2, mean)
    ow = out.reshape(xw.shape)
    sums = _block_sums(xw, 2, C)
    for i, (rows, tmp) in enumerate(row_chunks(xw)):
        d = np.subtract(xw[rows], mw, out=ow[rows])
        colsum(d.reshape(-1, C), out=sums[0, i])
        colsum(np.square(d, out=tmp).reshape(-1, C), out=sums[1, i])
    d_sum, squares = sums.sum(axis=1, dtype=np.float64)
    return d_sum, squares


def _grad_sums(xc: np.ndarray, g2: np.ndarray, mean: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sums of g and of g * xc, in one blocked pass (each block of g is summed while
    it is in cache for the product). xc is the saved x - mean, or x itself where `mean` is given
    (eval), and then each block is centred in the scratch first."""
    C = xc.shape[1]
    xw, *mw = wide(xc, *(() if mean is None else (mean,)))
    gw = g2.reshape(xw.shape)
    sums = _block_sums(xw, 2, C)
    for i, (rows, tmp) in enumerate(row_chunks(xw)):
        g = gw[rows]
        colsum(g.reshape(-1, C), out=sums[0, i])
        d = np.subtract(xw[rows], mw[0], out=tmp) if mw else xw[rows]
        colsum(np.multiply(d, g, out=tmp).reshape(-1, C), out=sums[1, i])
    g_sum, gx_sum = sums.sum(axis=1, dtype=np.float64)
    return g_sum, gx_sum


def _scale_shift(x2: np.ndarray, centre: Any, scale: np.ndarray, offset: Any) -> np.ndarray:
    """(x2 - centre) * scale + offset per channel (centre or offset None: left out), block by
    block, each block's passes while it is in cache."""
    out = np.empty_like(x2)
    zero = np.zeros_like(scale)
    xw, sw, bw, cw = wide(x2, scale, zero if offset is None else offset, zero if centre is None else centre)
    ow = out.reshape(xw.shape)
    for rows in row_blocks(ow):
        if centre is None:
            o = np.multiply(xw[rows], sw, out=ow[rows])
        else:
            o = np.subtract(xw[rows], cw, out=ow[rows])
            o *= sw
        if offset is not None:
            o += bw
    return out


def _times_finite(shift: np.ndarray, v: np.ndarray) -> np.ndarray:
    """shift * v, 0 where v is Inf or NaN: the mean's correction leaves an infinite gradient sum
    as it is (0 * Inf would make it NaN where PyTorch's stays Inf), without numpy's warning."""
    out = np.zeros(v.shape, np.result_type(shift, v))
    return np.multiply(shift, v, out=out, where=np.isfinite(v))


def _block_sums(xw: np.ndarray, kinds: int, C: int) -> np.ndarray:
    """Room for `kinds` per-channel sums per row block (`row_chunks`) of the wide view `xw`:
    in x's dtype, one row per block, totalled in float64 at the end. Each block's sums are one gemv
    over the block viewed as (rows, C), as fast as over its wide rows and only C long."""
    return np.empty((kinds, -(-xw.shape[0] // block_rows(xw)), C), xw.dtype)


class BatchNorm(NumpyOp):
    """Batch normalization over all axes but the last. Training saves x - mean (a new array in
    place of x, which nothing else keeps in a conv -> BN block), the float32 mean's correction,
    1/std and gamma; eval saves x itself and the running mean instead (its dL/dx needs neither,
    so it makes no x - mean array: each block is centred on the way, into the output or, for
    dL/dgamma, into a scratch).

    Training uses the batch statistics and, when given, updates the running ones as
    `torch.nn.functional.batch_norm` does (momentum, unbiased variance); eval uses the
    running ones. The variance pass writes x - mean block by block (and corrects the mean by
    the deviations' sum: the shift absorbs the float32 mean's error), then each cache-sized
    block is scaled and shifted into the output. Backward sums g and g * (x - mean) per
    channel in one blocked pass, then writes dL/dx = (x - mean) * coef + const + g * scale
    over the saved x - mean: never rebuilding it spares two passes over x. Everything stays
    centred on the mean (x * scale - mean * scale would cancel badly for a tiny variance).
    Per-channel vectors are broadcast on a wide view (`wide`): numpy's inner loop over C <= 64
    channels is slow.
    """

    def forward(
        self, x: np.ndarray, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
        training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
    ) -> np.ndarray:
        """Normalize by the batch statistics (training: updating the running ones) or the running ones."""
        training = batchnorm_settings("BatchNorm", running_mean, running_var, training, momentum, eps)
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None and not isinstance(stat, (Tensor, np.ndarray)):
                raise TypeError(f"BatchNorm: {name} must be a Tensor or a numpy array of shape (C,) for x "
                                f"of shape {x.shape}, got {with_article(qualified_name(type(stat)))}: pass "
                                f"Tensor({name}) (its values, as a Topgrad Tensor)")
            if training and isinstance(stat, np.ndarray) and not stat.flags.writeable:
                raise TypeError(f"BatchNorm: a numpy {name} is updated in place in training; this one is "
                                "read-only. Pass a writeable array or a Tensor")
            if training and isinstance(stat, np.ndarray) and stat.dtype.kind != "f":
                raise TypeError(f"BatchNorm: a numpy {name} is updated in place in training; this one is "
                                f"{stat.dtype}, which would truncate every update (PyTorch refuses it). "
                                f"Pass a float array (np.asarray({name}, dtype=np.float32)) or a Tensor")
        C = check_affine("BatchNorm", x, gamma=gamma, beta=beta, running_mean=running_mean,
                         running_var=running_var)
        n = x.size // C
        x2 = x.reshape(n, C)
        if training:
            if n < 2:
                raise ValueError(
                    f"BatchNorm: training needs more than one value per channel, got x {x.shape}"
                )
            mean = colsum(x2)
            mean *= 1.0 / n
            xc = np.empty_like(x2)
            d_sum, squares = _centre_into(x2, mean, xc)  # xc: x - mean
            # the float32 mean's error (xc is x - (mean + shift) + shift); none where that mean is
            # already Inf or NaN, which stays as PyTorch's (the deviations' sum would make Inf NaN)
            shift64 = np.where(np.isfinite(d_sum), d_sum / n, 0.0)
            var = np.maximum(squares / n - shift64 * shift64, 0.0).astype(x2.dtype)  # >= 0 despite rounding
            shift = shift64.astype(x2.dtype)
            if running_mean is not None:
                rm = _stat_array(running_mean)
                _set_stat(running_mean, rm * (1.0 - momentum) + (mean + shift64).astype(x2.dtype) * momentum)
            if running_var is not None:
                rv = _stat_array(running_var)
                _set_stat(running_var, rv * (1.0 - momentum) + var * (momentum * n / (n - 1)))
        else:
            if running_mean is None or running_var is None:
                raise eval_statistics_missing("BatchNorm", x.shape)
            xc, mean = x2, np.array(_stat_array(running_mean), dtype=x2.dtype)  # centred below, by blocks
            var, shift = _stat_array(running_var), np.zeros(C, x2.dtype)
        invstd = np.asarray(var + eps, dtype=x2.dtype)
        np.sqrt(invstd, out=invstd)
        np.divide(1.0, invstd, out=invstd)
        scale = invstd * gamma if gamma is not None else invstd
        offset = beta  # (x - mean) * scale + beta = xc * scale + (beta - shift * scale)
        if shift.any():
            offset = (-shift * scale if beta is None else beta - shift * scale).astype(x2.dtype)
        centre = None if training else mean  # eval keeps x itself: no x - mean array, centred by blocks
        out = _scale_shift(xc, centre, scale, offset)
        if training:
            self.save_for_backward(x_minus_mean=xc, centre=None, shift=shift, inv_std=invstd, gamma=gamma)
        else:
            self.save_for_backward(x=xc, running_mean=centre, shift=shift, inv_std=invstd, gamma=gamma)
        self.training, self.has_gamma, self.has_beta = training, gamma is not None, beta is not None
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """The gradients of x, gamma and beta (None for those not given or not needed)."""
        xc, centre, shift, invstd, gamma = self._intermediate
        C = invstd.shape[0]
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        scale = invstd * gamma if gamma is not None else invstd
        g_sum, gxc_sum = _grad_sums(xc, g2, centre)
        gx_sum = gxc_sum - _times_finite(shift, g_sum)  # sums of g * (x - mean): xc is x - mean + shift
        gbeta = g_sum.astype(g2.dtype)
        ggamma = (gx_sum * invstd).astype(g2.dtype)  # sum(g * x-hat)
        grads = (ggamma if self.has_gamma else None, gbeta if self.has_beta else None)
        if not self.training:  # the statistics are constants: dL/dx = g * scale
            gw, sw = wide(g2, scale)
            return np.multiply(gw, sw).reshape(grad.shape), *grads
        # dL/dx = scale * (g - mean(g) - x-hat * mean(g * x-hat)), x-hat = (x - mean) * invstd,
        #       = xc * coef + const + g * scale, with coef and const per channel (const takes
        # -shift * coef), written over xc, which stays centred: x * coef - mean * coef cancels
        # badly when the variance is tiny.
        if not self.saved_are_scratch:  # called by hand: the engine's backward reads xc later
            xc = xc.copy()
        n = xc.shape[0]
        coef = scale * (invstd * ggamma) * (-1.0 / n)  # scale * invstd overflows for a constant
        # channel under a subnormal eps, where ggamma is 0: 0 * inf would be NaN
        const = (scale * gbeta * (-1.0 / n) - _times_finite(shift, coef)).astype(g2.dtype)
        xw, sw, kw, cw = wide(xc, scale, coef, const)
        gw = g2.reshape(xw.shape)
        for rows, tmp in row_chunks(gw):
            o = xw[rows]
            o *= kw
            o += cw
            o += np.multiply(gw[rows], sw, out=tmp)
        return xc.reshape(grad.shape), *grads
