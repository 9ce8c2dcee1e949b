"""The four benchmark models in Topgrad: `topgrad_examples.models` when installed, else a copy here.

The copy is written as plain functions of a parameter dict whose names are the examples'
`Module.state()` names (`hidden.0.w`, `blocks.1.bn2.gamma`, ...), with the same
architectures, so the benchmark runs where the examples are not installed, and the
PyTorch mirrors in `_models_torch.py` read one naming for both. Images are NHWC
`(B, 28, 28, 1)`; models return logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import topgrad
from topgrad import Tensor

MODELS = ("mlp", "conv", "deepconv", "attention")
CLASSES = 10
MLP_HIDDEN = (512, 512)
CONV_CHANNELS, CONV_STRIDES, CONV_FC = (32, 64, 64), (1, 2, 2), 128
DEEP_WIDTH, DEEP_STRIDES = 16, (1, 2, 2)
ATTN_D, ATTN_HIDDEN, ATTN_DEPTH, TOKENS = 64, 128, 2, 28

Arrays = dict[str, np.ndarray]


@dataclass
class TopgradModel:
    """Trainable parameters and buffers by name, and `forward(x)` in training mode."""

    name: str
    params: dict[str, Tensor]
    forward: Callable[[Tensor], Tensor]
    buffers: dict[str, Tensor] = field(default_factory=dict)
    source: str = "benchmarks/_models_topgrad.py"

    def arrays(self) -> Arrays:
        """Parameters and buffers as numpy copies (for the PyTorch mirror)."""
        return {k: t.numpy() for k, t in {**self.params, **self.buffers}.items()}


def _he(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _linear(a: Arrays, key: str, rng: np.random.Generator, d_in: int, d_out: int) -> None:
    a[f"{key}.w"], a[f"{key}.b"] = _he(rng, d_in, d_out), np.zeros(d_out, np.float32)


def _norm(a: Arrays, key: str, d: int, running: bool = False) -> None:
    a[f"{key}.gamma"], a[f"{key}.beta"] = np.ones(d, np.float32), np.zeros(d, np.float32)
    if running:
        a[f"{key}.running_mean"], a[f"{key}.running_var"] = np.zeros(d, np.float32), np.ones(d, np.float32)


def is_buffer(key: str) -> bool:
    return key.endswith((".running_mean", ".running_var"))


# ---- the architectures (same as topgrad_examples.models) ------------------------------------
def _mlp_arrays(rng: np.random.Generator) -> Arrays:
    a: Arrays = {}
    sizes = (784, *MLP_HIDDEN)
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        _linear(a, f"hidden.{i}", rng, d_in, d_out)
    _linear(a, "head", rng, sizes[-1], CLASSES)
    return a


def _mlp(p: dict[str, Tensor], buf: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        h = x.reshape(x.shape[0], -1)
        for i in range(len(MLP_HIDDEN)):
            h = h.linear(p[f"hidden.{i}.w"], p[f"hidden.{i}.b"]).relu()
        return h.linear(p["head.w"], p["head.b"])

    return forward


def _conv_arrays(rng: np.random.Generator) -> Arrays:
    a: Arrays = {}
    for i, (c_in, c_out) in enumerate(itertools.pairwise((1, *CONV_CHANNELS)), start=1):
        a[f"conv{i}.w"], a[f"conv{i}.b"] = _he(rng, 3, 3, c_in, c_out), np.zeros(c_out, np.float32)
    _linear(a, "fc", rng, 7 * 7 * CONV_CHANNELS[-1], CONV_FC)
    _linear(a, "head", rng, CONV_FC, CLASSES)
    return a


def _conv(p: dict[str, Tensor], buf: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        h = x
        for i, stride in enumerate(CONV_STRIDES, start=1):
            h = h.conv2d(p[f"conv{i}.w"], p[f"conv{i}.b"], stride=stride, padding=1).relu()
        h = h.flatten(1).linear(p["fc.w"], p["fc.b"]).relu()
        return h.linear(p["head.w"], p["head.b"])

    return forward


def deep_blocks() -> list[tuple[int, int, int]]:
    """(c_in, c_out, stride) of each residual block."""
    w = DEEP_WIDTH
    chans = (w, w, 2 * w, 4 * w)
    return [(chans[i], chans[i + 1], s) for i, s in enumerate(DEEP_STRIDES)]


def _deepconv_arrays(rng: np.random.Generator) -> Arrays:
    a: Arrays = {"stem.w": _he(rng, 3, 3, 1, DEEP_WIDTH)}
    _norm(a, "stem_bn", DEEP_WIDTH, running=True)
    for i, (c_in, c_out, stride) in enumerate(deep_blocks()):
        k = f"blocks.{i}"
        a[f"{k}.conv1.w"] = _he(rng, 3, 3, c_in, c_out)
        _norm(a, f"{k}.bn1", c_out, running=True)
        a[f"{k}.conv2.w"] = _he(rng, 3, 3, c_out, c_out)
        _norm(a, f"{k}.bn2", c_out, running=True)
        if stride != 1 or c_in != c_out:
            a[f"{k}.project.w"] = _he(rng, 1, 1, c_in, c_out)
            _norm(a, f"{k}.project_bn", c_out, running=True)
    _linear(a, "head", rng, 4 * DEEP_WIDTH, CLASSES)
    return a


def _deepconv(p: dict[str, Tensor], buf: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    def bn(h: Tensor, k: str) -> Tensor:
        return h.batchnorm(p[f"{k}.gamma"], p[f"{k}.beta"], running_mean=buf[f"{k}.running_mean"],
                           running_var=buf[f"{k}.running_var"], training=True, momentum=0.1)

    def block(x: Tensor, k: str, stride: int) -> Tensor:
        h = bn(x.conv2d(p[f"{k}.conv1.w"], None, stride=stride, padding=1), f"{k}.bn1").relu()
        h = bn(h.conv2d(p[f"{k}.conv2.w"], None, stride=1, padding=1), f"{k}.bn2")
        if f"{k}.project.w" in p:
            x = bn(x.conv2d(p[f"{k}.project.w"], None, stride=stride, padding=0), f"{k}.project_bn")
        return (h + x).relu()

    def forward(x: Tensor) -> Tensor:
        h = bn(x.conv2d(p["stem.w"], None, stride=1, padding=1), "stem_bn").relu()
        for i, (_, _, stride) in enumerate(deep_blocks()):
            h = block(h, f"blocks.{i}", stride)
        return h.mean(axis=(1, 2)).linear(p["head.w"], p["head.b"])

    return forward


def _attention_arrays(rng: np.random.Generator) -> Arrays:
    d = ATTN_D
    a: Arrays = {}
    _linear(a, "embed", rng, 28, d)
    a["position"] = (rng.standard_normal((TOKENS, d)) * 0.1).astype(np.float32)
    for i in range(ATTN_DEPTH):
        k = f"blocks.{i}"
        _norm(a, f"{k}.norm1", d)
        for s in ("q", "k", "v", "out"):
            _linear(a, f"{k}.{s}", rng, d, d)
        _norm(a, f"{k}.norm2", d)
        _linear(a, f"{k}.mlp_in", rng, d, ATTN_HIDDEN)
        _linear(a, f"{k}.mlp_out", rng, ATTN_HIDDEN, d)
    _norm(a, "norm", d)
    _linear(a, "head", rng, d, CLASSES)
    return a


def _attention(p: dict[str, Tensor], buf: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    def lin(x: Tensor, k: str) -> Tensor:
        return x.linear(p[f"{k}.w"], p[f"{k}.b"])

    def ln(x: Tensor, k: str) -> Tensor:
        return x.layernorm(p[f"{k}.gamma"], p[f"{k}.beta"])

    def block(x: Tensor, k: str) -> Tensor:
        h = ln(x, f"{k}.norm1")
        x = x + lin(topgrad.attention(lin(h, f"{k}.q"), lin(h, f"{k}.k"), lin(h, f"{k}.v")), f"{k}.out")
        return x + lin(lin(ln(x, f"{k}.norm2"), f"{k}.mlp_in").relu(), f"{k}.mlp_out")

    def forward(x: Tensor) -> Tensor:
        h = lin(x.reshape(x.shape[0], TOKENS, 28), "embed") + p["position"]
        for i in range(ATTN_DEPTH):
            h = block(h, f"blocks.{i}")
        return lin(ln(h, "norm").mean(axis=1), "head")

    return forward


_DEFS = {"mlp": (_mlp_arrays, _mlp), "conv": (_conv_arrays, _conv),
         "deepconv": (_deepconv_arrays, _deepconv), "attention": (_attention_arrays, _attention)}


def build(name: str, seed: int = 0, arrays: Arrays | None = None) -> TopgradModel:
    """The benchmark's own Topgrad model `name`, from `arrays` or a seeded initialisation."""
    if name not in _DEFS:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    make_arrays, make_forward = _DEFS[name]
    a = arrays if arrays is not None else make_arrays(np.random.default_rng(seed))
    params = {k: Tensor(v) for k, v in a.items() if not is_buffer(k)}
    buffers = {k: Tensor(v) for k, v in a.items() if is_buffer(k)}
    return TopgradModel(name, params, make_forward(params, buffers), buffers)


def from_examples(name: str, seed: int = 0) -> TopgradModel | None:
    """The model of `topgrad_examples.models`, or None when that package is not installed."""
    try:
        from topgrad_examples import models
    except ImportError:
        return None
    module = models.build(name, seed=seed)
    state = module.state()
    params = {k: t for k, t in state.items() if not is_buffer(k)}
    buffers = {k: t for k, t in state.items() if is_buffer(k)}
    ids = {id(t) for t in module.parameters()}
    if ids != {id(t) for t in params.values()}:
        return None  # the buffer naming changed: the mirror cannot be trusted

    def forward(x: Tensor) -> Tensor:
        return module(x, training=True)

    return TopgradModel(name, params, forward, buffers, source=f"topgrad_examples.models.{name}")
