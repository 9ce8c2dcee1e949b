"""PyTorch mirrors of the benchmark models, written the way a PyTorch user would (NCHW, nn modules).

`build(name, arrays)` takes the Topgrad model's parameters by name (see `_models_topgrad`)
and copies them in: linear weights `(D, M)` become `nn.Linear.weight` `(M, D)`, HWIO kernels
become OIHW, and the linear layer after an NHWC flatten gets its rows reordered to NCHW
order, so both frameworks compute the same function. Inputs are NCHW `(B, 1, 28, 28)`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf
from _models_topgrad import CONV_STRIDES, TOKENS, deep_blocks
from torch import nn

Arrays = dict[str, np.ndarray]


def _copy(param: torch.Tensor, value: np.ndarray) -> None:
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def linear(a: Arrays, key: str, w: np.ndarray | None = None) -> nn.Linear:
    w = a[f"{key}.w"] if w is None else w
    layer = nn.Linear(w.shape[0], w.shape[1])
    _copy(layer.weight, w.T)
    _copy(layer.bias, a[f"{key}.b"])
    return layer


def conv(a: Arrays, key: str, stride: int, padding: int) -> nn.Conv2d:
    w = a[f"{key}.w"]  # (kh, kw, cin, cout)
    bias = f"{key}.b" in a
    layer = nn.Conv2d(w.shape[2], w.shape[3], w.shape[0], stride=stride, padding=padding, bias=bias)
    _copy(layer.weight, w.transpose(3, 2, 0, 1))
    if bias:
        _copy(layer.bias, a[f"{key}.b"])
    return layer


def batchnorm(a: Arrays, key: str) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(a[f"{key}.gamma"].shape[0], eps=1e-5, momentum=0.1)
    for name, src in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                      ("running_var", "running_var")):
        _copy(getattr(layer, name), a[f"{key}.{src}"])
    return layer


def layernorm(a: Arrays, key: str) -> nn.LayerNorm:
    layer = nn.LayerNorm(a[f"{key}.gamma"].shape[0], eps=1e-5)
    _copy(layer.weight, a[f"{key}.gamma"])
    _copy(layer.bias, a[f"{key}.beta"])
    return layer


def nhwc_rows_to_nchw(w: np.ndarray, h: int, wd: int, c: int) -> np.ndarray:
    """Reorder the rows of a `(h*w*c, M)` weight from NHWC flatten order to NCHW flatten order."""
    return w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)


class MLP(nn.Module):
    def __init__(self, a: Arrays) -> None:
        super().__init__()
        n = sum(1 for k in a if k.startswith("hidden.") and k.endswith(".w"))
        self.hidden = nn.ModuleList(linear(a, f"hidden.{i}") for i in range(n))
        self.head = linear(a, "head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.hidden:
            h = nnf.relu(layer(h))
        return self.head(h)


class ConvNet(nn.Module):
    def __init__(self, a: Arrays) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv(a, f"conv{i}", s, 1) for i, s in enumerate(CONV_STRIDES, start=1))
        c = a[f"conv{len(CONV_STRIDES)}.w"].shape[3]
        self.fc = linear(a, "fc", nhwc_rows_to_nchw(a["fc.w"], 7, 7, c))
        self.head = linear(a, "head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.convs:
            x = nnf.relu(layer(x))
        return self.head(nnf.relu(self.fc(x.flatten(1))))


class ResidualBlock(nn.Module):
    def __init__(self, a: Arrays, k: str, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv(a, f"{k}.conv1", stride, 1), batchnorm(a, f"{k}.bn1")
        self.conv2, self.bn2 = conv(a, f"{k}.conv2", 1, 1), batchnorm(a, f"{k}.bn2")
        self.project: nn.Module | None = None
        if f"{k}.project.w" in a:
            self.project = nn.Sequential(conv(a, f"{k}.project", stride, 0), batchnorm(a, f"{k}.project_bn"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nnf.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return nnf.relu(h + (x if self.project is None else self.project(x)))


class DeepConvNet(nn.Module):
    def __init__(self, a: Arrays) -> None:
        super().__init__()
        self.stem, self.stem_bn = conv(a, "stem", 1, 1), batchnorm(a, "stem_bn")
        strides = [s for _, _, s in deep_blocks()]
        self.blocks = nn.ModuleList(ResidualBlock(a, f"blocks.{i}", s) for i, s in enumerate(strides))
        self.head = linear(a, "head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nnf.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean((2, 3)))


class AttentionBlock(nn.Module):
    def __init__(self, a: Arrays, k: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = layernorm(a, f"{k}.norm1"), layernorm(a, f"{k}.norm2")
        self.q, self.k, self.v, self.out = (linear(a, f"{k}.{s}") for s in ("q", "k", "v", "out"))
        self.mlp_in, self.mlp_out = linear(a, f"{k}.mlp_in"), linear(a, f"{k}.mlp_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.out(nnf.scaled_dot_product_attention(self.q(h), self.k(h), self.v(h)))
        return x + self.mlp_out(nnf.relu(self.mlp_in(self.norm2(x))))


class AttentionNet(nn.Module):
    def __init__(self, a: Arrays) -> None:
        super().__init__()
        depth = len({k.split(".")[1] for k in a if k.startswith("blocks.")})
        self.embed = linear(a, "embed")
        self.position = nn.Parameter(torch.from_numpy(a["position"].copy()))
        self.blocks = nn.ModuleList(AttentionBlock(a, f"blocks.{i}") for i in range(depth))
        self.norm, self.head = layernorm(a, "norm"), linear(a, "head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], TOKENS, -1)) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(1))


_CLASSES = {"mlp": MLP, "conv": ConvNet, "deepconv": DeepConvNet, "attention": AttentionNet}


def build(name: str, arrays: Arrays) -> nn.Module:
    """The PyTorch mirror of model `name`, holding the weights in `arrays`."""
    return _CLASSES[name](arrays)
