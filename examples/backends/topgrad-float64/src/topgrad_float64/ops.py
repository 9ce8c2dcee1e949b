"""The op table: one `topgrad.Op` subclass per op, forward and backward on float64 numpy arrays."""

import math
from typing import Any

import numpy as np
from topgrad import Op
from topgrad.attention_shapes import check_attention_shapes
from topgrad.convolution import conv_geometry
from topgrad.normalization import eval_statistics_missing, feature_count


def unbroadcast(grad: np.ndarray, x: Any) -> np.ndarray | None:
    """The gradient of a broadcast input: summed back to x's shape (None when x is a Python number)."""
    if not isinstance(x, np.ndarray):
        return None
    while grad.ndim > x.ndim:
        grad = grad.sum(axis=0)
    for axis, size in enumerate(x.shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return np.asarray(grad)  # a 0-d sum is a numpy scalar: the engine wants arrays


def check_broadcast(op: str, a: Any, b: Any) -> None:
    try:
        np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        raise ValueError(f"{op}: shapes {np.shape(a)} and {np.shape(b)} do not broadcast") from None


class Add(Op):
    def forward(self, a, b):
        check_broadcast("Add", a, b)
        self.save_for_backward(a, b)
        return np.asarray(np.add(a, b))  # 0-d operands give a numpy scalar

    def backward(self, grad):
        a, b = self.saved
        return unbroadcast(grad, a), unbroadcast(grad, b)


class Mul(Op):
    def forward(self, a, b):
        check_broadcast("Mul", a, b)
        self.save_for_backward(a, b)
        return np.asarray(np.multiply(a, b))

    def backward(self, grad):
        a, b = self.saved
        return unbroadcast(grad * b, a), unbroadcast(grad * a, b)


def expand(grad: np.ndarray, shape: tuple[int, ...], axis: Any, keepdims: bool) -> np.ndarray:
    """Undo a reduction: put the reduced axes back and broadcast grad to `shape`."""
    if axis is None:
        axis = tuple(range(len(shape)))
    if not keepdims:
        grad = np.expand_dims(grad, axis)
    return np.broadcast_to(grad, shape)


class Sum(Op):
    def forward(self, x, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.asarray(np.sum(x, axis=axis, keepdims=keepdims))  # an array even when 0-d

    def backward(self, grad):
        return (expand(grad, self.shape, self.axis, self.keepdims).copy(),)


class Mean(Op):
    def forward(self, x, axis=None, keepdims=False):
        total = np.asarray(np.sum(x, axis=axis, keepdims=keepdims))
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        self.count = x.size // max(total.size, 1)
        with np.errstate(invalid="ignore"):  # the mean of nothing is NaN, as in PyTorch, unwarned
            return np.asarray(total / self.count)

    def backward(self, grad):
        return (np.asarray(expand(grad, self.shape, self.axis, self.keepdims) / self.count),)


class ReLU(Op):
    def forward(self, x):
        self.save_for_backward(x)
        return np.asarray(np.maximum(x, 0.0))  # an array even when 0-d

    def backward(self, grad):
        (x,) = self.saved
        return (np.asarray(grad * (x > 0)),)


class LogSoftmax(Op):
    def forward(self, x, axis=-1):
        if x.size == 0:  # nothing to normalize (and an empty axis has no max)
            out = x.copy()
        else:
            shifted = x - x.max(axis=axis, keepdims=True)  # stable for large logits
            out = np.asarray(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))  # 0-d too
        self.axis = axis
        self.save_for_backward(out)
        return out

    def backward(self, grad):
        (out,) = self.saved
        return (np.asarray(grad - np.exp(out) * grad.sum(axis=self.axis, keepdims=True)),)


class Reshape(Op):
    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError as exc:  # numpy's words name neither the op nor x's shape
            message = f"Reshape: cannot reshape x of shape {x.shape} into shape {shape}: {exc}"
            raise ValueError(message) from None

    def backward(self, grad):
        return (grad.reshape(self.shape),)


class Linear(Op):
    def forward(self, x, w, b=None):
        if x.shape[-1] != w.shape[0]:
            raise ValueError(f"Linear: x of shape {x.shape} does not match w of shape {w.shape}")
        self.save_for_backward(x, w)
        self.has_bias = b is not None
        out = x @ w
        return out + b if self.has_bias else out

    def backward(self, grad):
        x, w = self.saved
        n = math.prod(x.shape[:-1])  # rows of x: a -1 cannot be inferred where an axis is 0
        rows = grad.reshape(n, grad.shape[-1])
        grad_w = x.reshape(n, x.shape[-1]).T @ rows
        return grad @ w.T, grad_w, rows.sum(axis=0) if self.has_bias else None


def im2col(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """Every (kh, kw) window of a padded NHWC input: shape (B, Ho, Wo, kh, kw, C), a view."""
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    return windows[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


class Conv2d(Op):
    def forward(self, x, w, b=None, stride=1, padding=0):
        # (h, w) pairs from ints or pairs, and every shape checked as the other backends do
        stride, padding, _ = conv_geometry(x.shape, w.shape, None if b is None else b.shape, stride, padding)
        ph, pw = padding
        xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        cols = im2col(xp, w.shape[0], w.shape[1], *stride)
        self.save_for_backward(cols, w)
        self.xp_shape, self.stride, self.padding, self.has_bias = xp.shape, stride, padding, b is not None
        n, k = math.prod(cols.shape[:3]), math.prod(w.shape[:3])  # output positions, window size
        out = cols.reshape(n, k) @ w.reshape(k, w.shape[3])  # the GEMM
        out = out.reshape(*cols.shape[:3], w.shape[3])
        return out + b if self.has_bias else out

    def backward(self, grad):
        cols, w = self.saved
        kh, kw, (sh, sw), (ph, pw) = w.shape[0], w.shape[1], self.stride, self.padding
        n, k = math.prod(cols.shape[:3]), math.prod(w.shape[:3])
        rows = grad.reshape(n, w.shape[3])
        grad_w = (cols.reshape(n, k).T @ rows).reshape(w.shape)
        grad_cols = (rows @ w.reshape(k, w.shape[3]).T).reshape(cols.shape)
        grad_xp = np.zeros(self.xp_shape)
        ho, wo = cols.shape[1:3]
        for i in range(kh):  # col2im: add each window position back where it came from
            for j in range(kw):
                grad_xp[:, i : i + sh * ho : sh, j : j + sw * wo : sw, :] += grad_cols[:, :, :, i, j, :]
        grad_x = grad_xp[:, ph : grad_xp.shape[1] - ph, pw : grad_xp.shape[2] - pw, :]
        return grad_x, grad_w, rows.sum(axis=0) if self.has_bias else None


def shape_of(a: Any) -> tuple[int, ...] | None:
    """An optional array's shape, None where it was left out: what the shape checks take."""
    return None if a is None else a.shape


def normalize_backward(grad_xhat: np.ndarray, xhat: np.ndarray, invstd: Any, axes: tuple) -> np.ndarray:
    """The gradient through xhat = (x - mean(x)) * invstd, with mean and variance over `axes`."""
    mean_grad = grad_xhat.mean(axis=axes, keepdims=True)
    mean_dot = (grad_xhat * xhat).mean(axis=axes, keepdims=True)
    return invstd * (grad_xhat - mean_grad - xhat * mean_dot)


def affine_grads(grad: np.ndarray, xhat: np.ndarray, axes: tuple, affine: tuple) -> tuple:
    """The gradients of gamma and beta in gamma * xhat + beta, None for one that was not given."""
    has_gamma, has_beta = affine
    return ((grad * xhat).sum(axis=axes) if has_gamma else None), (grad.sum(axis=axes) if has_beta else None)


class BatchNorm(Op):
    """Normalizes over every axis but the last. The running statistics are Tensors outside
    the graph: the op replaces their `.data`, as torch.nn.functional.batch_norm does."""

    def forward(self, x, gamma, beta, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        feature_count("BatchNorm", x.shape, gamma=shape_of(gamma), beta=shape_of(beta))  # one per feature
        self.affine = (gamma is not None, beta is not None)  # either may be None: left out
        gamma, beta = (1.0 if gamma is None else gamma), (0.0 if beta is None else beta)
        axes = tuple(range(x.ndim - 1))
        if training:
            n = math.prod(x.shape[:-1])  # values per channel
            if n < 2:  # no variance to normalize by (and n - 1 below would be 0), as PyTorch says
                message = f"BatchNorm: training needs more than one value per channel, got x {x.shape}"
                raise ValueError(message)
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            if running_mean is not None:
                running_mean.data = (1 - momentum) * running_mean.data + momentum * mean
            if running_var is not None:  # the running variance is unbiased
                running_var.data = (1 - momentum) * running_var.data + momentum * var * n / (n - 1)
        elif running_mean is None:  # topgrad passes both running statistics or neither
            raise eval_statistics_missing("BatchNorm", x.shape)
        else:
            mean, var = running_mean.data, running_var.data
        invstd = 1.0 / np.sqrt(var + eps)
        xhat = (x - mean) * invstd
        self.save_for_backward(xhat, invstd, gamma)
        self.axes, self.training = axes, training
        return gamma * xhat + beta

    def backward(self, grad):
        xhat, invstd, gamma = self.saved
        if self.training:
            grad_x = normalize_backward(grad * gamma, xhat, invstd, self.axes)
        else:
            grad_x = grad * gamma * invstd
        return grad_x, *affine_grads(grad, xhat, self.axes, self.affine)


class LayerNorm(Op):
    def forward(self, x, gamma, beta, eps=1e-5):
        feature_count("LayerNorm", x.shape, gamma=shape_of(gamma), beta=shape_of(beta))
        self.affine = (gamma is not None, beta is not None)  # either may be None: left out
        gamma, beta = (1.0 if gamma is None else gamma), (0.0 if beta is None else beta)
        invstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
        xhat = (x - x.mean(axis=-1, keepdims=True)) * invstd
        self.save_for_backward(xhat, invstd, gamma)
        return gamma * xhat + beta

    def backward(self, grad):
        xhat, invstd, gamma = self.saved
        lead = tuple(range(grad.ndim - 1))
        grad_x = normalize_backward(grad * gamma, xhat, invstd, (-1,))
        return grad_x, *affine_grads(grad, xhat, lead, self.affine)


class Attention(Op):
    """Single-head softmax(q kᵀ / √D) v on (B, T, D) arrays; `causal` hides later tokens."""

    def forward(self, q, k, v, causal=False):
        check_attention_shapes(q.shape, k.shape, v.shape)  # (B, T, D), (B, S, D), (B, S, Dv)
        scale = 1.0 / np.sqrt(q.shape[-1])
        scores = q @ k.transpose(0, 2, 1) * scale
        if causal:
            t, s = scores.shape[-2:]  # query i sees keys 0..i, as PyTorch's is_causal
            scores = np.where(np.tril(np.ones((t, s), dtype=bool)), scores, -np.inf)
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        self.save_for_backward(q, k, v, p)
        self.scale = scale
        return p @ v

    def backward(self, grad):
        q, k, v, p = self.saved
        grad_v = p.transpose(0, 2, 1) @ grad
        grad_p = grad @ v.transpose(0, 2, 1)
        grad_scores = p * (grad_p - (grad_p * p).sum(axis=-1, keepdims=True)) * self.scale
        return grad_scores @ k, grad_scores.transpose(0, 2, 1) @ q, grad_v
