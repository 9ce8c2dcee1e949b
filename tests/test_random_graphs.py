"""Random compositions of ops against PyTorch: small graphs, forward and every leaf's gradient.

`test_ops.py` checks each op alone; a fault can also sit where ops meet: a gradient summed over
a node that feeds several ops, a broadcast gradient reduced back, a view's gradient written into
its parent's shape. Each draw here makes 2-3 leaves of mutually broadcastable shapes (some of
them constants) and 4-10 ops, each reading any earlier node; the nodes nothing reads are weighed
by fixed random arrays and summed to a scalar loss. `check_against_torch` then compares the loss
and every trainable leaf's gradient with PyTorch's float64 answer (float32 PyTorch as yardstick),
and each BatchNorm's running statistics after it. Where the backend keeps float64 (numpy), some
leaves are float64: mixed operands then meet in every op, under the README's dtype rules.

Besides elementwise ops, reductions, views, cat, matmul and the norms, the graph draws Conv2d,
MaxPool2d and BatchNorm (training mode) on nodes viewed as NHWC images or rows, and Attention
with T and S apart, causal or not; PyTorch's side permutes images to NCHW and weights to OIHW.

The graph is drawn with PyTorch's values at hand, to keep every op on ground where float32 and
float64 agree to the tolerance: log, sqrt and divisors see `x * x + 1.0` unless x is already
away from 0, exp sees no input above 4, nodes beyond 100 are dropped, attention sees no row of
scores spanning more than 20 (a one-hot softmax), and relu, abs and max
are applied only where no element sits near a kink (a near-tie can pick another branch in float32),
max pooling only where no window's maximum nears its runner-up, and BatchNorm only on channels of
3+ rows and some spread.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import (
    Sizes,
    assert_as_accurate,
    check_against_torch,
    nchw_to_nhwc,
    nhwc_to_nchw,
    rand,
    torch_attention,
    torch_conv2d,
)
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor

seeds = st.integers(0, 2**16)
NUMBERS = st.sampled_from([0.5, -1.5, 2.0, 3])  # Python numbers on either side of an operator
LARGEST = 100.0  # a node beyond this is dropped: float32 round-off grows with the values
KINK = 1e-3  # relu, abs and max need their inputs this far (times the scale) from a kink
SATURATED = 20.0  # attention only where a row's scores span less: past it softmax is one-hot in float32,
# and its gradient float32 noise that chains of ops amplify (PyTorch's own error then varies 10x by seed)

Pair = tuple[torch.Tensor, torch.Tensor]  # a node's PyTorch value in float64 and in float32


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


@dataclass(frozen=True)
class Step:
    """One node: `top` on Topgrad Tensors, `ref` on torch tensors (often the same function),
    applied to the earlier nodes numbered `args` (the leaves first)."""

    text: str
    args: tuple[int | None, ...]  # None: the op's optional argument left out (a norm's gamma)
    top: Callable[..., Any]
    ref: Callable[..., Any] | None = None
    stats: RunningStats | None = None  # a BatchNorm step's running statistics, checked apart

    def apply(self, nodes: list[Any], torch_side: bool) -> Any:
        fn = self.ref if torch_side and self.ref is not None else self.top
        return fn(*(None if i is None else nodes[i] for i in self.args))


class RunningStats:
    """One BatchNorm step's running mean and variance. The loss never reads them, so they are
    compared apart: every run of the graph (PyTorch in float64 and in float32, then Topgrad) starts
    them from the same values, and what each run left in them is compared after the check."""

    def __init__(self, channels: int, seed: int) -> None:
        self.mean = rand((channels,), seed)
        self.var = 1.0 + rand((channels,), seed + 1) ** 2  # a variance: positive
        self.left: dict[Any, tuple[Any, Any]] = {}  # "topgrad", torch.float64, torch.float32: (mean, var)

    def for_topgrad(self) -> dict[str, Tensor]:
        mean, var = (Tensor(a.copy(), requires_grad=False) for a in (self.mean, self.var))
        self.left["topgrad"] = mean, var
        return {"running_mean": mean, "running_var": var}

    def for_torch(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        self.left[dtype] = torch.tensor(self.mean, dtype=dtype), torch.tensor(self.var, dtype=dtype)
        return self.left[dtype]

    def check(self, what: str) -> None:
        for k, name in enumerate(("mean", "var")):
            exact, single = self.left[torch.float64][k], self.left[torch.float32][k]
            assert_as_accurate(self.left["topgrad"][k], exact, single, f"running {name} of {what}")


# ---- where an op is safe: decided on PyTorch's float64 and float32 values -----------------------
def _margin(x: torch.Tensor) -> float:
    return KINK * (1.0 + float(x.abs().max()))


def _off_kinks(x: Pair) -> bool:
    """No element near 0, where relu and abs bend, unless it is exactly 0 in both dtypes (a relu's
    output, x - x): float32 round-off cannot move it, and both frameworks give it gradient 0."""
    exact, single = x
    return bool(((exact.abs() > _margin(exact)) | ((exact == 0) & (single == 0))).all())


def _top_gap(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Over each group that max(dims) reduces, the largest value minus the second largest."""
    rest = [a for a in range(x.ndim) if a not in dims]
    flat = x.permute([*rest, *dims]).reshape(*(x.shape[a] for a in rest), -1)
    if flat.shape[-1] < 2:
        return torch.full(flat.shape[:-1], torch.inf)
    top2 = flat.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _no_near_ties(x: Pair, dims: tuple[int, ...]) -> bool:
    """Each group's maximum clear of the runner-up, or tied with it exactly in both dtypes
    (then both frameworks share the gradient between the tied elements, as torch.amax)."""
    gap, gap32 = _top_gap(x[0], dims), _top_gap(x[1], dims)
    return bool(((gap > _margin(x[0])) | ((gap == 0) & (gap32 == 0))).all())


