"""Random compositions of ops against PyTorch: small graphs, forward and every leaf's gradient.

`test_ops.py` checks each op alone; a fault can also sit where ops meet: a gradient summed over
a node that feeds several ops, a broadcast gradient reduced back, a view's gradient written into
its parent's shape. Each draw here makes 2-3 leaves of mutually broadcastable shapes (some of
them constants) and 4-10 ops, each reading any earlier node; the nodes nothing reads are weighed
by fixed random arrays and summed to a scalar loss. `check_against_torch` then compares the loss
and every trainable leaf's gradient with PyTorch's float64 answer (float32 PyTorch as yardstick).

The graph is drawn with PyTorch's values at hand, to keep every op on ground where float32 and
float64 agree to the tolerance: log, sqrt and divisors see `x * x + 1.0` unless x is already
away from 0, exp sees no input above 4, nodes beyond 100 are dropped, and relu, abs and max
are applied only where no element sits near a kink (a near-tie can pick another branch in float32).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import Sizes, check_against_torch, rand
from hypothesis import given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor

seeds = st.integers(0, 2**16)
NUMBERS = st.sampled_from([0.5, -1.5, 2.0, 3])  # Python numbers on either side of an operator
LARGEST = 100.0  # a node beyond this is dropped: float32 round-off grows with the values
KINK = 1e-3  # relu, abs and max need their inputs this far (times the scale) from a kink

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

    def apply(self, nodes: list[Any], torch_side: bool) -> Any:
        fn = self.ref if torch_side and self.ref is not None else self.top
        return fn(*(None if i is None else nodes[i] for i in self.args))


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


DRAWERS = [draw_arithmetic, draw_unary, draw_reduction, draw_layout, draw_join, draw_linear,
           draw_normalization]


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


@given(data=st.data(), seed=seeds)
def test_random_graph_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """A random graph of the ops above: the loss and every trainable leaf's gradient as PyTorch's."""
    side = min(4, sizes.batch)
    n = data.draw(st.integers(2, 3), label="leaves")
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3, max_side=side),
                       label="shapes").input_shapes
    leaves = [rand(shape, seed + k) for k, shape in enumerate(shapes)]
    constants = data.draw(st.sets(st.integers(1, n - 1)), label="constants")  # leaf 0 is trained
    steps = draw_graph(data, leaves, seed)
    note("\n".join(f"n{n + k} = {step.text}" for k, step in enumerate(steps)))
    check_against_torch(lambda *xs: run_graph(steps, xs, False), lambda *ts: run_graph(steps, ts, True),
                        leaves, seed=seed, constants=tuple(constants))
