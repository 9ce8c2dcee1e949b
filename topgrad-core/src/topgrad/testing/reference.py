"""The float64 reference of every op of the table: plain numpy forward and vector-Jacobian products.

Each op has `forward(*inputs, **params)` and `vjp(grad, *inputs, **params)`; `vjp` returns one
gradient per positional input (None where the input is not an array). The reference is
independent of every backend and of torch; the kit checks its gradients against central
differences on each run. Ops that update keyword Tensors in place (BatchNorm's running
statistics) return `(out, {param: new value})` from `forward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from topgrad.convolution import conv_geometry
from topgrad.pairs import Pair
from topgrad.pooling import pool_geometry

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised in a venv without numpy
    from topgrad.testing import NEEDS_NUMPY

    raise ImportError(NEEDS_NUMPY) from exc


@dataclass(frozen=True)
class RefOp:
    """One op's reference: a forward and its vector-Jacobian product."""

    forward: Callable[..., Any]
    vjp: Callable[..., tuple[Any, ...]]


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` down to `shape`, undoing numpy broadcasting."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


def _axes(axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, int) else axis
    return tuple(sorted(a % ndim for a in axis))


# ---- elementwise and reductions ----------------------------------------------------
def _add_vjp(g: Any, a: Any, b: Any) -> tuple[Any, ...]:
    return tuple(unbroadcast(g, x.shape) if _is_array(x) else None for x in (a, b))


def _mul_vjp(g: Any, a: Any, b: Any) -> tuple[Any, ...]:
    ga = unbroadcast(g * b, a.shape) if _is_array(a) else None
    gb = unbroadcast(g * a, b.shape) if _is_array(b) else None
    return ga, gb


def _div_vjp(g: Any, a: Any, b: Any) -> tuple[Any, ...]:
    ga = unbroadcast(g / b, a.shape) if _is_array(a) else None
    gb = unbroadcast(-g * a / (b * b), b.shape) if _is_array(b) else None
    return ga, gb


def _max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.max(x, axis=axis, keepdims=keepdims)


def _max_vjp(g: Any, x: Any, axis: Any = None, keepdims: bool = False) -> tuple[Any]:
    """torch.amax's rule: the gradient split equally among the elements equal to the maximum."""
    top = np.max(x, axis=axis, keepdims=True)
    mask = (x == top).astype(x.dtype)
    g = g if keepdims else np.expand_dims(g, _axes(axis, x.ndim))
    return (g * mask / mask.sum(axis=axis, keepdims=True),)


def _sigmoid(x: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


def _sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.sum(x, axis=axis, keepdims=keepdims)


def _sum_vjp(g: Any, x: Any, axis: Any = None, keepdims: bool = False) -> tuple[Any, ...]:
    axes = _axes(axis, x.ndim)
    if not keepdims:
        g = np.expand_dims(g, axes)
    return (np.broadcast_to(g, x.shape).copy(),)


def _mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return np.mean(x, axis=axis, keepdims=keepdims)


def _mean_vjp(g: Any, x: Any, axis: Any = None, keepdims: bool = False) -> tuple[Any, ...]:
    count = int(np.prod([x.shape[a] for a in _axes(axis, x.ndim)]))
    return (_sum_vjp(g, x, axis, keepdims)[0] / count,)


def _relu_vjp(g: Any, x: Any) -> tuple[Any, ...]:
    """PyTorch's select: 0 where x <= 0 whatever g holds (NaN included), g elsewhere (NaN x too)."""
    return (np.where(x <= 0, 0.0, g),)


def _logsoftmax(x: Any, axis: int = -1) -> Any:
    if x.size == 0:  # nothing to normalize (an empty axis has no max)
        return x.copy()
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _logsoftmax_vjp(g: Any, x: Any, axis: int = -1) -> tuple[Any, ...]:
    return (g - np.exp(_logsoftmax(x, axis)) * g.sum(axis=axis, keepdims=True),)


def _softmax_vjp(g: Any, x: Any, axis: int = -1) -> tuple[Any, ...]:
    y = np.exp(_logsoftmax(x, axis))
    return (y * (g - (g * y).sum(axis=axis, keepdims=True)),)


# ---- linear algebra ------------------------------------------------------------------
def _linear(x: Any, w: Any, b: Any = None) -> Any:
    out = x @ w
    return out if b is None else out + b


def _linear_vjp(g: Any, x: Any, w: Any, b: Any = None) -> tuple[Any, ...]:
    rows = math.prod(x.shape[:-1])  # not -1, which numpy cannot infer where an axis is 0
    gx = g @ w.T
    gw = x.reshape(rows, x.shape[-1]).T @ g.reshape(rows, g.shape[-1])
    gb = g.reshape(rows, g.shape[-1]).sum(axis=0) if b is not None else None
    return gx, gw, gb


def _reshape(x: Any, shape: tuple[int, ...] = ()) -> Any:
    return x.reshape(shape)


def _reshape_vjp(g: Any, x: Any, shape: tuple[int, ...] = ()) -> tuple[Any, ...]:
    return (g.reshape(x.shape),)


def _permute(x: Any, axes: tuple[int, ...] = ()) -> Any:
    return np.transpose(x, axes)


def _permute_vjp(g: Any, x: Any, axes: tuple[int, ...] = ()) -> tuple[Any, ...]:
    return (np.transpose(g, np.argsort(axes)),)


def _slice(x: Any, index: tuple[Any, ...] = ()) -> Any:
    whole = (*index, ...)  # the trailing ... keeps a 0-d result an array
    return x[whole].copy()


def _slice_vjp(g: Any, x: Any, index: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    gx = np.zeros_like(x)
    gx[index] = g
    return (gx,)


def _concat(*xs: Any, axis: int = 0) -> Any:
    return np.concatenate(xs, axis=axis)


def _concat_vjp(g: Any, *xs: Any, axis: int = 0) -> tuple[Any, ...]:
    return tuple(np.split(g, np.cumsum([x.shape[axis] for x in xs[:-1]]), axis=axis))


def _padded(x: Any, w: Any, stride: Any, padding: Any) -> tuple[Any, Pair, Pair, Pair]:
    """x padded, with the stride, padding and output size as (h, w) pairs."""
    step, (ph, pw), out = conv_geometry(x.shape, w.shape, None, stride, padding)
    return np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0))), step, (ph, pw), out


def _conv2d(x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0) -> Any:
    """Direct convolution: a sum over kernel positions (no im2col), NHWC input, HWIO kernel."""
    xp, (sh, sw), _, (ho, wo) = _padded(x, w, stride, padding)
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for p in range(w.shape[0]):
        for q in range(w.shape[1]):
            window = xp[:, p : p + sh * ho : sh, q : q + sw * wo : sw, :]
            out += window @ w[p, q]
    return out if b is None else out + b


def _conv2d_vjp(g: Any, x: Any, w: Any, b: Any = None, stride: Any = 1, padding: Any = 0) -> tuple[Any, ...]:
    xp, (sh, sw), (ph, pw), (ho, wo) = _padded(x, w, stride, padding)
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for p in range(w.shape[0]):
        for q in range(w.shape[1]):
            rows, cols = slice(p, p + sh * ho, sh), slice(q, q + sw * wo, sw)
            gxp[:, rows, cols, :] += g @ w[p, q].T
            gw[p, q] = np.einsum("bhwc,bhwo->co", xp[:, rows, cols, :], g)
    gx = gxp[:, ph : ph + x.shape[1], pw : pw + x.shape[2], :]
    gb = g.sum(axis=(0, 1, 2)) if b is not None else None
    return gx, gw, gb


def _maxpool_sources(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> tuple[Any, Any]:
    """The pooled output and, per output, the input position (h, w) its value came from, by
    PyTorch's scan: a larger value or a NaN takes the place, a window of -inf keeps its first
    position inside the image."""
    (kh, kw), (sh, sw), (ph, pw), (ho, wo) = pool_geometry(x.shape, kernel_size, stride, padding)
    B, H, W, C = x.shape
    out, sources = np.empty((B, ho, wo, C)), np.empty((B, ho, wo, C, 2), dtype=int)
    for b, oh, ow, c in np.ndindex(B, ho, wo, C):
        best, source = -np.inf, None
        for h in range(max(oh * sh - ph, 0), min(oh * sh - ph + kh, H)):
            for w in range(max(ow * sw - pw, 0), min(ow * sw - pw + kw, W)):
                v = x[b, h, w, c]
                if source is None:
                    source = (h, w)  # the first position inside, kept if every value is -inf
                if v > best or np.isnan(v):
                    best, source = v, (h, w)
        out[b, oh, ow, c], sources[b, oh, ow, c] = best, source
    return out, sources


def _maxpool2d_vjp(g: Any, x: Any, **params: Any) -> tuple[Any, ...]:
    _, sources = _maxpool_sources(x, **params)
    gx = np.zeros_like(x)
    for b, oh, ow, c in np.ndindex(g.shape):
        h, w = sources[b, oh, ow, c]
        gx[b, h, w, c] += g[b, oh, ow, c]
    return (gx,)


# ---- normalization ---------------------------------------------------------------------
def _normalize_backward(dxhat: Any, xhat: Any, invstd: Any, axes: tuple[int, ...]) -> Any:
    n = int(np.prod([xhat.shape[a] for a in axes]))
    total = dxhat.sum(axis=axes, keepdims=True)
    dot = (dxhat * xhat).sum(axis=axes, keepdims=True)
    return invstd * (dxhat - total / n - xhat * dot / n)


def _affine(out: Any, gamma: Any, beta: Any) -> Any:
    """gamma * out + beta, a None gamma or beta standing for none (PyTorch's weight=None, bias=None)."""
    out = out if gamma is None else gamma * out
    return out if beta is None else out + beta


def _affine_vjp(g: Any, xhat: Any, gamma: Any, beta: Any, axes: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """The gradient reaching xhat, and gamma's and beta's (None for a None gamma or beta)."""
    ggamma = None if gamma is None else (g * xhat).sum(axis=axes)
    gbeta = None if beta is None else g.sum(axis=axes)
    return (g if gamma is None else g * gamma), ggamma, gbeta


def _bn_stats(x: Any, running_mean: Any, running_var: Any, training: bool) -> tuple[Any, Any]:
    axes = tuple(range(x.ndim - 1))
    if training:
        return x.mean(axis=axes), x.var(axis=axes)
    return running_mean, running_var


def _batchnorm(
    x: Any, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
    training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
) -> Any:
    mean, var = _bn_stats(x, running_mean, running_var, training)
    out = _affine((x - mean) / np.sqrt(var + eps), gamma, beta)
    updates = {}
    if training and running_mean is not None:
        updates["running_mean"] = (1 - momentum) * running_mean + momentum * mean
    if training and running_var is not None:
        n = x.size // x.shape[-1]
        updates["running_var"] = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return (out, updates) if updates else out


def _batchnorm_vjp(
    g: Any, x: Any, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
    training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
) -> tuple[Any, ...]:
    axes = tuple(range(x.ndim - 1))
    mean, var = _bn_stats(x, running_mean, running_var, training)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    gxhat, ggamma, gbeta = _affine_vjp(g, xhat, gamma, beta, axes)
    gx = _normalize_backward(gxhat, xhat, invstd, axes) if training else gxhat * invstd
    return gx, ggamma, gbeta


def _layernorm(x: Any, gamma: Any, beta: Any, eps: float = 1e-5) -> Any:
    mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    return _affine((x - mean) / np.sqrt(var + eps), gamma, beta)


def _layernorm_vjp(g: Any, x: Any, gamma: Any, beta: Any, eps: float = 1e-5) -> tuple[Any, ...]:
    invstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    xhat = (x - x.mean(axis=-1, keepdims=True)) * invstd
    gxhat, ggamma, gbeta = _affine_vjp(g, xhat, gamma, beta, tuple(range(x.ndim - 1)))
    return _normalize_backward(gxhat, xhat, invstd, (x.ndim - 1,)), ggamma, gbeta


# ---- attention -----------------------------------------------------------------------
def _attention_probs(q: Any, k: Any, causal: bool) -> Any:
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        t_q, t_k = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((t_q, t_k), dtype=bool)), scores, -np.inf)
    return np.exp(_logsoftmax(scores, axis=-1))


def _attention(q: Any, k: Any, v: Any, causal: bool = False) -> Any:
    return _attention_probs(q, k, causal) @ v


def _attention_vjp(g: Any, q: Any, k: Any, v: Any, causal: bool = False) -> tuple[Any, ...]:
    p = _attention_probs(q, k, causal)
    gv = np.swapaxes(p, -1, -2) @ g
    gp = g @ np.swapaxes(v, -1, -2)
    gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return gs @ k, np.swapaxes(gs, -1, -2) @ q, gv


REFERENCE: dict[str, RefOp] = {
    "Add": RefOp(lambda a, b: a + b, _add_vjp),
    "Mul": RefOp(lambda a, b: a * b, _mul_vjp),
    "Div": RefOp(lambda a, b: a / b, _div_vjp),
    "Sum": RefOp(_sum, _sum_vjp),
    "Mean": RefOp(_mean, _mean_vjp),
    "Max": RefOp(_max, _max_vjp),
    "ReLU": RefOp(lambda x: np.maximum(x, 0.0), _relu_vjp),
    "Exp": RefOp(np.exp, lambda g, x: (g * np.exp(x),)),
    "Log": RefOp(np.log, lambda g, x: (g / x,)),
    "Sqrt": RefOp(np.sqrt, lambda g, x: (g / (2.0 * np.sqrt(x)),)),
    "Abs": RefOp(np.abs, lambda g, x: (g * (np.greater(x, 0.0) * 1.0 - np.less(x, 0.0)),)),
    "Tanh": RefOp(np.tanh, lambda g, x: (g * (1.0 - np.tanh(x) ** 2),)),
    "Sigmoid": RefOp(_sigmoid, lambda g, x: (g * _sigmoid(x) * (1.0 - _sigmoid(x)),)),
    "LogSoftmax": RefOp(_logsoftmax, _logsoftmax_vjp),
    "Softmax": RefOp(lambda x, axis=-1: np.exp(_logsoftmax(x, axis)), _softmax_vjp),
    "Linear": RefOp(_linear, _linear_vjp),
    "Reshape": RefOp(_reshape, _reshape_vjp),
    "Permute": RefOp(_permute, _permute_vjp),
    "Slice": RefOp(_slice, _slice_vjp),
    "Concat": RefOp(_concat, _concat_vjp),
    "Conv2d": RefOp(_conv2d, _conv2d_vjp),
    "MaxPool2d": RefOp(lambda x, **params: _maxpool_sources(x, **params)[0], _maxpool2d_vjp),
    "BatchNorm": RefOp(_batchnorm, _batchnorm_vjp),
    "LayerNorm": RefOp(_layernorm, _layernorm_vjp),
    "Attention": RefOp(_attention, _attention_vjp),
}
"""The op table (the twelve required ops) and the optional ops, in float64."""


def forward_output(result: Any) -> Any:
    """The output array of a reference forward (dropping in-place parameter updates)."""
    return result[0] if isinstance(result, tuple) else result