def _itself(t: Any) -> Any:
    return t


def _away_from_zero(x: torch.Tensor, low: float, sign: bool) -> tuple[str, Callable[[Any], Any]]:
    """For log and sqrt (`sign` False: x >= low) or a divisor (`sign` True: |x| >= low): the node
    itself where every element is that far from 0, else x * x + 1.0, which always is."""
    if float((x.abs() if sign else x).min()) >= low:
        return "{0}", _itself
    return "({0} * {0} + 1)", lambda t: t * t + 1.0


# ---- the ops: each draws its inputs among the nodes so far and returns a Step, or None ----------
def _pick(data: st.DataObject, nodes: list[Pair], fits: Callable[[Pair], bool] = lambda x: True,
          ) -> int | None:
    """An earlier node that `fits`, any of them (fan-out), shrinking toward the latest."""
    ok = [i for i, x in enumerate(nodes) if fits(x)]
    return ok[-1 - data.draw(st.integers(0, len(ok) - 1), label="input")] if ok else None


def draw_arithmetic(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """+ - * / between two nodes that broadcast, or a node and a Python number on either side."""
    i = _pick(data, nodes)
    op = data.draw(st.sampled_from(["+", "-", "*", "/"]), label="operator")
    fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]
    if data.draw(st.booleans(), label="number operand"):
        c = data.draw(NUMBERS, label="number")
        if not data.draw(st.booleans(), label="number first"):
            return Step(f"n{i} {op} {c}", (i,), lambda x: fn(x, c))
        text, safe = _away_from_zero(nodes[i][0], 0.5, sign=True) if op == "/" else ("{0}", _itself)
        return Step(f"{c} {op} {text.format(f'n{i}')}", (i,), lambda x: fn(c, safe(x)))
    shape = nodes[i][0].shape
    j = _pick(data, nodes, lambda y: _broadcasts(shape, y[0].shape))
    assert j is not None  # node i itself broadcasts with its shape
    text, safe = _away_from_zero(nodes[j][0], 0.5, sign=True) if op == "/" else ("{0}", _itself)
    return Step(f"n{i} {op} {text.format(f'n{j}')}", (i, j), lambda x, y: fn(x, safe(y)))


