"""float64 Tensors (`Tensor(a, dtype="float64")`) against PyTorch in float64, at 1e-10.

`gradcheck` and any float64 work trust that a float64 Tensor is computed in float64 from end to
end, forward and backward. The rest of the suite checks float64 results' dtypes, and their values
at float32's 1e-4: an op that rounds through float32 anywhere (a float32 buffer, a float32
constant, a float32 GEMM) passes there. Here every op of the table (and the optional ops), reached
through the Tensor methods and functions that apply it, runs on inputs and an upstream gradient
that float32 cannot hold, and its output and every input's gradient must agree with PyTorch's
float64 answer to 1e-10 of the largest value (float32 rounding would leave ~1e-7), in float64.
Shapes and parameters are drawn by hypothesis. Backends without float64 skip the module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import Sizes, float64_tensor, positive_steps, to_numpy, torch_attention, torch_conv2d
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor

RTOL = 1e-10
seeds = st.integers(0, 2**16)
# Python scalars float32 cannot hold either (1/3, -2/7, 1/7 of a float32 ulp past 2.5)
SCALARS = st.sampled_from([1 / 3, -2 / 7, 2.5 + 2**-30, -1.1])


@pytest.fixture(scope="module", autouse=True)
def _has_float64(backend_name: str) -> None:
    """The whole module skipped where the backend has no float64 (triton computes in float32)."""
    topgrad.set_backend(backend_name)
    float64_tensor([0.0])


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def f64(shape: Sequence[int], seed: int, scale: float = 1.0, offset: float = 0.0,
        positive: bool = False) -> np.ndarray:
    """float64 normal values (|values| + 0.5 where `positive`) no element of which float32 holds."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(tuple(shape))
    a = np.abs(a) + 0.5 if positive else a * scale + offset
    a = np.asarray(a, dtype=np.float64)
    exact = a == a.astype(np.float32).astype(np.float64)
    a[exact] += np.spacing(np.float32(a[exact])) / 3  # a third of a float32 ulp off (never drawn yet)
    assert not np.any(a == a.astype(np.float32).astype(np.float64))
    return a


def assert_float64_close(actual: Any, expected: Any, what: str) -> None:
    """Same shape, a float64 array, and within RTOL of PyTorch's float64 answer, relative to each
    element and to the largest element (at least 1): what float64 round-off reaches."""
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.dtype == np.float64, f"{what}: dtype {a.dtype}, expected float64"
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    np.testing.assert_allclose(a, e, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def check64(
    top_fn: Callable[..., Tensor], torch_fn: Callable[..., torch.Tensor], inputs: Sequence[np.ndarray | None],
    seed: int = 0, constants: Sequence[int] = (),
) -> list[Tensor | None]:
    """Both functions on the same float64 inputs (None passes as None); the output and every input's
    gradient compared in float64, backward seeded with a float64 gradient float32 cannot hold.
    Inputs in `constants` are made with requires_grad=False and must get no gradient.
    Returns Topgrad's inputs, for further checks."""
    xs = [None if a is None else Tensor(a, dtype="float64", requires_grad=i not in constants)
          for i, a in enumerate(inputs)]
    ts = [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=i not in constants)
          for i, a in enumerate(inputs)]
    out, ref = top_fn(*xs), torch_fn(*ts)
    assert_float64_close(out, ref.detach(), "forward")
    g = f64(tuple(ref.shape), seed + 7919)
    out.backward(g)
    if ref.requires_grad:
        ref.backward(torch.from_numpy(g))
    for i, (x, t) in enumerate(zip(xs, ts)):
        if x is None or t is None:
            continue
        if i in constants:
            assert x.grad is None, f"input {i} is a constant but got a gradient"
            continue
        assert x.grad is not None, f"input {i} got no gradient"
        want = t.grad if t.grad is not None else torch.zeros_like(t)
        assert_float64_close(x.grad, want, f"gradient of input {i}")
    return xs


def broadcast_pairs(sizes: Sizes) -> st.SearchStrategy[Any]:
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=sizes.batch)


def shapes(sizes: Sizes, min_dims: int = 0, max_dims: int = 4, min_side: int = 1) -> st.SearchStrategy[Any]:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=sizes.batch)


