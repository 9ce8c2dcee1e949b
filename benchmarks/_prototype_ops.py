"""Prototypes of faster numpy ops, to measure the recommendations of PERF_NOTES.md (not a backend).

Registered as an override plugin (`install()`), they replace the numpy backend's ops in this
process only; `vs_torch.py --prototype` and `ab_prototype.py` use them. Each one subclasses
the backend's op and changes only what the notes recommend:

- reductions over many rows with few columns (`x.sum(axis=0)` on `(N, C)`, C <= 64) become a
  BLAS matrix-vector product with a ones vector (`ones @ x2`), and row sums `x2 @ ones`;
- broadcasting a `(C,)` vector over `(N, C)` runs on a "wide" view `(N/k, k*C)` against the
  vector tiled k times, so numpy's inner loop is long;
- Conv2d runs im2col + GEMM over chunks of the batch (bounded patch memory);
- Linear and Conv2d skip the input gradient where `op.needs_input_grad` says it is not needed
  (set only by the engine emulation of `_prototype_core.py`);
- plain SGD updates parameters through a small scratch (no temporary of the parameter's size).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import topgrad
from topgrad_numpy.ops import conv as _conv
from topgrad_numpy.ops import elementwise as _elementwise
from topgrad_numpy.ops import linear as _linear
from topgrad_numpy.ops import norm as _norm
from topgrad_numpy.ops import reduce as _reduce
from topgrad_numpy.ops._util import arr, axes, unbroadcast

F32 = np.float32


# ---- helpers ------------------------------------------------------------------------------------
def wants_grad(op: topgrad.Op, i: int) -> bool:
    """Whether positional input i needs a gradient (`needs_input_grad` is set by `_prototype_core`)."""
    needs = getattr(op, "needs_input_grad", None)
    return needs is None or bool(needs[i])


@functools.lru_cache(maxsize=64)
def ones(n: int) -> np.ndarray:
    """A read-only float32 ones vector of length n (cached: reductions reuse it)."""
    v = np.ones(n, dtype=F32)
    v.flags.writeable = False
    return v


def colsum(a2: np.ndarray) -> np.ndarray:
    """Column sums of a 2-d array, as one BLAS gemv (numpy's axis-0 sum is slow for few columns)."""
    return ones(a2.shape[0]) @ a2


def rowsum(a2: np.ndarray) -> np.ndarray:
    return a2 @ ones(a2.shape[1])


def wide(a2: np.ndarray, *vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    """`a2` (N, C), contiguous, viewed as (N/k, k*C), and each (C,) vector tiled k times."""
    n, c = a2.shape
    k = math.gcd(n, max(1, 1024 // max(c, 1)))
    return (a2.reshape(n // k, k * c), *(np.tile(v, k) for v in vectors))


def add_rowvec(a2: np.ndarray, v: np.ndarray) -> None:
    """a2 += v (broadcast over rows), in place, on the wide view."""
    aw, vw = wide(a2, v)
    aw += vw


def reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape` (numpy broadcasting undone); gemv when shape is grad's trailing axes."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead > 0 and tuple(grad.shape[lead:]) == tuple(shape) and grad.flags.c_contiguous:
        return colsum(grad.reshape(-1, max(1, math.prod(shape)))).reshape(shape)
    return unbroadcast(grad, shape)


def _block(shape: tuple[int, ...], axs: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(pre, red, post) when `axs` is one contiguous run of axes, else None."""
    if not axs or list(axs) != list(range(axs[0], axs[-1] + 1)):
        return None
    return math.prod(shape[: axs[0]]), math.prod(shape[axs[0] : axs[-1] + 1]), math.prod(shape[axs[-1] + 1 :])


def block_sum(x: np.ndarray, axs: tuple[int, ...]) -> np.ndarray | None:
    """Sum of a C-contiguous x over a contiguous run of axes through BLAS, or None."""
    blk = _block(x.shape, axs)
    if blk is None or not x.flags.c_contiguous or x.size == 0:
        return None
    pre, red, post = blk
    if post == 1:
        return rowsum(x.reshape(pre, red))
    if pre == 1:
        return colsum(x.reshape(red, post))
    return np.matmul(ones(red)[None, :], x.reshape(pre, red, post))[:, 0, :]


def block_expand(grad: np.ndarray, shape: tuple[int, ...], axs: tuple[int, ...]) -> np.ndarray | None:
    """grad (the reduced shape) repeated over a contiguous run of axes, as a fresh array, or None."""
    blk = _block(shape, axs)
    if blk is None:
        return None
    pre, red, post = blk
    return np.repeat(np.ascontiguousarray(grad).reshape(pre, 1, post), red, axis=1).reshape(shape)


# ---- ops ------------------------------------------------------------------------------------------
class Sum(_reduce.Sum):
    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        self.axes = axes("Sum", axis, x.ndim)
        self.shape, self.keepdims = x.shape, keepdims
        out = block_sum(x, self.axes)
        if out is None:
            return arr(x.sum(axis=self.axes, keepdims=keepdims))
        kept = [1 if i in self.axes else s for i, s in enumerate(x.shape)]
        dropped = [s for i, s in enumerate(x.shape) if i not in self.axes]
        return arr(out.reshape(kept if keepdims else dropped))

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        out = block_expand(grad, self.shape, self.axes)
        return (out,) if out is not None else super().backward(grad)


class Mean(_reduce.Mean):
    def forward(self, x: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
        self.axes = axes("Mean", axis, x.ndim)
        self.shape, self.keepdims = x.shape, keepdims
        count = math.prod(x.shape[a] for a in self.axes)
        self.scale = 1.0 / count if count else math.nan
        out = block_sum(x, self.axes)
        if out is None:
            return super().forward(x, axis, keepdims)
        out = arr(out)
        out *= self.scale
        kept = [1 if i in self.axes else s for i, s in enumerate(x.shape)]
        return out.reshape(kept if keepdims else [s for i, s in enumerate(x.shape) if i not in self.axes])

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        out = block_expand(grad, self.shape, self.axes)
        if out is None:
            return super().backward(grad)
        out *= self.scale
        return (out,)


class Add(_elementwise.Add):
    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        sa, sb = self.shapes
        return (None if sa is None else reduce_to(grad, sa), None if sb is None else reduce_to(grad, sb))


class Mul(_elementwise.Mul):
    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        a, b = self._intermediate
        ga = None if type(a) is float else reduce_to(arr(grad * b), a.shape)
        gb = None if type(b) is float else reduce_to(arr(grad * a), b.shape)
        return ga, gb


class Linear(_linear.Linear):
    def forward(self, x: np.ndarray, w: np.ndarray, b: Any = None) -> np.ndarray:
        if b is None or x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
            return super().forward(x, w, b)
        _linear._check(x, w, b)
        out = x.reshape(-1, w.shape[0]) @ w
        add_rowvec(out, b)
        self.save_for_backward(x, w)
        self.has_bias = True
        return out.reshape(*x.shape[:-1], w.shape[1])

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x, w = self._intermediate
        g2 = grad.reshape(-1, w.shape[1])
        gx = (g2 @ w.T).reshape(x.shape) if wants_grad(self, 0) else None
        gw = x.reshape(-1, w.shape[0]).T @ g2
        return gx, gw, colsum(g2) if self.has_bias else None


CONV_CHUNK_BYTES = 2 << 20  # patch bytes per GEMM: bounds im2col memory; 2 MiB stays in cache (fastest here)


def batch_chunks(batch: int, bytes_per_image: int) -> list[slice]:
    """Slices of the batch whose patch matrices hold about CONV_CHUNK_BYTES each."""
    per = max(1, CONV_CHUNK_BYTES // max(1, bytes_per_image))
    return [slice(i, min(batch, i + per)) for i in range(0, batch, per)]


class Conv2d(_conv.Conv2d):
    """im2col + GEMM over chunks of the batch (patch memory bounded by CONV_CHUNK_BYTES instead
    of kh*kw times the input), bias through the wide view, input gradient only where needed."""

    def forward(
        self, x: np.ndarray, w: np.ndarray, b: Any = None, stride: Any = 1, padding: Any = 0
    ) -> np.ndarray:
        _conv._check(x, w, b)
        sh, sw = _conv._pair("Conv2d", "stride", stride, 1)
        ph, pw = _conv._pair("Conv2d", "padding", padding, 0)
        B, H, W, C = x.shape
        kh, kw, _, Cout = w.shape
        Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
        if Ho < 1 or Wo < 1 or B == 0:
            return super().forward(x, w, b, stride, padding)
        w2 = w.reshape(kh * kw * C, Cout)
        out = np.empty((B, Ho * Wo, Cout), dtype=F32)
        for sl in batch_chunks(B, Ho * Wo * kh * kw * C * 4):
            cols = _conv.im2col(_conv._pad(x[sl], ph, pw), kh, kw, sh, sw)
            np.matmul(cols, w2, out=out[sl].reshape(-1, Cout))
        out = out.reshape(-1, Cout)
        if b is not None:
            add_rowvec(out, b)
        self.save_for_backward(x, w)
        self.geometry = (x.shape, sh, sw, ph, pw, Ho, Wo, b is not None)
        return out.reshape(B, Ho, Wo, Cout)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x, w = self._intermediate
        x_shape, sh, sw, ph, pw, Ho, Wo, has_bias = self.geometry
        B, H, W, C = x_shape
        kh, kw, _, Cout = w.shape
        w2 = w.reshape(kh * kw * C, Cout)
        grad = np.ascontiguousarray(grad)
        gw = np.zeros_like(w2)
        gx = np.empty(x_shape, dtype=F32) if wants_grad(self, 0) else None
        for sl in batch_chunks(B, Ho * Wo * kh * kw * max(C, Cout) * 4):
            g2 = grad[sl].reshape(-1, Cout)
            gw += _conv.im2col(_conv._pad(x[sl], ph, pw), kh, kw, sh, sw).T @ g2
            if gx is None:
                continue
            if sh == sw == 1 and ph < kh and pw < kw:
                gx[sl] = _conv._input_grad_as_conv(grad[sl], w, ph, pw)
            else:
                n = sl.stop - sl.start
                gx[sl] = _conv.col2im(g2 @ w2.T, (n, H, W, C), kh, kw, sh, sw, ph, pw, Ho, Wo)
        gb = colsum(grad.reshape(-1, Cout)) if has_bias else None
        return gx, gw.reshape(w.shape), gb


class BatchNorm(_norm.BatchNorm):
    """Training mode with gemv statistics and wide broadcasting; eval mode as the backend's."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
                training: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> np.ndarray:
        C = _norm._check_affine("BatchNorm", x, gamma, beta)
        x2 = x.reshape(-1, C)
        n = x2.shape[0]
        if not training or gamma is None or beta is None or n < 2 or not x2.flags.c_contiguous:
            return super().forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
        mean = colsum(x2)
        mean *= 1.0 / n
        xw, mw = wide(x2, mean)
        xc = xw - mw
        sq = np.multiply(xc, xc)
        var = colsum(sq.reshape(n, C))
        var *= 1.0 / n
        if running_mean is not None:
            rm = _norm._stat_array(running_mean)
            _norm._set_stat(running_mean, rm * (1.0 - momentum) + mean * momentum)
        if running_var is not None:
            unbiased = var * (momentum * n / (n - 1))
            _norm._set_stat(running_var, _norm._stat_array(running_var) * (1.0 - momentum) + unbiased)
        invstd = 1.0 / np.sqrt(var + eps)
        _, iw, gw, bw = wide(x2, invstd, gamma, beta)
        xc *= iw
        out = np.multiply(xc, gw, out=sq)
        out += bw
        self.save_for_backward(xc.reshape(n, C), invstd, gamma)
        self.training, self.has = True, (True, True)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        if not self.training:
            return super().backward(grad)
        xhat, invstd, gamma = self._intermediate
        n, C = xhat.shape
        g2 = np.ascontiguousarray(grad).reshape(n, C)
        gbeta = colsum(g2)
        tmp = np.multiply(g2, xhat)
        ggamma = colsum(tmp)
        xw, aw, cw, sw = wide(xhat, -ggamma / n, -gbeta / n, invstd * gamma)
        gx = np.multiply(xw, aw, out=tmp.reshape(xw.shape))  # scale * (g - gbeta/n - xhat*ggamma/n)
        gx += g2.reshape(xw.shape)
        gx += cw
        gx *= sw
        return gx.reshape(grad.shape), ggamma, gbeta


class LayerNorm(_norm.LayerNorm):
    """Row statistics as gemv with a ones vector instead of short-row `sum(axis=-1)`."""

    def forward(self, x: np.ndarray, gamma: Any, beta: Any, eps: float = 1e-5) -> np.ndarray:
        C = _norm._check_affine("LayerNorm", x, gamma, beta)
        if gamma is None or beta is None or not x.flags.c_contiguous or x.size == 0:
            return super().forward(x, gamma, beta, eps)
        x2 = x.reshape(-1, C)
        mean = rowsum(x2)
        mean *= 1.0 / C
        xc = x2 - mean[:, None]
        var = np.einsum("nc,nc->n", xc, xc)
        var *= 1.0 / C
        var += eps
        invstd = np.sqrt(var, out=var)
        np.divide(1.0, invstd, out=invstd)
        xc *= invstd[:, None]
        out = xc * gamma
        out += beta
        self.save_for_backward(xc, invstd, gamma)
        self.has = (True, True)
        return out.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        xhat, invstd, gamma = self._intermediate
        if invstd.ndim != 1:
            return super().backward(grad)
        C = xhat.shape[1]
        g2 = np.ascontiguousarray(grad).reshape(-1, C)
        gxhat = g2 * gamma
        mean_g = rowsum(gxhat)
        mean_g *= 1.0 / C
        mean_gx = np.einsum("nc,nc->n", gxhat, xhat)
        mean_gx *= 1.0 / C
        gxhat -= mean_g[:, None]
        gxhat -= xhat * mean_gx[:, None]
        gxhat *= invstd[:, None]
        return gxhat.reshape(grad.shape), colsum(np.multiply(g2, xhat)), colsum(g2)


PROTOTYPES: dict[str, type[topgrad.Op]] = {
    "Add": Add, "Mul": Mul, "Sum": Sum, "Mean": Mean, "Linear": Linear, "Conv2d": Conv2d,
    "BatchNorm": BatchNorm, "LayerNorm": LayerNorm,
}


SGD_CHUNK = 1 << 14  # elements updated per ufunc call: the scratch stays in L1/L2


def sgd_update(original: Any, param: Any, grad: Any, buf: Any | None, **kw: Any) -> tuple[Any, Any | None]:
    """Plain SGD (no momentum, no weight decay) in place, through a small scratch instead of a
    temporary of the parameter's size (`step = g * lr` in the backend)."""
    ok = type(param) is np.ndarray and param.dtype == F32
    ok = ok and param.flags.c_contiguous and param.flags.writeable
    if kw["momentum"] or kw["weight_decay"] or not ok:
        return original(param, grad, buf, **kw)
    p, g = param.reshape(-1), np.asarray(grad, dtype=F32).reshape(-1)
    scratch = np.empty(min(SGD_CHUNK, p.size), dtype=F32)
    for i in range(0, p.size, SGD_CHUNK):
        s = scratch[: min(SGD_CHUNK, p.size - i)]
        np.multiply(g[i : i + SGD_CHUNK], kw["lr"], out=s)
        np.subtract(p[i : i + SGD_CHUNK], s, out=p[i : i + SGD_CHUNK])
    return param, None


class _Plugin:
    @topgrad.hookimpl
    def topgrad_ops(self, backend: str) -> dict[str, Any] | None:
        if backend != "numpy":
            return None
        return {name: topgrad.override(op) for name, op in PROTOTYPES.items()}


def install(ops: bool = True, sgd: bool = True) -> None:
    """Replace the numpy backend's ops and/or its SGD update by the prototypes, in this process."""
    if ops:
        topgrad.register_plugin(_Plugin(), name="benchmarks-prototype-ops")
    backend = topgrad.set_backend("numpy")
    if sgd:
        backend.sgd_update = functools.partial(sgd_update, type(backend).sgd_update.__get__(backend))