def _broadcasts(a: torch.Size, b: torch.Size) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def draw_unary(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """An elementwise op, on inputs where it is smooth and float32 stays close to float64."""
    name = data.draw(st.sampled_from(["relu", "abs", "exp", "tanh", "sigmoid", "log", "sqrt"]), label="unary")
    fits = {"relu": _off_kinks, "abs": _off_kinks, "exp": lambda x: float(x[0].max()) <= 4.0}
    i = _pick(data, nodes, fits.get(name, lambda x: True))
    if i is None:
        return None
    text, safe = "{0}", _itself
    if name in ("log", "sqrt"):
        text, safe = _away_from_zero(nodes[i][0], 0.1, sign=False)
    return Step(f"{name}({text.format(f'n{i}')})", (i,), lambda x: getattr(safe(x), name)())


def draw_reduction(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """sum, mean or max over every axis, one (maybe negative) or several, keepdims or not."""
    name = data.draw(st.sampled_from(["sum", "mean", "max"]), label="reduction")
    i = _pick(data, nodes)
    ndim = nodes[i][0].ndim
    axis = data.draw(st.none() | st.integers(-ndim, ndim - 1) if ndim else st.none(), label="axis")
    if ndim > 1 and axis is not None and data.draw(st.booleans(), label="several axes"):
        axis = tuple(data.draw(st.lists(st.integers(0, ndim - 1), min_size=2, unique=True), label="axes"))
    keepdims = data.draw(st.booleans(), label="keepdims")
    dims = tuple(range(ndim)) if axis is None else tuple(a % ndim for a in np.atleast_1d(axis).tolist())
    if name == "max" and not _no_near_ties(nodes[i], dims):
        return None
    ref = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name]
    return Step(f"n{i}.{name}(axis={axis}, keepdims={keepdims})", (i,),
                lambda x: getattr(x, name)(axis=axis, keepdims=keepdims),
                lambda x: ref(x, dim=dims, keepdim=keepdims))


def draw_layout(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """reshape, permute, .T or basic indexing (ints, slices with a step, None, ...)."""
    name = data.draw(st.sampled_from(["reshape", "permute", "index"]), label="layout")
    i = _pick(data, nodes, lambda x: name == "reshape" or x[0].ndim > 0)
    if i is None:
        return None
    shape = tuple(nodes[i][0].shape)
    if name == "reshape":
        new = data.draw(st.sampled_from([(-1,), shape[::-1], (1, *shape), tuple(s for s in shape if s != 1),
                                         (*shape[:1], -1)]), label="new shape")
        return Step(f"n{i}.reshape{new}", (i,), lambda x: x.reshape(*new), lambda x: x.reshape(new))
    if name == "permute":
        if len(shape) == 2 and data.draw(st.booleans(), label=".T"):
            return Step(f"n{i}.T", (i,), lambda x: x.T)
        axes = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
        return Step(f"n{i}.permute{axes}", (i,), lambda x: x.permute(*axes))
    index = data.draw(_indices(shape), label="index")
    return Step(f"n{i}[{index}]", (i,), lambda x: x[index])


@st.composite
def _indices(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A non-empty basic index of the leading axes, or (after ...) of the trailing ones."""
    n = draw(st.integers(1, len(shape)))
    trailing = draw(st.booleans())
    parts: list[Any] = []
    for side in shape[-n:] if trailing else shape[:n]:
        start = draw(st.integers(0, side - 1))
        stop = draw(st.integers(start + 1, side))
        parts.append(draw(st.sampled_from([start - side, start, slice(start, None, 2), slice(start, stop)])))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return (..., *parts) if trailing else tuple(parts)


def draw_join(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """topgrad.cat of 2-3 nodes (the same one more than once, as often) along one axis."""
    i = _pick(data, nodes, lambda x: x[0].ndim > 0)
    if i is None:
        return None
    shape = nodes[i][0].shape
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")

    def fits(y: Pair) -> bool:
        other = y[0].shape
        return len(other) == len(shape) and all(a == b for k, (a, b) in enumerate(zip(other, shape))
                                                if k != axis % len(shape))
    args = (i, *(_pick(data, nodes, fits) for _ in range(data.draw(st.integers(1, 2), label="more"))))
    return Step(f"cat({args}, axis={axis})", args, lambda *xs: topgrad.cat(list(xs), axis=axis),
                lambda *xs: torch.cat(xs, dim=axis))


def draw_linear(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """x @ w, or x.linear(w, b) with b a row of w: w is a 2-D node with D rows, or a node of a
    multiple of D elements reshaped to (D, -1) (x @ x.reshape(D, -1) included)."""
    i = _pick(data, nodes, lambda x: x[0].ndim > 0)
    if i is None:
        return None
    d = nodes[i][0].shape[-1]
    j = _pick(data, nodes, lambda y: y[0].numel() % d == 0)
    assert j is not None  # x itself has a multiple of D elements
    if nodes[j][0].ndim == 2 and nodes[j][0].shape[0] == d:
        text, w = f"n{j}", _itself
    else:
        text, w = f"n{j}.reshape({d}, -1)", lambda t: t.reshape(d, -1)
    if data.draw(st.booleans(), label="bias"):
        return Step(f"n{i}.linear({text}, {text}[0])", (i, j),
                    lambda x, y: x.linear(w(y), w(y)[0]), lambda x, y: x @ w(y) + w(y)[0])
    return Step(f"n{i} @ {text}", (i, j), lambda x, y: x @ w(y))


def draw_normalization(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """logsoftmax or softmax along any axis, or layernorm of the last axis (3+ features of some
    spread: with 2 the gradient is pure cancellation) with gamma and beta nodes or None."""
    name = data.draw(st.sampled_from(["logsoftmax", "softmax", "layernorm"]), label="normalization")
    if name != "layernorm":
        i = _pick(data, nodes, lambda x: x[0].ndim > 0)
        if i is None:
            return None
        axis = data.draw(st.integers(-nodes[i][0].ndim, nodes[i][0].ndim - 1), label="axis")
        ref = {"logsoftmax": torch.log_softmax, "softmax": torch.softmax}[name]
        return Step(f"n{i}.{name}({axis})", (i,), lambda x: getattr(x, name)(axis), lambda x: ref(x, axis))
    i = _pick(data, nodes, _spread_rows)
    if i is None:
        return None
    c = nodes[i][0].shape[-1]
    g, b = (_pick(data, nodes, lambda y: y[0].shape == (c,)) if data.draw(st.booleans(), label=what) else None
            for what in ("gamma", "beta"))
    return Step(f"n{i}.layernorm({_name(g)}, {_name(b)})", (i, g, b),
                lambda x, g, b: x.layernorm(g, b), lambda x, g, b: F.layer_norm(x, (c,), g, b))


def _name(i: int | None) -> str:
    return "None" if i is None else f"n{i}"


def _spread_rows(x: Pair) -> bool:
    """3+ features whose variance is over 0.01 in every row: LayerNorm is well conditioned there."""
    return x[0].ndim > 0 and x[0].shape[-1] >= 3 and bool((x[0].var(-1) > 0.01).all())


def _reshaped(i: int, shape: tuple[int, ...], new: tuple[int, ...]) -> tuple[str, Callable[[Any], Any]]:
    """Node i as `new` (the same elements): itself when it has that shape already."""
    if shape == new:
        return f"n{i}", _itself
    return f"n{i}.reshape{new}", lambda t: t.reshape(*new)


def _images(data: st.DataObject, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 2-D to 4-D node's shape as NHWC images: a 4-D node as it is, a 3-D one as one image or as
    images of one channel, a 2-D one as one image of one channel."""
    if len(shape) == 2:
        return (1, *shape, 1)
    if len(shape) == 4:
        return shape
    return (1, *shape) if data.draw(st.booleans(), label="one image") else (*shape, 1)


def draw_convolution(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """x.conv2d(w, b) of a 2-D to 4-D node as NHWC images (`_images`), stride 1 or 2, padding 0 or 1;
    w is a node of a multiple of Cin elements (x itself included) as (kh, kw, Cin, Cout), with a
    1-3 by 1-3 kernel that divides it, b its first output row w[0, 0, 0] or None. PyTorch's side
    permutes to NCHW/OIHW (`torch_conv2d`)."""
    i = _pick(data, nodes, lambda x: x[0].ndim in (2, 3, 4))
    if i is None:
        return None
    shape = _images(data, tuple(nodes[i][0].shape))
    _, h, w, cin = shape
    stride = data.draw(st.integers(1, 2), label="stride")
    padding = data.draw(st.integers(0, 1), label="padding")
    j = _pick(data, nodes, lambda y: y[0].numel() % cin == 0)
    assert j is not None  # x itself has a multiple of Cin elements
    taps = nodes[j][0].numel() // cin  # kh * kw * Cout
    sides = [range(1, min(3, side + 2 * padding) + 1) for side in (h, w)]
    kh, kw = data.draw(st.sampled_from([(a, b) for a in sides[0] for b in sides[1] if taps % (a * b) == 0]),
                       label="kernel")
    x_text, image = _reshaped(i, tuple(nodes[i][0].shape), shape)
    w_text, weight = _reshaped(j, tuple(nodes[j][0].shape), (kh, kw, cin, taps // (kh * kw)))
    bias = data.draw(st.booleans(), label="bias")

    def b(t: Any) -> Any:
        return weight(t)[0, 0, 0] if bias else None
    return Step(f"{x_text}.conv2d({w_text}, {f'{w_text}[0, 0, 0]' if bias else None}, stride={stride}, "
                f"padding={padding})", (i, j),
                lambda x, y: image(x).conv2d(weight(y), b(y), stride=stride, padding=padding),
                lambda x, y: torch_conv2d(image(x), weight(y), b(y), stride, padding))


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return v if isinstance(v, tuple) else (v, v)


def _window_gaps(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int]) -> torch.Tensor:
    """Over each window that max_pool2d of NHWC x takes (padded with -inf), the largest value
    minus the second largest: inf for a window of one element."""
    (kh, kw), (ph, pw) = kernel, padding
    padded = F.pad(nhwc_to_nchw(x), (pw, pw, ph, ph), value=-torch.inf)
    windows = F.unfold(padded, kernel, stride=stride).reshape(x.shape[0], x.shape[3], kh * kw, -1)
    if kh * kw < 2:
        return torch.full(windows.shape[-1:], torch.inf)
    top2 = windows.topk(2, dim=2).values
    return top2[:, :, 0] - top2[:, :, 1]


def _clear_windows(x: Pair, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int]) -> bool:
    """Each window's maximum clear of its runner-up, or tied with it exactly in both dtypes (then
    both frameworks give the gradient to the first), as `_no_near_ties` for max."""
    gap, gap32 = (_window_gaps(v, kernel, stride, padding) for v in x)
    return bool(((gap > _margin(x[0])) | ((gap == 0) & (gap32 == 0))).all())


def draw_pooling(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """x.maxpool2d of a 2-D to 4-D node as NHWC images (`_images`): a 1-3 by 1-3 window (an int when square),
    stride the window's, 1 or 2, padding up to half the window; only where no window's maximum sits
    near a tie (float32 could give the gradient to another element)."""
    i = _pick(data, nodes, lambda x: x[0].ndim in (2, 3, 4))
    if i is None:
        return None
    shape = _images(data, tuple(nodes[i][0].shape))
    kh, kw = (data.draw(st.integers(1, min(3, side)), label="window") for side in shape[1:3])
    kernel = kh if kh == kw else (kh, kw)
    stride = data.draw(st.sampled_from([None, 1, 2]), label="stride")
    ph, pw = (data.draw(st.integers(0, k // 2), label="padding") for k in (kh, kw))
    padding = ph if ph == pw else (ph, pw)
    text, image = _reshaped(i, tuple(nodes[i][0].shape), shape)
    images = (image(nodes[i][0]), image(nodes[i][1]))
    if not _clear_windows(images, (kh, kw), _pair(kernel if stride is None else stride), (ph, pw)):
        return None
    return Step(f"{text}.maxpool2d({kernel}, {stride}, {padding})", (i,),
                lambda x: image(x).maxpool2d(kernel, stride, padding),
                lambda x: nchw_to_nhwc(F.max_pool2d(nhwc_to_nchw(image(x)), kernel, stride, padding)))


def _rows(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A node's shape as BatchNorm's input: a 1-D node as (N, 1), one channel; any other as it is."""
    return (*shape, 1) if len(shape) == 1 else shape


def _spread_channels(x: Pair) -> bool:
    """1+ axes, 3+ rows per channel (the last axis of `_rows`) and a variance over 0.01 in every
    channel: BatchNorm is well conditioned there (with 2 rows the gradient is pure cancellation)."""
    v = x[0].reshape(_rows(tuple(x[0].shape)))
    if v.ndim < 2 or v.numel() < 3 * v.shape[-1]:
        return False
    return bool((v.reshape(-1, v.shape[-1]).var(0) > 0.01).all())


def draw_batchnorm(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """x.batchnorm(gamma, beta) in training mode over every axis but the last (`_rows`), gamma and
    beta nodes or None, momentum 0.1 or 0.5, with running statistics (`RunningStats`) or none."""
    i = _pick(data, nodes, _spread_channels)
    if i is None:
        return None
    shape = _rows(tuple(nodes[i][0].shape))
    text, rows = _reshaped(i, tuple(nodes[i][0].shape), shape)
    c = shape[-1]
    g, b = (_pick(data, nodes, lambda y: y[0].shape == (c,)) if data.draw(st.booleans(), label=what) else None
            for what in ("gamma", "beta"))
    momentum = data.draw(st.sampled_from([0.1, 0.5]), label="momentum")
    stats = RunningStats(c, len(nodes)) if data.draw(st.booleans(), label="running statistics") else None

    def top(x: Tensor, g: Tensor | None, b: Tensor | None) -> Tensor:
        return rows(x).batchnorm(g, b, momentum=momentum, **(stats.for_topgrad() if stats else {}))

    def ref(x: torch.Tensor, g: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
        mean, var = stats.for_torch(x.dtype) if stats else (None, None)
        y = F.batch_norm(rows(x).movedim(-1, 1), mean, var, weight=g, bias=b, training=True,  # channels 2nd
                         momentum=momentum)
        return y.movedim(1, -1)
    with_stats = ", running_mean=..., running_var=..." if stats else ""
    return Step(f"{text}.batchnorm({_name(g)}, {_name(b)}, momentum={momentum}{with_stats})", (i, g, b),
                top, ref, stats)


def draw_attention(data: st.DataObject, nodes: list[Pair]) -> Step | None:
    """topgrad.attention(q, k, v, causal) with q a 3-D node (B, T, D) or a 2-D one as (1, T, D),
    k a node of a multiple of B*D elements as (B, S, D) and v one of a multiple of B*S as (B, S, Dv):
    S often differs from T (a causal mask is then top-left aligned, as torch's is_causal)."""
    i = _pick(data, nodes, lambda x: x[0].ndim in (2, 3))
    if i is None:
        return None
    q_shape = tuple(nodes[i][0].shape)
    bq, t, d = q_shape if len(q_shape) == 3 else (1, *q_shape)
    j = _pick(data, nodes, lambda y: y[0].numel() % (bq * d) == 0)
    assert j is not None  # q itself has B*T*D elements
    s = nodes[j][0].numel() // (bq * d)
    m = _pick(data, nodes, lambda y: y[0].numel() % (bq * s) == 0)
    if m is None:
        return None
    (q_text, q), (k_text, k), (v_text, v) = (
        _reshaped(n, tuple(nodes[n][0].shape), new)
        for n, new in ((i, (bq, t, d)), (j, (bq, s, d)), (m, (bq, s, nodes[m][0].numel() // (bq * s)))))
    scores = q(nodes[i][0]) @ k(nodes[j][0]).transpose(-1, -2) / math.sqrt(d) if d else None
    if scores is not None and scores.numel() and float((scores.amax(-1) - scores.amin(-1)).max()) > SATURATED:
        return None
    causal = data.draw(st.booleans(), label="causal")
    return Step(f"attention({q_text}, {k_text}, {v_text}, causal={causal})", (i, j, m),
                lambda x, y, z: topgrad.attention(q(x), k(y), v(z), causal=causal),
                lambda x, y, z: torch_attention(q(x), k(y), v(z), causal))


DRAWERS = [draw_arithmetic, draw_unary, draw_reduction, draw_layout, draw_join, draw_linear,
           draw_normalization, draw_convolution, draw_pooling, draw_batchnorm, draw_attention]


# ---- the graph and the test ----------------------------------------------------------------------
def draw_graph(data: st.DataObject, leaves: list[np.ndarray], seed: int) -> list[Step]:
    """4-10 op steps on the leaves (rarely fewer: a draw with no fitting input is skipped), then
    one step summing each unread node times a fixed random array of its shape: a scalar loss
    every node reaches."""
    nodes = [(torch.tensor(a, dtype=torch.float64), torch.tensor(a)) for a in leaves]
    steps: list[Step] = []
    wanted = data.draw(st.integers(4, 10), label="ops")
    for _ in range(4 * wanted):  # a draw that fits nowhere, or lands on a bad value, is skipped
        if len(steps) == wanted:
            break
        step = data.draw(st.sampled_from(DRAWERS), label="op")(data, nodes)
        if step is None:
            continue
        value = (step.apply([x for x, _ in nodes], True), step.apply([x for _, x in nodes], True))
        if value[0].numel() and value[0].isfinite().all() and float(value[0].abs().max()) <= LARGEST:
            steps.append(step)
            nodes.append(value)
    read = {i for step in steps for i in step.args if i is not None}
    sinks = tuple(i for i in range(len(nodes)) if i not in read)
    weights = [rand(tuple(nodes[i][0].shape), seed + 1000 + i) for i in sinks]

    def loss(*xs: Any, constant: Callable[[np.ndarray, Any], Any]) -> Any:
        return functools.reduce(operator.add, ((x * constant(w, x)).sum() for x, w in zip(xs, weights)))
    steps.append(Step(f"loss of {sinks}", sinks,
                      functools.partial(loss, constant=lambda w, x: Tensor(w, requires_grad=False)),
                      functools.partial(loss, constant=lambda w, x: torch.from_numpy(w).to(x.dtype))))
    return steps


def run_graph(steps: list[Step], leaves: tuple[Any, ...], torch_side: bool) -> Any:
    """The loss: every step in order, on Topgrad Tensors or torch tensors."""
    nodes = list(leaves)
    for step in steps:
        nodes.append(step.apply(nodes, torch_side))
    return nodes[-1]


@pytest.fixture(scope="module")
def keeps_float64(backend_name: str) -> bool:
    """Whether the backend under test keeps float64 leaves (numpy does; triton computes in float32
    only and refuses them)."""
    topgrad.set_backend(backend_name)
    try:
        Tensor(np.zeros(1), dtype="float64")
    except TypeError:
        return False
    return True


@given(data=st.data(), seed=seeds)
def test_random_graph_drawn(data: st.DataObject, seed: int, sizes: Sizes, keeps_float64: bool) -> None:
    """A random graph of the ops above: the loss, every trainable leaf's gradient (float32 leaves,
    and some float64 ones where the backend keeps them) and BatchNorm's running statistics as
    PyTorch's."""
    side = min(4, sizes.batch)
    n = data.draw(st.integers(2, 3), label="leaves")
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3, max_side=side),
                       label="shapes").input_shapes
    leaves = [rand(shape, seed + k) for k, shape in enumerate(shapes)]
    constants = data.draw(st.sets(st.integers(1, n - 1)), label="constants")  # leaf 0 is trained
    doubles = data.draw(st.sets(st.integers(0, n - 1)), label="float64 leaves") if keeps_float64 else set()
    steps = draw_graph(data, leaves, seed)
    note("\n".join(f"n{n + k} = {step.text}" for k, step in enumerate(steps)))
    note(f"float64 leaves: {sorted(doubles)}")
    check_against_torch(lambda *xs: run_graph(steps, xs, False), lambda *ts: run_graph(steps, ts, True),
                        leaves, seed=seed, constants=tuple(constants), float64=tuple(sorted(doubles)),
                        float32_ground=True)
    for k, step in enumerate(steps):
        if step.stats is not None:
            step.stats.check(f"n{n + k}")
