"""One case per op of the table: the same inputs in Topgrad (NHWC) and PyTorch (its native layout).

A case is forward + backward of the op alone, at the size it has in the example models
(batch 128). `Dims.tiny()` shrinks every size for the smoke test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import topgrad
import torch
import torch.nn.functional as nnf
from topgrad import Tensor

OPS = ("Add", "Mul", "Div", "Sum", "Mean", "Max", "ReLU", "Exp", "Log", "Sqrt", "Abs", "Tanh", "Sigmoid",
       "LogSoftmax", "Softmax", "Linear", "Reshape", "Permute", "Slice", "Concat", "Conv2d", "MaxPool2d",
       "BatchNorm", "LayerNorm", "Attention")


@dataclass(frozen=True)
class Dims:
    """The sizes the op cases use: batch, image side and channels, tokens and width, linear sizes."""

    b: int = 128
    hw: int = 14
    c: int = 32
    t: int = 28
    d: int = 64
    din: int = 784
    dout: int = 512
    classes: int = 10
    side: int = 28  # MNIST image side

    @classmethod
    def tiny(cls) -> Dims:
        return cls(b=2, hw=4, c=4, t=4, d=8, din=16, dout=8, classes=3, side=4)


@dataclass
class OpCase:
    """Leaves and function for each framework, and the upstream gradient fed to backward."""

    name: str
    shape: str
    tg_leaves: list[Tensor]
    tg_fn: Callable[..., Tensor]
    tg_grad: np.ndarray
    th_leaves: list[torch.Tensor]
    th_fn: Callable[..., torch.Tensor]
    th_grad: torch.Tensor
    th_to_tg: Callable[[np.ndarray], np.ndarray] = lambda a: a  # torch output -> topgrad layout

    # gradients are cleared after backward, so that a call starts without them and its peak
    # memory counts them
    def run_topgrad(self) -> None:
        self.tg_fn(*self.tg_leaves).backward(self.tg_grad)
        for t in self.tg_leaves:
            t.grad = None

    def run_torch(self) -> None:
        self.th_fn(*self.th_leaves).backward(self.th_grad)
        for t in self.th_leaves:
            t.grad = None

    def max_abs_diff(self) -> float:
        """Largest forward difference between the two frameworks (a sanity check)."""
        with torch.no_grad():
            ref = self.th_to_tg(self.th_fn(*self.th_leaves).numpy())
        return float(np.max(np.abs(self.tg_fn(*self.tg_leaves).numpy() - ref), initial=0.0))


def _nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _case(name: str, arrays: list[np.ndarray], tg_fn: Callable[..., Tensor],
          th_arrays: list[np.ndarray], th_fn: Callable[..., torch.Tensor],
          rng: np.random.Generator, nchw_out: bool = False) -> OpCase:
    """Build a case; the upstream gradient has the output's shape in each framework's layout."""
    tg_leaves = [Tensor(a) for a in arrays]
    th_leaves = [torch.from_numpy(a.copy()).requires_grad_(True) for a in th_arrays]
    out_shape = tuple(tg_fn(*tg_leaves).shape)
    grad = rng.standard_normal(out_shape).astype(np.float32)
    th_grad = torch.from_numpy(_nchw(grad) if nchw_out else grad.copy())
    shape = " ".join("x".join(map(str, a.shape)) for a in arrays)
    return OpCase(name, shape, tg_leaves, tg_fn, grad, th_leaves, th_fn, th_grad,
                  _nhwc if nchw_out else (lambda a: a))


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def build(name: str, dims: Dims, seed: int = 0) -> OpCase:
    """The case for op `name` at sizes `dims`."""
    r, s = np.random.default_rng(seed), dims
    img = (s.b, s.hw, s.hw, s.c)
    seq = (s.b, s.t, s.d)
    if name == "Add":  # a residual connection
        a, b = _rand(r, *img), _rand(r, *img)
        return _case(name, [a, b], lambda x, y: x + y, [a, b], lambda x, y: x + y, r)
    if name == "Mul":  # broadcast of a per-feature scale
        a, g = _rand(r, *seq), _rand(r, s.d)
        return _case(name, [a, g], lambda x, y: x * y, [a, g], lambda x, y: x * y, r)
    if name == "Div":  # a softmax's normalization: scores over their row sums
        a, n = np.abs(_rand(r, s.b, s.t, s.t)) + 0.1, np.abs(_rand(r, s.b, s.t, 1)) + 1.0
        return _case(name, [a, n], lambda x, y: x / y, [a, n], lambda x, y: x / y, r)
    if name == "Sum":  # global pooling over H and W
        a = _rand(r, *img)
        return _case(name, [a], lambda x: x.sum(axis=(1, 2)), [_nchw(a)], lambda x: x.sum((2, 3)), r)
    if name == "Mean":  # mean over tokens
        a = _rand(r, *seq)
        return _case(name, [a], lambda x: x.mean(axis=1), [a], lambda x: x.mean(1), r)
    if name == "Max":  # a written-out softmax's row maxima
        a = _rand(r, *seq)
        return _case(name, [a], lambda x: x.max(axis=-1, keepdims=True), [a],
                     lambda x: torch.amax(x, dim=-1, keepdim=True), r)
    if name == "ReLU":
        a = _rand(r, *img)
        return _case(name, [a], lambda x: x.relu(), [a], torch.relu, r)
    if name in ("Exp", "Log"):  # a softmax's exponentials, a loss's logarithms
        a = _rand(r, *img) if name == "Exp" else np.abs(_rand(r, *img)) + 0.1
        fn = torch.exp if name == "Exp" else torch.log
        return _case(name, [a], lambda x: x.exp() if name == "Exp" else x.log(), [a], fn, r)
    if name == "Sqrt":  # a standard deviation per feature: the square root of variances
        a = np.abs(_rand(r, *img)) + 0.1
        return _case(name, [a], lambda x: x.sqrt(), [a], torch.sqrt, r)
    if name == "Abs":  # an L1 penalty on a feature map
        a = _rand(r, *img)
        return _case(name, [a], lambda x: x.abs(), [a], torch.abs, r)
    if name in ("Tanh", "Sigmoid"):  # an activation of a conv layer, a gate
        a = _rand(r, *img) * 2
        fn = torch.tanh if name == "Tanh" else torch.sigmoid
        return _case(name, [a], lambda x: x.tanh() if name == "Tanh" else x.sigmoid(), [a], fn, r)
    if name == "LogSoftmax":  # the logits of a batch
        a = _rand(r, s.b, s.classes) * 5
        return _case(name, [a], lambda x: x.logsoftmax(-1), [a], lambda x: nnf.log_softmax(x, -1), r)
    if name == "Softmax":  # the class probabilities of a batch, as a prediction reports them
        a = _rand(r, s.b, s.classes) * 5
        return _case(name, [a], lambda x: x.softmax(-1), [a], lambda x: nnf.softmax(x, -1), r)
    if name == "Linear":  # the first layer of the MLP
        x, w, bias = _rand(r, s.b, s.din), _rand(r, s.din, s.dout) * 0.05, _rand(r, s.dout)
        return _case(name, [x, w, bias], lambda x, w, b: x.linear(w, b),
                     [x, np.ascontiguousarray(w.T), bias], nnf.linear, r)
    if name == "Reshape":  # flatten an image batch
        a = _rand(r, s.b, s.side, s.side, 1)
        flat = (s.b, -1)
        return _case(name, [a], lambda x: x.reshape(*flat), [a], lambda x: x.reshape(flat), r)
    if name == "Permute":  # split 4 attention heads: (B, T, 4, d/4) -> (B, 4, T, d/4)
        a = _rand(r, s.b, s.t, 4, s.d // 4)
        heads = (0, 2, 1, 3)  # PyTorch's permute is a view: .contiguous() makes the copy Topgrad makes
        return _case(name, [a], lambda x: x.permute(*heads), [a], lambda x: x.permute(heads).contiguous(), r)
    if name == "Slice":  # a fused projection's third part, as v of (B, T, 3D) q-k-v features
        a = _rand(r, s.b, s.t, 3 * s.d)
        cut = np.s_[..., 2 * s.d:]  # PyTorch's slice is a view: .contiguous() makes Topgrad's copy
        return _case(name, [a], lambda x: x[cut], [a], lambda x: x[cut].contiguous(), r)
    if name == "Concat":  # a DenseNet-style join of two NHWC feature maps along channels
        a, b = _rand(r, *img), _rand(r, *img)
        return _case(name, [a, b], lambda x, y: topgrad.cat([x, y], axis=-1), [a, b],
                     lambda x, y: torch.cat([x, y], dim=-1), r)
    if name == "Conv2d":  # a 3x3 residual-block convolution
        x, w, bias = _rand(r, *img), _rand(r, 3, 3, s.c, s.c) * 0.1, _rand(r, s.c)
        return _case(name, [x, w, bias], lambda x, w, b: x.conv2d(w, b, stride=1, padding=1),
                     [_nchw(x), np.ascontiguousarray(w.transpose(3, 2, 0, 1)), bias],
                     lambda x, w, b: nnf.conv2d(x, w, b, stride=1, padding=1), r, nchw_out=True)
    if name == "MaxPool2d":  # a LeNet-style 2x2 pooling after a convolution (PyTorch's NCHW kernel)
        x = _rand(r, *img)
        return _case(name, [x], lambda x: x.maxpool2d(2), [_nchw(x)], lambda x: nnf.max_pool2d(x, 2), r,
                     nchw_out=True)
    if name == "BatchNorm":
        return _batchnorm(r, s)
    if name == "LayerNorm":
        x, g, bias = _rand(r, *seq), _rand(r, s.d), _rand(r, s.d)
        return _case(name, [x, g, bias], lambda x, g, b: x.layernorm(g, b, eps=1e-5), [x, g, bias],
                     lambda x, g, b: nnf.layer_norm(x, (x.shape[-1],), g, b, eps=1e-5), r)
    if name == "Attention":
        q, k, v = (_rand(r, *seq) for _ in range(3))
        return _case(name, [q, k, v], topgrad.attention, [q, k, v], nnf.scaled_dot_product_attention, r)
    raise KeyError(f"unknown op {name!r}; choose from {', '.join(OPS)}")


def _batchnorm(r: np.random.Generator, s: Dims) -> OpCase:
    """Training-mode BatchNorm over N, H, W with running statistics, as in the ResNet."""
    x, g, bias = _rand(r, s.b, s.hw, s.hw, s.c), _rand(r, s.c), _rand(r, s.c)
    tg_stats: dict[str, Any] = {"running_mean": Tensor.zeros(s.c), "running_var": Tensor.ones(s.c)}
    th_mean, th_var = torch.zeros(s.c), torch.ones(s.c)

    def tg_fn(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.batchnorm(g, b, training=True, momentum=0.1, eps=1e-5, **tg_stats)

    def th_fn(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return nnf.batch_norm(x, th_mean, th_var, g, b, training=True, momentum=0.1, eps=1e-5)

    return _case("BatchNorm", [x, g, bias], tg_fn, [_nchw(x), g, bias], th_fn, r, nchw_out=True)
