"""The cases of `shapes.py`: one op's forward + backward at a shape vs_torch.py does not time.

Chosen from a sweep of 261 shapes (Topgrad-numpy against PyTorch eager, one thread): every shape
where Topgrad was much slower or used much more memory than PyTorch (`audit` says by how much,
before the fixes that followed), and a few per op where it was not, so that a change which helps
one shape and hurts another shows; two batch-1 convolutions from a later, smaller sweep (HISTORY.md
changes 57 and the col2im chunks). Built as in `_ops.py`: Topgrad gets NHWC, PyTorch NCHW, and
PyTorch's views (permute, slice) are made contiguous, so both frameworks copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import _ops
import numpy as np
import topgrad
import torch
import torch.nn.functional as nnf
from _ops import OpCase
from topgrad import Tensor


@dataclass(frozen=True)
class Sizes:
    """Each case's sizes as written, or (`tiny`, for the smoke test) each cut to at most `cap`."""

    tiny: bool = False
    cap: int = 4

    def __call__(self, n: int, least: int = 1) -> int:
        """Size `n`, or its tiny stand-in, never below `least` (a kernel must fit its image)."""
        return max(least, min(n, self.cap)) if self.tiny else n

    def shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Every size of `shape` through `__call__`."""
        return tuple(self(n) for n in shape)


Builder = Callable[[Sizes], OpCase]


@dataclass(frozen=True)
class ShapeCase:
    """A named case: which op, how to build it at some `Sizes`, and what the audit found there."""

    op: str
    name: str
    build: Builder
    audit: str = ""  # "time 2.9x", "mem 4.8x": topgrad/torch in the sweep before the fixes; "" = fine


def _rand(shape: Sequence[int], seed: int = 0, positive: bool = False) -> np.ndarray:
    """Standard normal float32 numbers from a fixed seed (or, `positive`, their magnitudes + 0.1)."""
    a = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)
    return np.abs(a) + 0.1 if positive else a


def _make(name: str, arrays: list[np.ndarray], tg_fn: Callable[..., Tensor], th_arrays: list[np.ndarray],
          th_fn: Callable[..., torch.Tensor], nchw_out: bool = False) -> OpCase:
    """An `_ops.OpCase` (its upstream gradient drawn from a fixed seed)."""
    return _ops._case(name, arrays, tg_fn, th_arrays, th_fn, np.random.default_rng(1), nchw_out)


def _same(name: str, shapes: Sequence[Sequence[int]], tg_fn: Callable[..., Tensor],
          th_fn: Callable[..., torch.Tensor], positive: Sequence[bool] = ()) -> Builder:
    """A case whose inputs are the same arrays, in the same layout, in both frameworks."""
    def build(z: Sizes) -> OpCase:
        pos = list(positive) + [False] * len(shapes)
        arrays = [_rand(z.shape(s), seed=i, positive=pos[i]) for i, s in enumerate(shapes)]
        return _make(name, arrays, tg_fn, arrays, th_fn)
    return build


# ---- the families -------------------------------------------------------------------------------
def binary(op: str, name: str, a: Sequence[int], b: Sequence[int], audit: str = "") -> ShapeCase:
    """Add, Mul or Div with broadcasting (the divisor positive)."""
    fn: Callable[..., Any] = {"Add": lambda x, y: x + y, "Mul": lambda x, y: x * y,
                              "Div": lambda x, y: x / y}[op]
    return ShapeCase(op, name, _same(name, [a, b], fn, fn, positive=[False, op == "Div"]), audit)


def unary(op: str, name: str, shape: Sequence[int], audit: str = "") -> ShapeCase:
    """An elementwise method that PyTorch has under the same name in lower case."""
    method = op.lower()
    return ShapeCase(op, name, _same(name, [shape], lambda x: getattr(x, method)(),
                                     getattr(torch, method)), audit)


def reduce(op: str, name: str, shape: Sequence[int], axis: int | tuple[int, ...] | None,
           keepdims: bool = False, audit: str = "") -> ShapeCase:
    """Sum, Mean or Max over `axis` (PyTorch's max over axes is `amax`)."""
    method = op.lower()

    def th_fn(x: torch.Tensor) -> torch.Tensor:
        if axis is None:
            return torch.amax(x) if method == "max" else getattr(x, method)()
        if method == "max":
            return torch.amax(x, dim=axis, keepdim=keepdims)
        return getattr(x, method)(dim=axis, keepdim=keepdims)

    def tg_fn(x: Tensor) -> Tensor:
        return getattr(x, method)(axis=axis, keepdims=keepdims)

    return ShapeCase(op, name, _same(name, [shape], tg_fn, th_fn), audit)


def softmax(op: str, name: str, shape: Sequence[int], axis: int = -1, audit: str = "") -> ShapeCase:
    """LogSoftmax, or Softmax (one op on both shipped backends; LogSoftmax then Exp on a backend
    without it), over `axis`."""
    if op == "Softmax":
        return ShapeCase(op, name, _same(name, [shape], lambda x: x.softmax(axis),
                                         lambda x: torch.softmax(x, axis)), audit)
    return ShapeCase(op, name, _same(name, [shape], lambda x: x.logsoftmax(axis),
                                     lambda x: nnf.log_softmax(x, axis)), audit)


def linear(name: str, rows: Sequence[int], din: int, dout: int, audit: str = "") -> ShapeCase:
    """x (rows..., din) @ w (din, dout) + b; PyTorch gets w transposed, as nn.Linear stores it."""
    def build(z: Sizes) -> OpCase:
        x, w, b = _rand(z.shape([*rows, din])), _rand((z(din), z(dout)), 1) * 0.05, _rand((z(dout),), 2)
        return _make(name, [x, w, b], lambda x, w, b: x.linear(w, b), [x, np.ascontiguousarray(w.T), b],
                     nnf.linear)
    return ShapeCase("Linear", name, build, audit)


def conv(name: str, b: int, hw: int, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0,
         audit: str = "") -> ShapeCase:
    """A k x k convolution with bias of a (b, hw, hw, cin) NHWC batch (NCHW for PyTorch)."""
    def build(z: Sizes) -> OpCase:
        x = _rand((z(b), z(hw, least=k), z(hw, least=k), z(cin)))
        w, bias = _rand((k, k, z(cin), z(cout)), 1) * 0.1, _rand((z(cout),), 2)
        return _make(name, [x, w, bias], lambda x, w, c: x.conv2d(w, c, stride=stride, padding=pad),
                     [_ops._nchw(x), np.ascontiguousarray(w.transpose(3, 2, 0, 1)), bias],
                     lambda x, w, c: nnf.conv2d(x, w, c, stride=stride, padding=pad), nchw_out=True)
    return ShapeCase("Conv2d", name, build, audit)


def maxpool(name: str, b: int, hw: int, c: int, k: int, stride: int | None = None, pad: int = 0,
            audit: str = "") -> ShapeCase:
    """k x k max pooling of a (b, hw, hw, c) NHWC batch (NCHW for PyTorch)."""
    def build(z: Sizes) -> OpCase:
        x = _rand((z(b), z(hw, least=k), z(hw, least=k), z(c)))
        return _make(name, [x], lambda x: x.maxpool2d(k, stride, pad), [_ops._nchw(x)],
                     lambda x: nnf.max_pool2d(x, k, stride, pad), nchw_out=True)
    return ShapeCase("MaxPool2d", name, build, audit)


def batchnorm(name: str, shape: Sequence[int], audit: str = "") -> ShapeCase:
    """Training-mode BatchNorm over all axes but the last (channels), with running statistics."""
    def build(z: Sizes) -> OpCase:
        size = z.shape(shape)
        c, image = size[-1], len(size) == 4
        x, g, bias = _rand(size), _rand((c,), 1), _rand((c,), 2)
        stats = {"running_mean": Tensor.zeros(c), "running_var": Tensor.ones(c)}
        th_mean, th_var = torch.zeros(c), torch.ones(c)
        return _make(name, [x, g, bias], lambda x, g, b: x.batchnorm(g, b, training=True, **stats),
                     [_ops._nchw(x) if image else x, g, bias],
                     lambda x, g, b: nnf.batch_norm(x, th_mean, th_var, g, b, training=True), nchw_out=image)
    return ShapeCase("BatchNorm", name, build, audit)


def layernorm(name: str, shape: Sequence[int], audit: str = "") -> ShapeCase:
    """LayerNorm over the last axis, with gain and bias."""
    def build(z: Sizes) -> OpCase:
        size = z.shape(shape)
        x, g, bias = _rand(size), _rand(size[-1:], 1), _rand(size[-1:], 2)
        return _make(name, [x, g, bias], lambda x, g, b: x.layernorm(g, b, eps=1e-5), [x, g, bias],
                     lambda x, g, b: nnf.layer_norm(x, (x.shape[-1],), g, b, eps=1e-5))
    return ShapeCase("LayerNorm", name, build, audit)


def attention(name: str, b: int, t: int, d: int, causal: bool = False, s: int | None = None,
              audit: str = "") -> ShapeCase:
    """Scaled dot-product attention of t queries over s (default t) keys and values."""
    def tg_fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return topgrad.attention(q, k, v, causal=causal)

    def th_fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return nnf.scaled_dot_product_attention(q, k, v, is_causal=causal)

    shapes = [(b, t, d), (b, s or t, d), (b, s or t, d)]
    return ShapeCase("Attention", name, _same(name, shapes, tg_fn, th_fn), audit)


def permute(name: str, shape: Sequence[int], axes: tuple[int, ...], audit: str = "") -> ShapeCase:
    """A transposition; PyTorch's view is made contiguous, the copy Topgrad makes."""
    return ShapeCase("Permute", name, _same(name, [shape], lambda x: x.permute(*axes),
                                            lambda x: x.permute(axes).contiguous()), audit)


def reshape(name: str, shape: Sequence[int], audit: str = "") -> ShapeCase:
    """Flatten all axes but the first (an image batch before a Linear layer). Alone, its leaf's
    gradient is a view of backward's seed, which Topgrad copies (a `.grad` never shares memory
    with the seed; PyTorch's does) and PyTorch does not: in a graph the seed is a new array and
    neither copies. Concat along axis 0 pays the same copy."""
    return ShapeCase("Reshape", name, _same(name, [shape], lambda x: x.reshape(x.shape[0], -1),
                                            lambda x: x.reshape(x.shape[0], -1)), audit)


def slice_(name: str, shape: Sequence[int], index: object, audit: str = "") -> ShapeCase:
    """Basic indexing; PyTorch's view is made contiguous, the copy Topgrad makes."""
    return ShapeCase("Slice", name, _same(name, [shape], lambda x: x[index], lambda x: x[index].contiguous()),
                     audit)


def concat(name: str, shape: Sequence[int], count: int, axis: int, audit: str = "") -> ShapeCase:
    """`count` arrays of `shape` joined along `axis`."""
    def tg_fn(*xs: Tensor) -> Tensor:
        return topgrad.cat(list(xs), axis=axis)

    def th_fn(*xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(xs), dim=axis)

    return ShapeCase("Concat", name, _same(name, [shape] * count, tg_fn, th_fn), audit)


def vs_torch_tiny(op: str, name: str, audit: str = "") -> ShapeCase:
    """vs_torch.py's case for `op` at `_ops.Dims.tiny()`: the per-call overhead of the op."""
    return ShapeCase(op, name, lambda z: _ops.build(op, _ops.Dims.tiny()), audit)


# ---- the table: grouped by op; names give the op, the shape and the parameter that matters ----------
CASES: tuple[ShapeCase, ...] = (
    binary("Add", "Add outer (N,1)+(1,C) 2048x2048", (2048, 1), (1, 2048)),
    binary("Mul", "Mul SE gate (B,H,W,C)*(B,1,1,C) 128x14x14x32", (128, 14, 14, 32), (128, 1, 1, 32)),
    binary("Div", "Div rows (N,C)/(N,1) 4096x1024", (4096, 1024), (4096, 1)),
    unary("Sigmoid", "Sigmoid 1000x1000", (1000, 1000), audit="time 1.6x"),
    reduce("Sum", "Sum axis0 4096x1024", (4096, 1024), 0),
    reduce("Max", "Max axis-1 65536x16 (short rows)", (65536, 16), -1),
    reduce("Mean", "Mean axis(1,2) keep 128x14x14x32 (NHWC H,W)", (128, 14, 14, 32), (1, 2), keepdims=True),

    softmax("LogSoftmax", "LogSoftmax 32x128x128 (3d, C=128)", (32, 128, 128), audit="time 2.7x"),
    softmax("LogSoftmax", "LogSoftmax 8x512x512 (3d, C=512)", (8, 512, 512), audit="time 1.7x"),
    softmax("LogSoftmax", "LogSoftmax 64x32000 (vocab)", (64, 32000)),
    softmax("LogSoftmax", "LogSoftmax axis1 of 128x28x64 (not last)", (128, 28, 64), axis=1,
            audit="time 2.1x"),
    softmax("LogSoftmax", "LogSoftmax 65536x3 (C=3)", (65536, 3), audit="mem 1.4x"),
    softmax("Softmax", "Softmax 32x128x128 (3d, C=128)", (32, 128, 128), audit="time 3.4x"),
    softmax("Softmax", "Softmax 8x512x512 (3d, C=512)", (8, 512, 512), audit="time 3.0x, mem 2.0x"),
    softmax("Softmax", "Softmax 4096x1024 (C=1024)", (4096, 1024), audit="time 3.0x, mem 2.0x"),

    linear("Linear b1 784->512 (batch 1)", (1,), 784, 512, audit="time 2.6x"),
    linear("Linear b4 784->512 (batch 4)", (4,), 784, 512, audit="time 2.1x"),
    linear("Linear 1x1x768->3072 (3d, batch 1)", (1, 1), 768, 3072, audit="time 2.7x"),
    linear("Linear 4096x512->1 (head, N=1)", (4096,), 512, 1, audit="time 2.7x"),
    linear("Linear 65536x64->1 (head, N=1)", (65536,), 64, 1, audit="time 2.1x"),
    linear("Linear 4096x1->64 (K=1)", (4096,), 1, 64, audit="time 2.2x"),
    linear("Linear 256x1024->4096 (large GEMM)", (256,), 1024, 4096),

    conv("Conv 6->16 5x5 p0 b128 14x14 (LeNet)", 128, 14, 6, 16, 5, audit="time 2.3x"),
    conv("Conv 32->32 5x5 p0 b128 14x14", 128, 14, 32, 32, 5, audit="time 2.4x, mem 1.3x"),
    conv("Conv 32->32 5x5 p2 b128 14x14", 128, 14, 32, 32, 5, pad=2, audit="time 2.0x"),
    conv("Conv 32->32 7x7 p3 b64 14x14", 64, 14, 32, 32, 7, pad=3, audit="time 2.3x, mem 2.7x"),
    conv("Conv 64->64 3x3 p1 b1 56x56 (batch 1)", 1, 56, 64, 64, 3, pad=1, audit="time 1.8x, mem 3.0x"),
    conv("Conv 128->128 3x3 p1 b32 14x14", 32, 14, 128, 128, 3, pad=1, audit="mem 2.0x"),
    conv("Conv 256->256 3x3 p1 b16 7x7", 16, 7, 256, 256, 3, pad=1, audit="time 1.7x, mem 4.5x"),
    conv("Conv 3->64 7x7 s2 p3 b8 224x224 (stem)", 8, 224, 3, 64, 7, stride=2, pad=3),
    conv("Conv 3->64 7x7 s2 p3 b1 224x224 (stem, batch 1)", 1, 224, 3, 64, 7, stride=2, pad=3,
         audit="mem 1.6x"),
    conv("Conv 256->512 3x3 p1 b1 28x28 (batch 1, wide)", 1, 28, 256, 512, 3, pad=1, audit="mem 2.4x"),
    conv("Conv 64->128 1x1 s2 b64 28x28 (shortcut)", 64, 28, 64, 128, 1, stride=2),

    vs_torch_tiny("MaxPool2d", "MaxPool k2 2x4x4x4 (vs_torch tiny: overhead)", audit="time 4.3x"),
    maxpool("MaxPool k2 b1 14x14x32 (batch 1)", 1, 14, 32, 2, audit="time 2.4x"),
    maxpool("MaxPool k2 b128 15x15x32 (odd side)", 128, 15, 32, 2),
    maxpool("MaxPool k3 s1 p1 b64 28x28x32 (overlap)", 64, 28, 32, 3, 1, 1, audit="mem 3.1x"),
    maxpool("MaxPool k3 s2 p1 b32 56x56x64 (ResNet)", 32, 56, 64, 3, 2, 1, audit="mem 2.2x"),
    maxpool("MaxPool k5 s2 p2 b64 28x28x16 (overlap)", 64, 28, 16, 5, 2, 2, audit="time 1.5x, mem 4.8x"),

    vs_torch_tiny("BatchNorm", "BatchNorm 2x4x4x4 (vs_torch tiny: overhead)", audit="time 4.5x"),
    batchnorm("BatchNorm 1d 32x64 (small)", (32, 64), audit="time 4.3x"),
    batchnorm("BatchNorm 1d 4096x512", (4096, 512), audit="time 1.7x"),
    batchnorm("BatchNorm b1 1x28x28x32 (batch 1)", (1, 28, 28, 32), audit="time 2.4x"),
    batchnorm("BatchNorm 32x56x56x64 (C=64)", (32, 56, 56, 64)),

    vs_torch_tiny("LayerNorm", "LayerNorm 2x4x8 (vs_torch tiny: overhead)", audit="time 3.0x"),
    layernorm("LayerNorm 1x1x768 (one row)", (1, 1, 768), audit="time 3.2x"),
    layernorm("LayerNorm 512x28x64 (C=64, 4x vs_torch)", (512, 28, 64), audit="time 3.1x"),
    layernorm("LayerNorm 32x128x512 (C=512)", (32, 128, 512), audit="time 3.5x"),
    layernorm("LayerNorm 8x512x1024 (C=1024)", (8, 512, 1024), audit="time 3.4x, mem 1.3x"),
    layernorm("LayerNorm 64x4096 (C=4096)", (64, 4096), audit="time 2.5x, mem 1.6x"),
    layernorm("LayerNorm 65536x3 (C=3)", (65536, 3), audit="mem 1.4x"),

    attention("Attention B32 T128 D64", 32, 128, 64),
    attention("Attention causal B2 T1024 D64 (long)", 2, 1024, 64, causal=True),
    attention("Attention B1 T1 S512 D64 (decode)", 1, 1, 64, s=512),

    permute("Permute 2d T 1024x1024", (1024, 1024), (1, 0), audit="time 3.0x"),
    permute("Permute 2d T 2048x2048", (2048, 2048), (1, 0), audit="time 2.9x"),
    permute("Permute 2d T 4096x512", (4096, 512), (1, 0), audit="time 2.4x"),
    reshape("Reshape flatten 128x7x7x64 (.grad copies the seed)", (128, 7, 7, 64), audit="time 7.5x"),
    reshape("Reshape flatten 8x56x56x64 (.grad copies the seed)", (8, 56, 56, 64), audit="time 24x"),
    slice_("Slice stride2 H,W 128x28x28x16", (128, 28, 28, 16), np.s_[:, ::2, ::2]),
    concat("Concat axis0 2x 128x14x14x32 (.grad copies the seed)", (128, 14, 14, 32), 2, 0,
           audit="time 1.6x, mem 2.0x"),
    concat("Concat axis0 16x 64x256 (many; .grad copies the seed)", (64, 256), 16, 0, audit="time 2.0x"),
    concat("Concat last 12x 32x28x28x12 (dense block)", (32, 28, 28, 12), 12, -1),
)

if len({c.name for c in CASES}) != len(CASES):
    raise AssertionError("two cases of _shape_cases.CASES share a name")