def axes(ndim: int) -> st.SearchStrategy[Any]:
    """None, one axis (negative too) or a tuple of distinct axes: what sum, mean and max take."""
    if ndim == 0:
        return st.just(None)
    one = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return st.one_of(st.none(), one, several)


# ---- Add, Mul and what composes them: broadcasting, Python scalars, -, /, ** -----------------
BINARY = {
    "x + y": (lambda a, b: a + b, lambda a, b: a + b),
    "x * y": (lambda a, b: a * b, lambda a, b: a * b),
    "x - y": (lambda a, b: a - b, lambda a, b: a - b),
    "x / y": (lambda a, b: a / b, lambda a, b: a / b),
}


@pytest.mark.parametrize("form", sorted(BINARY))
@given(data=st.data(), seed=seeds)
def test_binary_ops_broadcast_in_float64(form: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    top, ref = BINARY[form]
    a, b = data.draw(broadcast_pairs(sizes), label="shapes").input_shapes
    constant = data.draw(st.sampled_from([(), (0,), (1,)]), label="constants")
    divisor = f64(b, seed + 1, positive=True) * np.where(f64(b, seed + 2) < 0, -1.0, 1.0)
    y = divisor if form == "x / y" else f64(b, seed + 1)
    check64(top, ref, [f64(a, seed), y], seed, constants=constant)


SCALAR_FORMS = {
    "x + c": lambda x, c: x + c, "c + x": lambda x, c: c + x, "x * c": lambda x, c: x * c,
    "c * x": lambda x, c: c * x, "x - c": lambda x, c: x - c, "c - x": lambda x, c: c - x,
    "x / c": lambda x, c: x / c, "c / x": lambda x, c: c / x, "-x": lambda x, c: -x,
}


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
@given(data=st.data(), seed=seeds)
def test_python_scalars_stay_float64(form: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """A Python float on either side keeps all its digits (a float32 constant would round 1/3)."""
    f = SCALAR_FORMS[form]
    shape = data.draw(shapes(sizes), label="shape")
    c = data.draw(SCALARS, label="c")
    x = f64(shape, seed, positive=form == "c / x")
    check64(lambda t: f(t, c), lambda t: f(t, c), [x], seed)


@pytest.mark.parametrize("n", [2, 3, 5, 0.5])
@given(data=st.data(), seed=seeds)
def test_powers_in_float64(n: float, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """x ** n: products of Mul ops (the engine sums the factors' gradients), or Sqrt for 0.5."""
    x = f64(data.draw(shapes(sizes), label="shape"), seed, positive=n == 0.5)
    check64(lambda t: t**n, lambda t: t**n, [x], seed)


# ---- reductions ------------------------------------------------------------------------------
REDUCTIONS = {
    "sum": (lambda t, axis, keep: t.sum(axis=axis, keepdims=keep), torch.sum),
    "mean": (lambda t, axis, keep: t.mean(axis=axis, keepdims=keep), torch.mean),
    "max": (lambda t, axis, keep: t.max(axis=axis, keepdims=keep), torch.amax),
}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@given(data=st.data(), seed=seeds)
def test_reductions_in_float64(op: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """Sum, Mean and Max over drawn axes, 0-d inputs included (max: no ties in normal draws)."""
    top, ref = REDUCTIONS[op]
    shape = data.draw(shapes(sizes), label="shape")
    axis = data.draw(axes(len(shape)), label="axis")
    keep = data.draw(st.booleans(), label="keepdims")

    def torch_fn(t: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(t.ndim)) if axis is None else axis
        return ref(t, dim=dims, keepdim=keep) if t.ndim else ref(t)

    check64(lambda t: top(t, axis, keep), torch_fn, [f64(shape, seed, scale=3.0, offset=0.5)], seed)


# ---- one-input elementwise ops -----------------------------------------------------------------
UNARY = {
    "relu": (lambda t: t.relu(), torch.relu, {}),
    "exp": (lambda t: t.exp(), torch.exp, {}),
    "log": (lambda t: t.log(), torch.log, {"positive": True}),
    "sqrt": (lambda t: t.sqrt(), torch.sqrt, {"positive": True}),
    "abs": (lambda t: t.abs(), torch.abs, {}),
    "abs()": (lambda t: abs(t), torch.abs, {}),
    "tanh": (lambda t: t.tanh(), torch.tanh, {"scale": 2.0}),
    "sigmoid": (lambda t: t.sigmoid(), torch.sigmoid, {"scale": 4.0}),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data(), seed=seeds)
def test_elementwise_ops_in_float64(op: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    top, ref, how = UNARY[op]
    check64(top, ref, [f64(data.draw(shapes(sizes), label="shape"), seed, **how)], seed)


@pytest.mark.parametrize("op", ["logsoftmax", "softmax"])
@given(data=st.data(), seed=seeds, large=st.booleans())
def test_logsoftmax_in_float64(op: str, data: st.DataObject, seed: int, large: bool, sizes: Sizes) -> None:
    """LogSoftmax and softmax (the backend's Softmax op, or LogSoftmax's exp) over a drawn axis,
    logits of ~1000 too."""
    shape = data.draw(shapes(sizes, min_dims=1), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = f64(shape, seed, scale=20.0 if large else 2.0, offset=1000.0 if large else 0.0)
    ref = torch.log_softmax if op == "logsoftmax" else torch.softmax
    check64(lambda t: getattr(t, op)(axis), lambda t: ref(t, dim=axis), [x], seed)


# ---- Linear, Reshape and the layout ops ---------------------------------------------------------
@given(data=st.data(), seed=seeds, bias=st.booleans(), matmul=st.booleans())
def test_linear_in_float64(data: st.DataObject, seed: int, bias: bool, matmul: bool, sizes: Sizes) -> None:
    """x.linear(w, b) and x @ w, with 0 to 2 leading axes."""
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=sizes.batch), label="lead")
    d, m = (data.draw(st.integers(1, sizes.dim), label=n) for n in ("D", "M"))
    b = f64((m,), seed + 2) if bias and not matmul else None

    def top(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return x @ w if matmul else x.linear(w, b)

    def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return x @ w if b is None else x @ w + b

    check64(top, ref, [f64((*lead, d), seed), f64((d, m), seed + 1), b], seed)


@given(data=st.data(), seed=seeds)
def test_reshape_and_flatten_in_float64(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """x.reshape to a drawn shape of the same size (-1 and 0-d included), and x.flatten()."""
    shape = data.draw(shapes(sizes), label="shape")
    size = int(np.prod(shape))
    factors = [k for k in range(1, size + 1) if size % k == 0]
    lead = data.draw(st.sampled_from(factors), label="lead")
    target = data.draw(st.sampled_from([(lead, -1), (-1, lead), (size,), (1, lead, size // lead)]
                                       + ([()] if size == 1 else [])), label="target")
    x = f64(shape, seed)
    check64(lambda t: t.reshape(*target), lambda t: t.reshape(target), [x], seed)
    if len(shape) >= 2:
        check64(lambda t: t.flatten(), lambda t: torch.flatten(t, 1), [x], seed)


@given(data=st.data(), seed=seeds)
def test_permute_and_transpose_in_float64(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(shapes(sizes, min_dims=1), label="shape")
    order = tuple(data.draw(st.permutations(range(len(shape))), label="axes"))
    x = f64(shape, seed)
    check64(lambda t: t.permute(*order), lambda t: t.permute(order), [x], seed)
    if len(shape) == 2:
        check64(lambda t: t.T, lambda t: t.T, [x], seed)


@given(data=st.data(), seed=seeds)
def test_slices_in_float64(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(shapes(sizes, min_side=0), label="shape")
    index = positive_steps(data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True),
                                      label="index"))
    check64(lambda t: t[index], lambda t: t[index], [f64(shape, seed)], seed)


@pytest.mark.parametrize("join", ["cat", "stack"])
@given(data=st.data(), seed=seeds)
def test_cat_and_stack_in_float64(join: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    base = data.draw(shapes(sizes, min_dims=1, max_dims=3), label="shape")
    count = data.draw(st.integers(1, 3), label="count")
    if join == "cat":
        axis = data.draw(st.integers(-len(base), len(base) - 1), label="axis")
        lengths = data.draw(st.lists(st.integers(0, sizes.batch), min_size=count, max_size=count),
                            label="lengths")
        at = axis % len(base)
        ins = [f64((*base[:at], n, *base[at + 1:]), seed + i) for i, n in enumerate(lengths)]
        check64(lambda *ts: topgrad.cat(ts, axis=axis), lambda *ts: torch.cat(ts, dim=axis), ins, seed)
    else:
        axis = data.draw(st.integers(-len(base) - 1, len(base)), label="axis")
        ins = [f64(base, seed + i) for i in range(count)]
        check64(lambda *ts: topgrad.stack(ts, axis=axis), lambda *ts: torch.stack(ts, dim=axis), ins, seed)


# ---- Conv2d and MaxPool2d --------------------------------------------------------------------
@given(data=st.data(), seed=seeds, bias=st.booleans())
def test_conv2d_in_float64(data: st.DataObject, seed: int, bias: bool, sizes: Sizes) -> None:
    """Drawn geometry: rectangular kernels, strides and paddings as (h, w) pairs, padding as wide
    as the kernel and strides longer than the image included."""
    b = data.draw(st.integers(1, sizes.batch), label="B")
    h, w = (data.draw(st.integers(1, sizes.image), label=n) for n in ("H", "W"))
    cin, cout = (data.draw(st.integers(1, sizes.channels), label=n) for n in ("Cin", "Cout"))
    kh, kw = (data.draw(st.integers(1, 4), label=n) for n in ("kh", "kw"))
    stride = (data.draw(st.integers(1, 4), label="sh"), data.draw(st.integers(1, 4), label="sw"))
    padding = (data.draw(st.integers(0, kh), label="ph"), data.draw(st.integers(0, kw), label="pw"))
    assume(h + 2 * padding[0] >= kh and w + 2 * padding[1] >= kw)
    ins = [f64((b, h, w, cin), seed), f64((kh, kw, cin, cout), seed + 1),
           f64((cout,), seed + 2) if bias else None]
    check64(lambda x, k, c: x.conv2d(k, c, stride=stride, padding=padding),
            lambda x, k, c: torch_conv2d(x, k, c, stride=stride, padding=padding), ins, seed)


@given(data=st.data(), seed=seeds)
def test_maxpool2d_in_float64(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    kernel = (data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw"))
    stride = (data.draw(st.integers(1, 3), label="sh"), data.draw(st.integers(1, 3), label="sw"))
    padding = (data.draw(st.integers(0, kernel[0] // 2), label="ph"),
               data.draw(st.integers(0, kernel[1] // 2), label="pw"))
    h = data.draw(st.integers(kernel[0], max(kernel[0], sizes.image)), label="H")
    w = data.draw(st.integers(kernel[1], max(kernel[1], sizes.image)), label="W")
    b = data.draw(st.integers(1, sizes.batch), label="B")
    c = data.draw(st.integers(1, sizes.channels), label="C")

    def ref(t: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(t.permute(0, 3, 1, 2), kernel, stride=stride, padding=padding)
        return out.permute(0, 2, 3, 1)

    check64(lambda t: t.maxpool2d(kernel, stride, padding), ref, [f64((b, h, w, c), seed)], seed)


# ---- BatchNorm and LayerNorm ------------------------------------------------------------------
@given(data=st.data(), seed=seeds, training=st.booleans(), stats=st.booleans(),
       gamma=st.booleans(), beta=st.booleans())
def test_batchnorm_in_float64(data: st.DataObject, seed: int, training: bool, stats: bool, gamma: bool,
                              beta: bool, sizes: Sizes) -> None:
    """Training and evaluation, gamma and beta each given or None, float64 running statistics
    updated as F.batch_norm updates them (to 1e-10 too, and kept float64)."""
    shape = data.draw(shapes(sizes, min_dims=2), label="shape")
    n, c = int(np.prod(shape[:-1])), shape[-1]
    assume(not training or n > 1)  # PyTorch refuses a training batch of one value per channel
    stats = stats or not training
    momentum = data.draw(st.sampled_from([0.1, 1 / 3]), label="momentum")
    eps = data.draw(st.sampled_from([1e-5, 1e-3]), label="eps")
    mean0, var0 = f64((c,), seed + 3), f64((c,), seed + 4, positive=True)
    running = [Tensor(mean0, dtype="float64", requires_grad=False),
               Tensor(var0, dtype="float64", requires_grad=False)] if stats else [None, None]
    torch_running = [torch.tensor(mean0), torch.tensor(var0)] if stats else [None, None]

    def top(x: Tensor, g: Tensor | None, b: Tensor | None) -> Tensor:
        return x.batchnorm(g, b, running_mean=running[0], running_var=running[1], training=training,
                           momentum=momentum, eps=eps)

    def ref(x: torch.Tensor, g: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
        mean, var = torch_running
        return F.batch_norm(x.reshape(n, c), mean, var, g, b, training, momentum, eps).reshape(x.shape)

    ins = [f64(shape, seed, scale=2.0, offset=1.0), f64((c,), seed + 1) if gamma else None,
           f64((c,), seed + 2) if beta else None]
    check64(top, ref, ins, seed)
    for mine, theirs, name in zip(running, torch_running, ("running_mean", "running_var")):
        if mine is not None:
            assert_float64_close(mine.numpy(), theirs, name)


@given(data=st.data(), seed=seeds, gamma=st.booleans(), beta=st.booleans())
def test_layernorm_in_float64(data: st.DataObject, seed: int, gamma: bool, beta: bool, sizes: Sizes) -> None:
    shape = data.draw(shapes(sizes, min_dims=1, max_dims=3), label="shape")
    eps = data.draw(st.sampled_from([1e-5, 1e-3]), label="eps")
    d = shape[-1]
    ins = [f64(shape, seed, scale=2.0, offset=1.0), f64((d,), seed + 1) if gamma else None,
           f64((d,), seed + 2) if beta else None]
    check64(lambda x, g, b: x.layernorm(g, b, eps=eps), lambda x, g, b: F.layer_norm(x, (d,), g, b, eps),
            ins, seed)


# ---- Attention --------------------------------------------------------------------------------
@given(data=st.data(), seed=seeds, causal=st.booleans())
def test_attention_in_float64(data: st.DataObject, seed: int, causal: bool, sizes: Sizes) -> None:
    """q (B, T, D), k (B, S, D), v (B, S, Dv): T != S and Dv != D, causal masks top-left aligned."""
    b = data.draw(st.integers(1, sizes.batch), label="B")
    t, s = (data.draw(st.integers(1, sizes.tokens), label=n) for n in ("T", "S"))
    d, dv = (data.draw(st.integers(1, sizes.dim), label=n) for n in ("D", "Dv"))
    ins = [f64((b, t, d), seed), f64((b, s, d), seed + 1), f64((b, s, dv), seed + 2)]
    check64(lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
            lambda q, k, v: torch_attention(q, k, v, causal=causal), ins, seed)


# ---- a graph of several ops, as gradcheck runs them ----------------------------------------------
@given(seed=seeds)
def test_a_small_network_in_float64(seed: int) -> None:
    """Conv, BatchNorm, ReLU, a residual Add, pooling, Linear and a LogSoftmax loss: the engine
    accumulates float64 gradients of shared tensors without rounding them."""
    def net(x: Any, w1: Any, g: Any, w2: Any, b2: Any, torch_side: bool = False) -> Any:
        if torch_side:
            h = torch_conv2d(x, w1, padding=1)
            h = F.batch_norm(h.reshape(-1, 3), None, None, g, None, True).reshape(h.shape)
            h = torch.relu(h) + h * (1 / 3)
            p = F.max_pool2d(h.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
            z = torch.flatten(p, 1) @ w2 + b2
            return -(torch.log_softmax(z, dim=-1) * z).mean()
        h = x.conv2d(w1, padding=1)
        h = h.batchnorm(g, None)
        h = h.relu() + h * (1 / 3)
        z = h.maxpool2d(2).flatten().linear(w2, b2)
        return -(z.logsoftmax() * z).mean()

    ins = [f64((2, 4, 4, 2), seed), f64((3, 3, 2, 3), seed + 1), f64((3,), seed + 2), f64((12, 5), seed + 3),
           f64((5,), seed + 4)]
    check64(net, lambda *ts: net(*ts, torch_side=True), ins, seed)
