"""Every op of the table, forward and the gradient of every input, against PyTorch at 1e-4
(float32 inputs; PyTorch's float64 answer is the reference, see `helpers.assert_as_accurate`).

Each op has a few fixed cases and a Hypothesis test that draws shapes, axes, broadcasts
and conv geometries. Shapes are bounded by `Sizes.for_run(interpreted)`: an interpreted
backend gets smaller draws, never fewer ops. Inputs go through the public Tensor API. Every
drawn test also draws the memory layout of each input and of the upstream gradient
(`helpers.layouts`: C order, transposed, a strided slice or Fortran order, set as the Tensor's
`.data`, so the op meets non-contiguous arrays of its own backend), and, where PyTorch takes
them, axes of size 0.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
import torch.nn.functional as F  # noqa: N812 - the usual PyTorch spelling
from helpers import (
    Sizes,
    assert_as_accurate,
    assert_close,
    check_against_torch,
    float64_tensor,
    hwio_to_oihw,
    is_contiguous,
    laid_out,
    layouts,
    mentions_shape,
    nhwc_to_nchw,
    rand,
    to_numpy,
    topgrad_warns_nothing,
    torch_attention,
    torch_conv2d,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor
from topgrad.convolution import conv_geometry

seeds = st.integers(0, 2**16)


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def any_shapes(min_dims: int, max_dims: int, max_side: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes whose sides may be 0: the ops drawn with them take empty tensors, as PyTorch."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side)


# ---- the layouts the drawn tests hand the ops -----------------------------------------------
@pytest.mark.parametrize("layout", ["transposed", "strided", "fortran"])
def test_the_drawn_layouts_reach_the_op_as_non_contiguous_arrays(layout: str) -> None:
    """`helpers.laid_out` makes a view of the backend's own array (a torch tensor's on triton), a
    Tensor given it as `.data` keeps it, and the op sees it: for a (3, 4) input each layout but C
    order is not contiguous. (`Tensor(view)` would not do: a trainable Tensor copies it.)"""
    values = rand((3, 4), 0)
    view = laid_out(values, layout)
    assert not is_contiguous(view), f"{layout}: a contiguous array"
    np.testing.assert_array_equal(to_numpy(view), values)
    x = Tensor(values)
    x.data = view
    assert x.data is view
    seen: list[bool] = []

    def top(t: Tensor) -> Tensor:
        seen.append(is_contiguous(t.data))
        return t * 2.0

    check_against_torch(top, lambda t: t * 2.0, [values], layout=layout)
    assert seen == [False]


# ---- Add and Mul: broadcasting, scalars on either side -------------------------------
BINARY = {
    "Add": (lambda a, b: a + b, lambda a, b: a + b),
    "Mul": (lambda a, b: a * b, lambda a, b: a * b),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1)), ((3, 4), ()), ((), (3, 4)),
     # a block broadcast over 8192+ elements: the numpy backend takes its wide views there
     ((4, 32, 64), (64,)), ((1, 32, 64), (4, 32, 64))],
)
def test_binary_fixed(op: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    """Broadcasting Add and Mul; each gradient is reduced to its parent's own shape."""
    top, ref = BINARY[op]
    check_against_torch(top, ref, [rand(shape_a, 1), rand(shape_b, 2)])


# the drawn broadcasts: Add, Mul, and x - y (Sub, composed of them)
DRAWN_BINARY = {**BINARY, "Sub": (lambda a, b: a - b, lambda a, b: a - b)}


@pytest.mark.parametrize("op", sorted(DRAWN_BINARY))
@given(data=st.data(), seed=seeds)
def test_binary_broadcast_drawn(op: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    top, ref = DRAWN_BINARY[op]
    shapes = data.draw(  # min_side=0: an empty axis broadcast against 1, as PyTorch does
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, min_side=0, max_side=sizes.batch)
    )
    a, b = shapes.input_shapes
    # a frozen operand (requires_grad=False, as an input batch or a mask): the other's gradient
    # is still summed back over the broadcast axes, and the frozen one gets none
    constants = data.draw(st.sampled_from([(), (0,), (1,)]), label="constants")
    check_against_torch(top, ref, [rand(a, seed), rand(b, seed + 1)], seed=seed, constants=constants,
                        layout=data.draw(layouts(2), label="layout"))


SCALAR_FORMS = {
    "x + c": (lambda x: x + 2.5, lambda x: x + 2.5),
    "c + x": (lambda x: 2.5 + x, lambda x: 2.5 + x),
    "x * c": (lambda x: x * -1.5, lambda x: x * -1.5),
    "c * x": (lambda x: -1.5 * x, lambda x: -1.5 * x),
    "x - c": (lambda x: x - 0.75, lambda x: x - 0.75),
    "c - x": (lambda x: 0.75 - x, lambda x: 0.75 - x),
    "-x": (lambda x: -x, lambda x: -x),
    "x / c": (lambda x: x / 4.0, lambda x: x / 4.0),
    "(x - c) / c * x": (lambda x: (x - 1.0) / 3.0 * x, lambda x: (x - 1.0) / 3.0 * x),
    "x ** 1": (lambda x: x**1, lambda x: x**1),
    "(x - c) ** 2": (lambda x: (x - 0.5) ** 2, lambda x: (x - 0.5) ** 2),
    "x ** 3.0": (lambda x: x**3.0, lambda x: x**3.0),
}


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_scalar_compositions(form: str, shape: tuple[int, ...]) -> None:
    """Python scalars on either side of Add and Mul, and the compositions sub, neg and div."""
    top, ref = SCALAR_FORMS[form]
    check_against_torch(top, ref, [rand(shape, 3)])


NUMBER_FORMS: dict[str, Callable[[Any, float], Any]] = {
    "x + c": lambda x, c: x + c, "c + x": lambda x, c: c + x, "x * c": lambda x, c: x * c,
    "c * x": lambda x, c: c * x, "x - c": lambda x, c: x - c, "c - x": lambda x, c: c - x,
    "-x": lambda x, c: -x, "x / c": lambda x, c: x / c, "c / x": lambda x, c: c / x,
}


@pytest.mark.parametrize("form", sorted(NUMBER_FORMS))
@given(data=st.data(), seed=seeds)
def test_number_forms_drawn(form: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """A Python number on either side of +, -, * and /, and -x, at drawn shapes (empty ones too),
    numbers and layouts."""
    f = NUMBER_FORMS[form]
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    c = data.draw(st.sampled_from([-2.5, -1.0, 0.5, 0.75, 3.0]), label="c")
    x = _divisors(shape, seed) if form == "c / x" else rand(shape, seed)  # away from 0 for c / x
    check_against_torch(lambda t: f(t, c), lambda t: f(t, c), [x], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


LIST_FORMS = {
    "x + c": lambda x, c: x + c, "c + x": lambda x, c: c + x, "x * c": lambda x, c: x * c,
    "c * x": lambda x, c: c * x, "x - c": lambda x, c: x - c, "c - x": lambda x, c: c - x,
    "x / c": lambda x, c: x / c, "c / x": lambda x, c: c / x,
}


@pytest.mark.parametrize("form", sorted(LIST_FORMS))
@pytest.mark.parametrize("kind", [list, tuple])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_list_operand_is_a_constant_in_the_tensors_dtype(form: str, kind: type, dtype: str) -> None:
    """A list or tuple of numbers on either side of +, -, * and / is a constant of x's dtype,
    broadcast as a Tensor of it would be, on every backend (numpy's took it in some forms, and
    refused x - list; triton's refused them all). PyTorch's yardstick gets the same constant."""
    f = LIST_FORMS[form]
    c = [[0.5, -1.5, 2.0], [1.25, 3.0, -0.75]]
    x0 = _divisors((4, 2, 3), 6)  # away from 0 for c / x
    x = float64_tensor(x0) if dtype == "float64" else Tensor(x0)
    out = f(x, kind(kind(row) for row in c))
    constant = out.op.parents[0 if form.startswith("c") else 1]
    assert isinstance(constant, Tensor) and not constant.requires_grad
    assert str(out.dtype).endswith(dtype)
    xt = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    ref = f(xt, torch.tensor(c, dtype=torch.float64))
    g = rand(tuple(ref.shape), 8)
    ref.backward(torch.from_numpy(g.astype(np.float64)))
    out.backward(g)
    assert_close(out, ref, f"{form} forward")
    assert str(x.grad.dtype).endswith(dtype)
    assert_close(x.grad, xt.grad, f"{form} dL/dx")


@pytest.mark.parametrize(("shape_a", "shape_b"), [((3, 4), (3, 4)), ((2, 3, 4), (3, 1)), ((4,), (2, 4))])
def test_tensor_minus_tensor(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    check_against_torch(lambda a, b: a - b, lambda a, b: a - b, [rand(shape_a, 4), rand(shape_b, 5)])


@given(data=st.data(), seed=seeds)
def test_whole_powers_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """x ** n for n = 1..9: products by repeated squaring, so the engine sums the gradient over
    shared factors (x ** 7 uses x, x * x and its square)."""
    n = data.draw(st.integers(1, 9), label="n")
    shape = data.draw(any_shapes(0, 3, sizes.batch), label="shape")
    check_against_torch(lambda x: x**n, lambda x: x**n, [rand(shape, seed, scale=0.8)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


@pytest.mark.parametrize("n", [0, -1, 0.25, 2.5, float("inf"), float("nan"), True, "2", None])
def test_other_powers_are_refused(n: object) -> None:
    with pytest.raises(TypeError, match=r"the exponent must be a whole number >= 1 .* or 0.5 \(x.sqrt\(\)\)"):
        Tensor(rand((2,), 0)) ** n
    with pytest.raises(TypeError, match=r"Tensor \*\* Tensor: the exponent must be a whole number >= 1"):
        Tensor(rand((2,), 0)) ** Tensor(rand((2,), 1))


def test_the_refused_powers_recipes_give_pytorchs_powers() -> None:
    """`(var + eps) ** -0.5`, a hand-written norm's line, was refused with no way round; the message
    now gives one for each kind of power, and each matches PyTorch's."""
    with pytest.raises(TypeError, match=r"write x \*\* -0\.5 as 1 / x\.sqrt\(\), x \*\* -n as 1 / x \*\* n, "
                       r"and x \*\* p for x > 0 as \(x\.log\(\) \* p\)\.exp\(\)"):
        Tensor(rand((2,), 0)) ** -0.5
    x = np.abs(rand((3, 4), 70)) + 0.5
    for top, ref in [(lambda t: 1 / t.sqrt(), lambda t: t**-0.5), (lambda t: 1 / t**2, lambda t: t**-2),
                     (lambda t: (t.log() * 1.5).exp(), lambda t: t**1.5)]:
        check_against_torch(top, ref, [x])


# ---- Div, Exp and Log (ops beyond the contract's table) -----------------------------------------
def _divisors(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Either sign, |d| >= 0.5: away from 0, where float32 and float64 quotients part."""
    r = rand(shape, seed)
    return (np.sign(r) * (np.abs(r) + 0.5)).astype(np.float32)


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((2, 1, 4), (3, 1)), ((3, 4), ()), ((), (3, 4)),
     ((4, 32, 64), (64,))],
)
def test_div_fixed(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    check_against_torch(lambda a, b: a / b, lambda a, b: a / b, [rand(shape_a, 1), _divisors(shape_b, 2)])


@given(data=st.data(), seed=seeds)
def test_div_broadcast_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shapes = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, min_side=0, max_side=sizes.batch)
    )
    a, b = shapes.input_shapes
    constants = data.draw(st.sampled_from([(), (0,), (1,)]), label="constants")
    check_against_torch(lambda x, y: x / y, lambda x, y: x / y, [rand(a, seed), _divisors(b, seed + 1)],
                        seed=seed, constants=constants, layout=data.draw(layouts(2), label="layout"))


@pytest.mark.parametrize("c", [2.5, -1.0, np.float32(3.0), 4])
def test_number_over_tensor(c: float) -> None:
    check_against_torch(lambda x: c / x, lambda x: c / x, [_divisors((2, 3), 3)])


def test_division_by_zero_as_pytorch() -> None:
    """x / 0 is ±inf and 0 / 0 NaN, forward and in both gradients, as in PyTorch (no warnings)."""
    a_np = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    b_np = np.array([0.0, 0.0, 0.0, -0.0], np.float32)
    a, b = Tensor(a_np), Tensor(b_np)
    at, bt = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = a / b
        out.backward(np.ones(4, np.float32))
    ref = at / bt
    ref.backward(torch.ones(4))
    for got, want in ((out, ref.detach()), (a.grad, at.grad), (b.grad, bt.grad)):
        np.testing.assert_array_equal(to_numpy(got), want.numpy())


def test_division_by_an_array_is_the_div_op_as_multiplication_is(backend_name: str) -> None:
    """`x / a` and `a / x` with a numpy array `a` go to the backend's Div, as `x * a` goes to Mul
    (`/` alone refused arrays): numpy's takes `a` as a constant, a backend taking only its own
    arrays refuses it in Div's name; text is refused in Div's name on every backend."""
    x0, a = rand((2, 3), 0), np.abs(rand((3,), 1)) + np.float32(0.5)
    for text in (lambda x: x / "2", lambda x: "2" / x):
        with pytest.raises(TypeError, match="Div: operands must be"):
            text(Tensor(x0))
    if backend_name != "numpy":
        for call in (lambda x: x / a, lambda x: a / x):
            with pytest.raises(TypeError, match="Div"):
                call(Tensor(x0))
        return
    x, tx = Tensor(x0), torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    ta = torch.tensor(a, dtype=torch.float64)
    y, ty = x / a + a / x, tx / ta + ta / tx
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(x.grad), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("shape", "offset"), [((3, 4), 0.0), ((2, 3, 5), 2.0), ((), -1.0), ((0, 3), 0.0)])
def test_exp_fixed(shape: tuple[int, ...], offset: float) -> None:
    check_against_torch(lambda x: x.exp(), torch.exp, [rand(shape, 4) + np.float32(offset)])


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 5), (), (0, 3)])
def test_log_fixed(shape: tuple[int, ...]) -> None:
    check_against_torch(lambda x: x.log(), torch.log, [np.abs(rand(shape, 5)) + np.float32(0.1)])


@given(data=st.data(), seed=seeds)
def test_exp_and_log_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    scale = data.draw(st.sampled_from([0.5, 1.0, 3.0]), label="scale")
    x = rand(shape, seed, scale=scale)
    check_against_torch(lambda t: t.exp(), torch.exp, [x], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))
    check_against_torch(lambda t: t.log(), torch.log, [np.abs(x) + np.float32(0.05)], seed=seed,
                        layout=data.draw(layouts(1), label="log's layout"))


def test_exp_and_log_at_the_edges_as_pytorch() -> None:
    """exp overflows to inf and log gives -inf at 0 and NaN below, forward and backward, without
    warnings, as in PyTorch."""
    values = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 100.0, -100.0, 1e-30], np.float32)
    for top, ref in ((lambda t: t.exp(), torch.exp), (lambda t: t.log(), torch.log)):
        x, xt = Tensor(values), torch.tensor(values, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            out = top(x)
            out.backward(np.ones(values.shape, np.float32))
        want = ref(xt)
        want.backward(torch.ones(values.shape))
        for got, exp in ((out, want.detach()), (x.grad, xt.grad)):  # atol: exp(-100) is subnormal
            np.testing.assert_allclose(to_numpy(got), exp.numpy(), rtol=1e-6, atol=1e-37, equal_nan=True)


def test_softmax_and_sigmoid_written_out_match_pytorch() -> None:
    """What the optional ops are for: softmax, its log and sigmoid from Exp, Log, Sum and Div."""
    def top(x: Tensor) -> Tensor:
        e = (x - 1.0).exp()
        softmax = e / e.sum(axis=-1, keepdims=True)
        return softmax.log() + 1.0 / (1.0 + (-x).exp())

    def ref(x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x, dim=-1) + torch.sigmoid(x)

    check_against_torch(top, ref, [rand((4, 6), 6)])


# ---- Max (an op beyond the contract's table) ---------------------------------------------------
def _amax(axis: Any, keepdims: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.amax(x, dim=() if axis is None else axis, keepdim=keepdims)


@pytest.mark.parametrize(("shape", "axis", "keepdims"), [
    ((3, 4), None, False), ((3, 4), 1, False), ((2, 3, 5), (0, 2), True), ((2, 3, 5), -2, True),
    ((), None, False), ((0, 3), 1, False), ((4, 1), 0, False), ((2, 3000), 1, False),
    ((128, 10), -1, False), ((4, 40, 3), 2, True), ((70, 1), 1, False),  # numpy's narrow rows
])
def test_max_fixed(shape: tuple[int, ...], axis: Any, keepdims: bool) -> None:
    check_against_torch(lambda x: x.max(axis=axis, keepdims=keepdims), _amax(axis, keepdims),
                        [rand(shape, 8)])


@given(data=st.data(), seed=seeds)
def test_max_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """Drawn shapes (0-d and empty axes too), axes (None, an int or a tuple, negative ones too),
    keepdims and layouts; with `ties`, whole numbers in [-2, 2], so that elements tie for the
    maximum and share its gradient equally, as in torch.amax
    (`test_max_ties_nan_and_infinities_as_pytorch`). A maximum over an empty axis has no value:
    PyTorch and Topgrad both refuse it."""
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    ndim = len(shape)
    rank = max(ndim, 1)  # a 0-d tensor takes axis 0 or -1, as in PyTorch
    tuples = hnp.valid_tuple_axes(rank, min_size=1)  # negative axes too, none repeated
    axis = data.draw(st.none() | st.integers(-rank, rank - 1) | tuples, label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    ties = data.draw(st.booleans(), label="ties")
    x = np.round(rand(shape, seed)).clip(-2, 2).astype(np.float32) if ties else rand(shape, seed)
    reduced = range(ndim) if axis is None or not ndim else [axis] if isinstance(axis, int) else axis
    if any(shape[a] == 0 for a in reduced):
        with pytest.raises(ValueError, match=r"Max: .* has no elements along axis"):
            Tensor(x).max(axis=axis, keepdims=keepdims)
        with pytest.raises((RuntimeError, IndexError)):  # IndexError in torch 2.13
            _amax(axis, keepdims)(torch.from_numpy(x))
        return
    check_against_torch(lambda x: x.max(axis=axis, keepdims=keepdims), _amax(axis, keepdims), [x], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


@pytest.mark.parametrize("copies", [1, 32])  # 128 rows: numpy's narrow-row path (`rowmax`)
def test_max_ties_nan_and_infinities_as_pytorch(copies: int) -> None:
    """As torch.amax: elements that tie for the maximum share its gradient equally (0 and -0.0
    tie), a NaN makes the maximum NaN and every gradient of its row NaN, and a row of -inf has
    maximum -inf with the gradient split over the row; no warnings from Topgrad's code."""
    x = np.array([[1, 3, 3, 0], [2, np.nan, 5, 1], [-np.inf] * 4, [0.0, -0.0, -1, -2]], np.float32)
    g = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    x, g = np.tile(x, (copies, 1)), np.tile(g, copies)
    t, xt = Tensor(x), torch.tensor(x, dtype=torch.float64, requires_grad=True)
    with topgrad_warns_nothing():
        out = t.max(axis=1)
        out.backward(g)
    want = torch.amax(xt, dim=1)
    want.backward(torch.tensor(g, dtype=torch.float64))
    np.testing.assert_array_equal(to_numpy(out), want.detach().numpy())
    np.testing.assert_array_equal(to_numpy(t.grad), xt.grad.numpy())
    assert to_numpy(t.grad)[0].tolist() == [0.0, 0.5, 0.5, 0.0]


@pytest.mark.parametrize(("shape", "axis"), [((2, 0), 1), ((2, 0), None), ((0,), 0), ((3, 0, 2), (1, 2))])
def test_max_over_nothing_is_refused_as_pytorch(shape: tuple[int, ...], axis: Any) -> None:
    with pytest.raises(ValueError, match=r"Max: x of shape .* has no elements along axis \d+, and a "
                                         "maximum over nothing has no value"):
        Tensor(np.zeros(shape, np.float32)).max(axis=axis)
    with pytest.raises((RuntimeError, IndexError)):  # IndexError in torch 2.13
        _amax(axis, False)(torch.zeros(shape))


def test_softmax_written_out_with_max_is_stable() -> None:
    """A softmax written out with the max subtracted: logits in the hundreds, whose exp overflows
    float32, give PyTorch's softmax and its gradient (the max's own gradient terms cancel)."""
    def top(x: Tensor) -> Tensor:
        e = (x - x.max(axis=-1, keepdims=True)).exp()
        return e / e.sum(axis=-1, keepdims=True)

    x = rand((4, 6), 9, scale=100.0)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.exp(x)).all()  # written out without the max, it would overflow
    check_against_torch(top, lambda x: torch.softmax(x, dim=-1), [x])


# ---- Tanh and Sigmoid (ops beyond the contract's table) ----------------------------------------
TANH_AND_SIGMOID = pytest.mark.parametrize(
    ("name", "ref"), [("tanh", torch.tanh), ("sigmoid", torch.sigmoid)]
)


@TANH_AND_SIGMOID
@pytest.mark.parametrize(("shape", "scale"), [((3, 4), 1.0), ((2, 3, 5), 4.0), ((), 2.0), ((0, 3), 1.0),
                                              ((4, 5), 0.01),  # 0.01: tanh's series near 0
                                              ((2, 65539), 4.0)])  # numpy: blocks and a rest (large L2)
def test_tanh_and_sigmoid_fixed(
    name: str, ref: Callable[..., Any], shape: tuple[int, ...], scale: float
) -> None:
    check_against_torch(lambda x: getattr(x, name)(), ref, [rand(shape, 7, scale=scale)])


@TANH_AND_SIGMOID
@given(data=st.data(), seed=seeds)
def test_tanh_and_sigmoid_drawn(name: str, ref: Callable[..., Any], data: st.DataObject, seed: int,
                                sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    scale = data.draw(st.sampled_from([0.03, 1.0, 5.0, 30.0]), label="scale")
    check_against_torch(lambda t: getattr(t, name)(), ref, [rand(shape, seed, scale=scale)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


@TANH_AND_SIGMOID
def test_tanh_and_sigmoid_at_the_edges_as_pytorch(name: str, ref: Callable[..., Any]) -> None:
    """±inf saturate with gradient 0, NaN passes, -0.0 keeps its sign, tiny inputs keep their
    digits (tanh(1e-6) is not 0), and sigmoid far below 0 is 0, forward and backward, without
    warnings, as in PyTorch (whose sigmoid(-100) is a subnormal 3.8e-44). Against PyTorch's
    float64 answer: near ±1 a float32 result is within an ulp or two (6e-8) of it, whichever way
    it rounds (tanh(9) is 1 - 3e-8: PyTorch's float32 says 1 - 1.2e-7, the triton kernel 1)."""
    values = np.array([0.0, -0.0, 1e-6, -3e-4, 0.04, -0.06, 0.5, -3.0, 9.0, 20.0, -20.0, 100.0, -100.0,
                       np.inf, -np.inf, np.nan], np.float32)
    x, xt = Tensor(values), torch.tensor(values, dtype=torch.float64, requires_grad=True)
    with topgrad_warns_nothing():
        out = getattr(x, name)()
        out.backward(np.ones(values.shape, np.float32))
    want = ref(xt)
    want.backward(torch.ones(values.shape, dtype=torch.float64))
    for got, exp in ((out, want.detach()), (x.grad, xt.grad)):
        np.testing.assert_allclose(to_numpy(got), exp.numpy(), rtol=2e-6, atol=1.5e-7, equal_nan=True)
    if name == "tanh":  # tanh(1e-6) and tanh(-3e-4) to float32's precision, not just within atol
        np.testing.assert_allclose(to_numpy(out)[2:4], want.detach().numpy()[2:4], rtol=1e-6)
    assert np.signbit(to_numpy(out)[1]) == np.signbit(want.detach().numpy()[1])


# ---- Sqrt (an op beyond the contract's table) ----------------------------------------------------
def _positive(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    """|normal| * scale + 0.05 * scale: away from 0, where the gradient 1 / (2 sqrt(x)) blows up."""
    return (np.abs(rand(shape, seed)) * scale + 0.05 * scale).astype(np.float32)


@pytest.mark.parametrize(("shape", "scale"), [((3, 4), 1.0), ((2, 3, 5), 100.0), ((), 2.0), ((0, 3), 1.0),
                                              ((4, 5), 1e-4)])
def test_sqrt_fixed(shape: tuple[int, ...], scale: float) -> None:
    check_against_torch(lambda x: x.sqrt(), torch.sqrt, [_positive(shape, 8, scale)])


@given(data=st.data(), seed=seeds)
def test_sqrt_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e3]), label="scale")
    check_against_torch(lambda x: x.sqrt(), torch.sqrt, [_positive(shape, seed, scale)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


def test_half_power_is_sqrt_and_a_norm_matches_pytorch() -> None:
    """x ** 0.5 is the Sqrt op; the Euclidean norm of each row, written out, against PyTorch."""
    x = Tensor(rand((3, 4), 9))
    assert type(((x * x) ** 0.5)._op).__name__ == "Sqrt"
    check_against_torch(lambda x: (x * x).sum(axis=-1) ** 0.5, lambda t: torch.linalg.vector_norm(t, dim=-1),
                        [rand((5, 7), 10)])


def test_sqrt_at_the_edges_as_pytorch() -> None:
    """0 gives 0 with gradient inf, below 0 NaN, inf stays inf with gradient 0, NaN passes, -0.0
    keeps its sign; forward and backward without warnings, as in PyTorch."""
    values = np.array([0.0, -0.0, -1.0, 1e-30, 4.0, 1e30, np.inf, -np.inf, np.nan], np.float32)
    x, xt = Tensor(values), torch.tensor(values, dtype=torch.float64, requires_grad=True)
    with topgrad_warns_nothing():
        out = x.sqrt()
        out.backward(np.ones(values.shape, np.float32))
    want = torch.sqrt(xt)
    want.backward(torch.ones(values.shape, dtype=torch.float64))
    for got, exp in ((out, want.detach()), (x.grad, xt.grad)):
        np.testing.assert_allclose(to_numpy(got), exp.numpy(), rtol=2e-6, atol=0, equal_nan=True)
    assert np.signbit(to_numpy(out)[1])


def test_sqrt_gradient_just_below_float32s_largest_stays_finite_as_pytorchs() -> None:
    """grad / (2 y) of 1.5e38 to 2.7e38: numpy's backward computed grad / y first (3e38 to 5.3e38,
    past float32's 3.4e38: inf) and halved it after; PyTorch's grad / (2 y) is finite."""
    values, upstream = np.array([1e-30, 1e-40, 1e-45], np.float32), np.array([3e23, 5e18, 2e16], np.float32)
    x, xt = Tensor(values), torch.tensor(values, dtype=torch.float64, requires_grad=True)
    x.sqrt().backward(upstream)
    torch.sqrt(xt).backward(torch.tensor(upstream, dtype=torch.float64))
    assert np.isfinite(to_numpy(x.grad)).all(), to_numpy(x.grad)
    np.testing.assert_allclose(to_numpy(x.grad), xt.grad.numpy(), rtol=1e-6)


# ---- Abs (an op beyond the contract's table) -----------------------------------------------------
@pytest.mark.parametrize(("shape", "scale"), [((3, 4), 1.0), ((2, 3, 5), 100.0), ((), 2.0), ((0, 3), 1.0),
                                              ((4, 5), 1e-4)])
def test_abs_fixed(shape: tuple[int, ...], scale: float) -> None:
    check_against_torch(lambda x: x.abs(), torch.abs, [rand(shape, 8, scale=scale)])


@given(data=st.data(), seed=seeds)
def test_abs_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e3]), label="scale")
    check_against_torch(lambda x: abs(x), torch.abs, [rand(shape, seed, scale=scale)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


def test_abs_at_the_edges_as_pytorch() -> None:
    """0 and -0.0 give 0 with gradient 0 (the kink), inf gives inf, NaN passes forward with gradient
    0 (PyTorch's sign of NaN is 0; numpy's np.sign would say NaN), and an upstream NaN or inf
    stays NaN times the sign, as PyTorch's product does."""
    values = np.array([0.0, -0.0, -1.5, 2.0, 1e-30, -1e30, np.inf, -np.inf, np.nan, 3.0, -3.0, 0.0],
                      np.float32)
    upstream = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, np.nan, np.inf, np.inf], np.float32)
    x, xt = Tensor(values), torch.tensor(values, dtype=torch.float64, requires_grad=True)
    with topgrad_warns_nothing():
        out = x.abs()
        out.backward(upstream)
    want = torch.abs(xt)
    want.backward(torch.tensor(upstream, dtype=torch.float64))
    for got, exp in ((out, want.detach()), (x.grad, xt.grad)):
        np.testing.assert_array_equal(to_numpy(got), exp.numpy())
    assert not np.signbit(to_numpy(out)[1])  # |-0.0| is +0.0


def test_an_l1_loss_and_a_softmax_match_pytorch() -> None:
    """abs(x - y).mean(), PyTorch's l1_loss, and x.softmax(axis), against torch.softmax, forward
    and backward."""
    y = rand((4, 6), 11)
    check_against_torch(lambda x: abs(x - Tensor(y, requires_grad=False)).mean(),
                        lambda t: torch.nn.functional.l1_loss(t, torch.tensor(y, dtype=t.dtype)),
                        [rand((4, 6), 10)])
    for axis in (-1, 0, 1):
        check_against_torch(lambda x, a=axis: x.softmax(a), lambda t, a=axis: torch.softmax(t, dim=a),
                            [rand((3, 5, 4), 12, scale=30.0)])


def test_sigmoid_is_one_op_where_the_written_out_one_fails() -> None:
    """1 / (1 + e^-x) written out from ops has a NaN gradient where e^-x overflows (0 * inf in
    the chain); the Sigmoid op's gradient y (1 - y) is 0 there, as PyTorch's."""
    x = Tensor(np.array([-100.0, 0.0, 3.0], np.float32))
    (1.0 / (1.0 + (-x).exp())).sum().backward()
    assert np.isnan(to_numpy(x.grad)[0])
    x.grad = None
    x.sigmoid().sum().backward()
    xt = torch.tensor([-100.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    torch.sigmoid(xt).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), xt.grad.numpy(), rtol=1e-6, atol=1e-37)


@pytest.mark.parametrize("divisor", [2.0, -3.0, 1e-39, -2.5e-39, 0.0, -0.0, 1e38, np.float32(4.0), 7])
def test_division_by_a_number_matches_pytorch_even_where_its_reciprocal_overflows(divisor: float) -> None:
    """x / c is the Div op, as PyTorch divides (c rounded to float32): 1e-40 / 1e-39, 0 / 1e-39 and
    the huge and tiny divisors give PyTorch's values. (A backend without Div composes x * (1 / c),
    in two factors where the reciprocal overflows: `test_division_without_div_...`.)"""
    x_np = np.array([1e-40, 1.0, 0.0, -3.5, 1e30], np.float32)
    x, xt = Tensor(x_np), torch.tensor(x_np, requires_grad=True)
    with np.errstate(over="ignore", invalid="ignore"):  # the results hold inf and NaN, on purpose
        y, yt = x / divisor, xt / divisor
        y.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-6)


def test_div_gradient_of_a_tiny_divisor_is_pytorchs() -> None:
    """d/db = -grad * (out / b): (grad / b) * out overflowed to inf for a divisor below 2.9e-39,
    and 0 * inf made NaN where PyTorch's gradient is -0.0 or finite."""
    a_np, b_np = np.array([0.0, 1e-45, 1.0], np.float32), np.array([1e-39, 1e-39, 2.0], np.float32)
    a, b = Tensor(a_np), Tensor(b_np)
    at, bt = torch.tensor(a_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    (a / b).sum().backward()
    (at / bt).sum().backward()
    np.testing.assert_array_equal(to_numpy(b.grad), bt.grad.numpy())
    np.testing.assert_array_equal(to_numpy(a.grad), at.grad.numpy())


def test_division_is_correctly_rounded_as_pytorchs() -> None:
    """x * (1 / c) was 1 ulp off PyTorch's x / c in a third of the elements for c = 3."""
    x_np = rand((1000,), 5)
    for c in (3.0, 7.0, 10.0):
        assert np.array_equal((Tensor(x_np) / c).numpy(), (torch.tensor(x_np) / c).numpy())


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # 1 / 1e-39 overflows float32, on purpose
def test_division_without_div_composes_mul_and_handles_overflowing_reciprocals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Div is an optional op: on a backend without it x / c is x * (1 / c), in two factors where
    1 / c overflows float32, so 1e-40 / 1e-39 is still 0.1 and 0 / 1e-39 is 0."""
    ops = topgrad.get_backend().ops
    monkeypatch.delattr(ops, "Div")
    assert getattr(ops, "Div", None) is None
    x_np = np.array([1e-40, 1.0, 0.0, -3.5], np.float32)
    for c in (2.0, 1e-39, -2.5e-39):
        y = Tensor(x_np) / c
        assert y._op is not None and type(y._op).__name__ == "Mul"
        with np.errstate(over="ignore"):  # 1 / 1e-39 is inf in float32, as it should be
            expected = (x_np.astype(np.float64) / c).astype(np.float32)
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize(("shape_a", "shape_b"), [((2, 3), (4,)), ((2, 3, 4), (3, 3, 4)), ((5,), (2, 4))])
def test_binary_incompatible_shapes(op: str, shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> None:
    """Shapes that do not broadcast raise ValueError naming the op and both shapes."""
    top, _ = BINARY[op]
    with pytest.raises(ValueError, match=op) as info:
        top(Tensor(rand(shape_a, 0)), Tensor(rand(shape_b, 1)))
    message = str(info.value)
    assert mentions_shape(message, shape_a), message
    assert mentions_shape(message, shape_b), message


def test_subtracting_dates_is_a_type_error() -> None:
    """x - y negates y first, which numpy cannot do for dates: the error says what y holds."""
    with pytest.raises(TypeError, match=r"^x - y: y holds datetime64\[D\] values, dates or durations, not "):
        Tensor(rand((3,), 0)) - np.array(["2020-01-01"] * 3, dtype="datetime64[D]")


@pytest.mark.parametrize(("expr", "op"), [
    (lambda x: x + None, "Add"), (lambda x: None + x, "Add"), (lambda x: x * None, "Mul"),
    (lambda x: x + "1", "Add"), (lambda x: x * b"1", "Mul"),
])
def test_none_or_text_operand_is_a_type_error(expr: Callable[[Tensor], Tensor], op: str) -> None:
    """`x @ w + b` with an optional bias left None must not compute NaNs (numpy's None -> NaN)."""
    with pytest.raises(TypeError, match=op):
        expr(Tensor(rand((2, 3), 0)))


@pytest.mark.parametrize(("expr", "op"), [
    (lambda x: x * np.array([1j, 1j, 1j]), "Mul"), (lambda x: x * np.complex128(1j), "Mul"),
    (lambda x: x * 1j, "Mul"), (lambda x: x + np.array(["1", "2", "3"]), "Add"),
    (lambda x: x + np.array([1, None, 2], dtype=object), "Add"),
    (lambda x: x @ np.array([[1j], [1j], [1j]]), r"Linear( \(w\))?"),
    (lambda x: x * np.datetime64("2020-01-01"), "Mul"), (lambda x: x + np.timedelta64(1, "s"), "Add"),
])
def test_an_operand_of_complex_numbers_text_or_objects_is_a_type_error(
    expr: Callable[[Tensor], Tensor], op: str, backend_name: str
) -> None:
    """numpy took them: the imaginary part of a numpy complex dropped ([0, 0]), text parsed, None
    made NaN, x @ complex gave a complex Tensor, a date became its count of days. PyTorch keeps
    complex values complex and refuses text and dates: Topgrad's arrays are real, so numpy refuses
    each, saying what the operand holds; triton takes no raw numpy operand at all and says so."""
    says = ("operands must hold real numbers" if backend_name == "numpy"
            else r"(operands must be Tensors or real numbers|w must be a Tensor, got ndarray)")
    with pytest.raises(TypeError, match=rf"^{op}: {says}"):
        expr(Tensor(rand((2, 3), 0)))


@pytest.mark.parametrize("reduce", ["sum", "mean", "logsoftmax"])
@pytest.mark.parametrize("axis", [1.0, "0", (0, 1.5), True])
def test_an_axis_that_is_not_an_int_is_a_type_error(reduce: str, axis: object) -> None:
    expected = "axis must be one int" if reduce == "logsoftmax" else "axis must be None, an int or a tuple"
    with pytest.raises(TypeError, match=expected):
        getattr(Tensor(rand((2, 3), 0)), reduce)(axis=axis)


# ---- Sum and Mean ------------------------------------------------------------------------
def _torch_reduce(
    name: str, t: torch.Tensor, axis: int | tuple[int, ...] | None, keepdims: bool
) -> torch.Tensor:
    reduce = torch.sum if name == "sum" else torch.mean
    if t.ndim == 0:
        return reduce(t) if axis is None else reduce(t, dim=axis, keepdim=keepdims)
    dims = tuple(range(t.ndim)) if axis is None else axis
    return reduce(t, dim=dims, keepdim=keepdims)


@pytest.mark.parametrize("name", ["sum", "mean"])
@pytest.mark.parametrize(
    ("shape", "axis", "keepdims"),
    [
        ((3, 4), None, False),
        ((3, 4), None, True),
        ((3, 4), 0, False),
        ((3, 4), -1, True),
        ((2, 3, 4), (0, 2), False),
        ((2, 3, 4), (-1, -3), True),
        ((2, 3, 4), (0, 1, 2), False),
        ((5,), 0, False),
        ((), None, False),
        ((), 0, False),  # a 0-d tensor takes axis 0 or -1, as in PyTorch
        ((), -1, True),
        ((0,), None, False),  # empty: a sum of nothing is 0, a mean NaN, as in PyTorch
        ((0, 3), 0, False),
        ((0, 3), None, True),
        ((2, 0), 1, True),
        ((2, 0), 0, False),  # an empty result
    ],
)
def test_reduce_fixed(
    name: str, shape: tuple[int, ...], axis: int | tuple[int, ...] | None, keepdims: bool
) -> None:
    def top(x: Tensor) -> Tensor:
        return getattr(x, name)(axis=axis, keepdims=keepdims)

    check_against_torch(top, lambda t: _torch_reduce(name, t, axis, keepdims), [rand(shape, 6)])


@pytest.mark.parametrize("name", ["sum", "mean"])
def test_full_reduction_is_zero_dimensional(name: str) -> None:
    """A reduction over every axis without keepdims gives a 0-d array (shape ())."""
    out = getattr(Tensor(rand((3, 4), 0)), name)()
    assert out.shape == ()
    assert out.ndim == 0


@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data(), seed=seeds)
def test_reduce_drawn(name: str, data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(  # empty axes too: a sum over nothing is 0, a mean NaN, as in PyTorch
        any_shapes(0, 4, sizes.batch), label="shape"
    )
    ndim = len(shape)
    axis_choices = [st.none()]
    if ndim:
        axis_choices += [st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1)]
    axis = data.draw(st.one_of(*axis_choices), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")

    def top(x: Tensor) -> Tensor:
        return getattr(x, name)(axis=axis, keepdims=keepdims)

    check_against_torch(top, lambda t: _torch_reduce(name, t, axis, keepdims), [rand(shape, seed)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


# ---- ReLU ----------------------------------------------------------------------------------
@given(shape=any_shapes(0, 4, 5), seed=seeds, layout=layouts(1))
def test_relu_drawn(shape: tuple[int, ...], seed: int, layout: tuple[str, str]) -> None:
    check_against_torch(lambda x: x.relu(), torch.relu, [rand(shape, seed)], seed=seed, layout=layout)


@pytest.mark.parametrize("shape", [(2, 64, 64), (3, 50, 40), (3, 257, 171)])  # 8192 divides the first's size
def test_relu_large(shape: tuple[int, ...]) -> None:
    """Sizes where the numpy backend compares with a cached row of zeros or a full-size array."""
    check_against_torch(lambda x: x.relu(), torch.relu, [rand(shape, 7)])


def test_relu_gradient_is_zero_at_zero() -> None:
    x = np.array([[-1.0, 0.0, 2.0], [0.0, 3.0, -0.5]], dtype=np.float32)
    _, out = check_against_torch(lambda t: t.relu(), torch.relu, [x])
    xs = Tensor(x)
    xs.relu().backward(np.ones_like(x))
    assert_close(xs.grad, (x > 0).astype(np.float32), "relu gradient")
    assert_close(out, np.maximum(x, 0), "relu forward")


@pytest.mark.parametrize("size", [6, 3 * 8192, 5000, 2 * 65536 + 11])
def test_relu_nan_and_signed_zero_as_pytorch(size: int) -> None:
    """NaN passes through forward and backward, ReLU(-0.0) is -0.0 and gets no gradient, as in
    PyTorch; the upstream gradient's NaN stays where it flows (sizes that take each path)."""
    x, g = rand((size,), 5), rand((size,), 6)
    x[:6] = x[-6:] = [np.nan, -0.0, 0.0, 1.5, -2.0, 3.0]
    g[:6] = g[-6:] = [1.0, 2.0, 3.0, 4.0, 5.0, np.nan]
    xs = Tensor(x)
    out = xs.relu()
    out.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.relu(xt)
    ref.backward(torch.tensor(g))
    np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
    np.testing.assert_array_equal(np.signbit(to_numpy(out)), np.signbit(ref.detach().numpy()))
    np.testing.assert_array_equal(to_numpy(xs.grad), xt.grad.numpy())


@pytest.mark.parametrize("size", [6, 3 * 8192, 2 * 65536 + 11])
def test_relu_gradient_is_zero_where_inactive_even_for_nan_upstream(size: int) -> None:
    """Where ReLU's output is 0 its gradient is +0.0, whatever flows in: PyTorch selects, so a
    NaN, Inf or negative upstream gradient there gives +0.0, not 0 * NaN or -0.0 (small and
    large arrays, which may take different paths)."""
    x = rand((size,), 3)
    x[:6] = x[-6:] = [-1.0, 0.0, -0.0, 2.0, -3.0, 1.0]
    g = rand((size,), 4)
    g[:6] = g[-6:] = [np.nan, np.inf, -np.inf, 5.0, np.nan, np.nan]
    xs = Tensor(x)
    xs.relu().backward(g)
    xt = torch.tensor(x, requires_grad=True)
    torch.relu(xt).backward(torch.tensor(g))
    np.testing.assert_array_equal(to_numpy(xs.grad), xt.grad.numpy())
    np.testing.assert_array_equal(np.signbit(to_numpy(xs.grad)), np.signbit(xt.grad.numpy()))


# ---- LogSoftmax ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "axis"), [((4, 10), -1), ((4, 10), 0), ((2, 3, 5), 1), ((7,), 0), ((2, 3, 5), -3),
                        ((3, 700, 128), -1),  # over 1 MiB: numpy's row blocks, the last one ragged
                        ((128, 10), -1), ((4, 40, 3), -1), ((64, 32), -1)]  # numpy's narrow-row max
)
def test_logsoftmax_fixed(shape: tuple[int, ...], axis: int) -> None:
    check_against_torch(
        lambda x: x.logsoftmax(axis=axis), lambda t: torch.log_softmax(t, dim=axis), [rand(shape, 8)]
    )


def test_logsoftmax_default_axis_is_last() -> None:
    check_against_torch(lambda x: x.logsoftmax(), lambda t: torch.log_softmax(t, dim=-1), [rand((3, 6), 9)])


# ---- softmax: the backend's Softmax op (optional; both shipped backends have it), else LogSoftmax then Exp
@pytest.mark.parametrize(
    ("shape", "axis", "scale"),
    [((4, 10), -1, 1.0), ((4, 10), 0, 1.0), ((2, 3, 5), 1, 1.0), ((7,), 0, 1.0), ((2, 3, 5), -3, 1.0),
     ((3, 6), -1, 60.0), ((), 0, 1.0), ((3, 0), -1, 1.0), ((0, 3), 0, 1.0), ((3, 1), -1, 1.0),
     ((3, 700, 128), -1, 5.0),  # over 1 MiB: numpy's row blocks of 256 KiB, the last one ragged
     ((128, 10), -1, 5.0), ((70, 1), -1, 1.0)],  # numpy's narrow-row max
)
def test_softmax_fixed(shape: tuple[int, ...], axis: int, scale: float) -> None:
    """(float64 at 1e-10: test_float64.py.)"""
    check_against_torch(lambda x: x.softmax(axis=axis), lambda t: torch.softmax(t, dim=axis),
                        [rand(shape, 10, scale=scale)])


@pytest.mark.parametrize("name", ["softmax", "logsoftmax"])
@pytest.mark.parametrize("value", [0.5, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("upstream", [1.5, np.inf])
def test_softmax_of_a_0d_tensor_as_pytorch(name: str, value: float, upstream: float) -> None:
    """One value along its only axis: 1 (log: 0) and a zero gradient, NaN for a NaN or infinite
    value or upstream gradient, as PyTorch (numpy's 0-d shortcut gave 1 and 0 for NaN)."""
    x = Tensor(np.float32(value))
    out = getattr(x, name)()
    out.backward(np.float32(upstream))
    xt = torch.tensor(value, dtype=torch.float32, requires_grad=True)
    want = (torch.softmax if name == "softmax" else torch.log_softmax)(xt, 0)
    want.backward(torch.tensor(upstream, dtype=torch.float32))
    np.testing.assert_array_equal(to_numpy(out), want.detach().numpy())
    np.testing.assert_array_equal(to_numpy(x.grad), xt.grad.numpy())


def test_softmax_of_logits_near_a_thousand_and_minus_inf_entries() -> None:
    """Large logits do not overflow (the row's max is subtracted); a -inf entry (a mask) gets
    probability 0 and gradient 0, as in PyTorch."""
    x = rand((3, 6), 12, scale=20.0) + 1000.0
    check_against_torch(lambda t: t.softmax(), lambda t: torch.softmax(t, dim=-1), [x])
    masked = rand((3, 6), 13)
    masked[:, 4:] = -np.inf
    xs = Tensor(masked)
    out = xs.softmax()
    out.backward(rand((3, 6), 14))
    xt = torch.tensor(masked, requires_grad=True)
    want = torch.softmax(xt, dim=-1)
    want.backward(torch.tensor(rand((3, 6), 14)))
    np.testing.assert_allclose(to_numpy(out), want.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(to_numpy(xs.grad), xt.grad.numpy(), atol=1e-6)


def test_softmax_is_one_op_where_the_backend_has_one(backend_name: str) -> None:
    """The numpy backend's Softmax saves its output alone; a backend without the op composes
    LogSoftmax and Exp, which save one output each."""
    out = Tensor(rand((4, 5), 15)).softmax()
    ops = [] if out.op is None else [type(out.op).__name__, *(type(p).__name__ for p in out.op.parents)]
    fused = "Softmax" in topgrad.get_backend().ops.names()
    assert ops[:2] == (["Softmax", "Tensor"] if fused else ["Exp", "LogSoftmax"]), ops
    assert backend_name != "numpy" or fused


@pytest.mark.parametrize("axis", [(0, 1), None, 1.5])
def test_softmax_takes_one_int_axis(axis: Any) -> None:
    with pytest.raises(TypeError, match="Softmax: axis must be one int"):
        Tensor(rand((2, 3), 0)).softmax(axis)


LONG = 20_000
"""Longer than one block of the triton backend's row kernels (16,384 elements under the interpreter,
512 to 1,024 on a GPU): the drawn shapes never reach a second block."""


def _on_both_plans(backend_name: str, monkeypatch: pytest.MonkeyPatch, check: Callable[[], object]) -> None:
    """Run `check`; on triton again with the GPU's block sizes, which the interpreter can run too
    (more blocks per row, and long rows split over several programs and a second pass)."""
    check()
    if backend_name == "triton":
        from topgrad_triton import runtime

        monkeypatch.setattr(runtime, "interpreting", lambda: False)
        with warnings.catch_warnings():  # masked lanes' -inf - -inf, which quiet() silences no more
            warnings.simplefilter("ignore", RuntimeWarning)
            check()


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize(("axis", "handed"), [
    ([0, 2], (0, 2)), (-1, (2,)), ((2, -3), (0, 2)), (np.int64(1), (1,)), (None, None),
])
def test_reductions_hand_the_backend_none_or_sorted_non_negative_axes(
    name: str, axis: Any, handed: tuple[int, ...] | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend written from the guide (np.sum(x, axis=axis)) took a list axis as an error:
    the Tensor methods now normalize it, as PyTorch takes dim=[0, 2]."""
    op = getattr(topgrad.get_backend().ops, name.capitalize())
    forward, seen = op.forward, []

    def spy(self: Any, x: Any, axis: Any = None, keepdims: bool = False) -> Any:
        seen.append(axis)
        return forward(self, x, axis=axis, keepdims=keepdims)

    monkeypatch.setattr(op, "forward", spy)
    dims = (0, 1, 2) if axis is None else tuple(axis) if isinstance(axis, list) else axis
    ref = torch.amax if name == "max" else torch.sum if name == "sum" else torch.mean
    check_against_torch(lambda x: getattr(x, name)(axis=axis), lambda t: ref(t, dim=dims),
                        [rand((2, 3, 4), 14)])
    assert seen and all(a == handed for a in seen)


def test_a_0d_tensors_axis_0_reaches_the_backend_as_every_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    """normal_axes gives () for a 0-d array, which the backends refuse as ambiguous: None instead."""
    seen: list[Any] = []
    op = topgrad.get_backend().ops.Sum
    forward = op.forward
    monkeypatch.setattr(op, "forward", lambda self, x, axis=None, keepdims=False: (
        seen.append(axis), forward(self, x, axis=axis, keepdims=keepdims))[1])
    check_against_torch(lambda x: x.sum(axis=0), lambda t: t.sum(dim=0), [rand((), 15)])
    assert seen == [None]


@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@pytest.mark.parametrize(("shape", "axis"), [((2, LONG), 1), ((LONG, 3), 0), ((3, LONG), None)])
def test_reductions_over_more_than_a_kernel_block(
    name: str, shape: tuple[int, ...], axis: int | None, backend_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ref(t: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(t.ndim)) if axis is None else axis
        return torch.amax(t, dim=dims) if name == "max" else _torch_reduce(name, t, axis, False)

    _on_both_plans(backend_name, monkeypatch, lambda: check_against_torch(
        lambda x: getattr(x, name)(axis=axis), ref, [rand(shape, 12)]))


@pytest.mark.parametrize("name", ["logsoftmax", "softmax"])
@pytest.mark.parametrize("scale", [1.0, 60.0])
def test_logsoftmax_over_rows_longer_than_a_kernel_block(
    name: str, scale: float, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row's running maximum and sum carry over from block to block (rescaled when the
    maximum grows): large logits make a missed rescale show."""
    ref = torch.log_softmax if name == "logsoftmax" else torch.softmax
    _on_both_plans(backend_name, monkeypatch, lambda: check_against_torch(
        lambda x: getattr(x, name)(), lambda t: ref(t, dim=-1), [rand((2, LONG), 13, scale=scale)]))


@given(data=st.data(), seed=seeds)
def test_logsoftmax_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(1, 4, sizes.batch), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    check_against_torch(
        lambda x: x.logsoftmax(axis=axis),
        lambda t: torch.log_softmax(t, dim=axis),
        [rand(shape, seed)],
        seed=seed,
        layout=data.draw(layouts(1), label="layout"),
    )
    # x.softmax(axis) (the backend's Softmax op, or LogSoftmax then Exp) on the same draw
    check_against_torch(lambda x: x.softmax(axis), lambda t: torch.softmax(t, dim=axis), [rand(shape, seed)],
                        seed=seed, layout=data.draw(layouts(1), label="softmax's layout"))


@pytest.mark.parametrize("scale", [1e3, 1e4, -1e4])
def test_logsoftmax_is_stable_for_large_logits(scale: float) -> None:
    """Logits in the thousands overflow a naive exp; the op must stay finite and exact."""
    x = rand((4, 10), 10, scale=scale)
    _, out = check_against_torch(lambda t: t.logsoftmax(), lambda t: torch.log_softmax(t, dim=-1), [x])
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("offset", [1e4, 1e6, -1e6])
def test_logsoftmax_of_large_logits_close_together(offset: float) -> None:
    """max + log(sum) first loses the log in float32 once |max| >> it: logits of 1e4 that differ
    by ~1 were 3e-4 off on the triton backend, and 1e8 gave probabilities summing to 3."""
    x = (offset + rand((4, 10), 11)).astype(np.float32)
    check_against_torch(lambda t: t.logsoftmax(), lambda t: torch.log_softmax(t, dim=-1), [x])


@pytest.mark.parametrize(("shape", "axis"), [((2, 0), -1), ((0, 3), 0), ((0, 3), 1)])
def test_logsoftmax_of_an_empty_tensor_is_empty_as_in_pytorch(shape: tuple[int, ...], axis: int) -> None:
    check_against_torch(lambda t: t.logsoftmax(axis), lambda t: torch.log_softmax(t, dim=axis),
                        [np.zeros(shape, np.float32)])


@pytest.mark.parametrize("axis", [0, -1])
def test_logsoftmax_of_a_0d_tensor_is_zero_as_in_pytorch(axis: int) -> None:
    check_against_torch(lambda t: t.logsoftmax(axis), lambda t: torch.log_softmax(t, dim=axis),
                        [np.array(3.0, np.float32)])


@pytest.mark.parametrize("axis", [(0, -1), (0, 0)])
def test_a_0d_tensor_refuses_a_repeated_axis_as_pytorch_does(axis: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="repeated axis"):
        Tensor(np.array(3.0, np.float32)).sum(axis=axis)


def test_float64_division_by_a_tiny_number_matches_pytorch() -> None:
    """Where 1 / c overflows even float64 (|c| < 5.6e-309), the two-factor division applies too."""
    x_np = np.array([1e-300, 0.0, -2.0], np.float64)
    x = float64_tensor(x_np)
    with np.errstate(over="ignore"):
        got = (x / 1e-310).numpy()
    np.testing.assert_allclose(got, (torch.tensor(x_np) / 1e-310).numpy(), rtol=1e-12)


@pytest.mark.parametrize("axis", [(0, 1), None, 1.5])
def test_logsoftmax_takes_one_int_axis(axis: Any) -> None:
    with pytest.raises(TypeError, match="LogSoftmax: axis must be one int"):
        Tensor(rand((2, 3), 0)).logsoftmax(axis)


# ---- Linear and @ --------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("lead", "d", "m"), [((4,), 16, 8), ((2, 3), 5, 7), ((), 6, 3), ((1,), 1, 1)])
def test_linear_fixed(bias: bool, lead: tuple[int, ...], d: int, m: int) -> None:
    inputs = [rand((*lead, d), 11), rand((d, m), 12)]
    if bias:
        check_against_torch(
            lambda x, w, b: x.linear(w, b), lambda x, w, b: x @ w + b, [*inputs, rand((m,), 13)]
        )
    else:
        check_against_torch(lambda x, w: x.linear(w), lambda x, w: x @ w, inputs)


# (601, 64) @ (64, 64) and a (4, 151, 64) batch: the numpy backend's GEMMs go in OpenBLAS-small
# row blocks of at most 244 rows, made equal (`topgrad_numpy.ops.gemm`: 601 rows in blocks of
# 201), the last one partial, in both directions.
@pytest.mark.parametrize("lead", [(601,), (4, 151)])
def test_linear_in_gemm_blocks(lead: tuple[int, ...]) -> None:
    inputs = [rand((*lead, 64), 16), rand((64, 64), 17, scale=0.2), rand((64,), 18)]
    check_against_torch(lambda x, w, b: x.linear(w, b), lambda x, w, b: x @ w + b, inputs)


# products with a contraction of one (numpy's backend makes them a rank-one GEMM or, for rows
# past 1024 columns, a broadcast multiply): batch 1's weight gradient, a one-output head's dL/dx,
# a one-feature input's forward; and a batch of 4 whose dL/dx numpy computes as (w @ g^T)^T
@pytest.mark.parametrize(("lead", "d", "m"), [
    ((1,), 40, 30), ((1,), 12, 1100), ((50,), 40, 1), ((60,), 1, 1100), ((2, 1), 1, 1), ((1, 1), 20, 0),
    ((4,), 300, 256)])
def test_linear_with_one_row_column_or_feature(lead: tuple[int, ...], d: int, m: int) -> None:
    inputs = [rand((*lead, d), 19), rand((d, m), 20), rand((m,), 21)]
    check_against_torch(lambda x, w, b: x.linear(w, b), lambda x, w, b: x @ w + b, inputs)


@given(data=st.data(), seed=seeds)
def test_linear_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """Drawn batch shapes (B = 0 too), feature counts D and M (0 too: no input features make the
    output the bias, as in PyTorch; no outputs an empty one), biases, constants and layouts."""
    lead = data.draw(any_shapes(0, 2, sizes.batch), label="lead")
    d = data.draw(st.integers(0, sizes.dim), label="d")
    m = data.draw(st.integers(0, sizes.dim), label="m")
    inputs = [rand((*lead, d), seed), rand((d, m), seed + 1)]
    constants = data.draw(st.sampled_from([(), (0,), (1,)]), label="constants")  # an input batch, frozen w
    if data.draw(st.booleans(), label="bias"):
        inputs.append(rand((m,), seed + 2))
        check_against_torch(lambda x, w, b: x.linear(w, b), lambda x, w, b: x @ w + b, inputs, seed=seed,
                            constants=constants, layout=data.draw(layouts(3), label="layout"))
    else:
        check_against_torch(lambda x, w: x.linear(w), lambda x, w: x @ w, inputs, seed=seed,
                            constants=constants, layout=data.draw(layouts(2), label="layout"))


def test_linear_with_no_input_features_is_the_bias_as_in_pytorch() -> None:
    """x (2, 0) @ w (0, 3) + b is b in every row, on the backend under test; x and w get empty
    gradients and b the upstream gradient's column sums (exactly, as in PyTorch)."""
    b0 = np.array([1.0, -2.0, 0.5], np.float32)
    x, w, b = Tensor(np.zeros((2, 0), np.float32)), Tensor(np.zeros((0, 3), np.float32)), Tensor(b0)
    xt, wt = torch.zeros(2, 0, requires_grad=True), torch.zeros(0, 3, requires_grad=True)
    bt = torch.tensor(b0, requires_grad=True)
    y, yt = x.linear(w, b), F.linear(xt, wt.t(), bt)
    np.testing.assert_array_equal(to_numpy(y), yt.detach().numpy())
    g = rand((2, 3), 3)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    for top, ref in ((x, xt), (w, wt), (b, bt)):
        assert ref.grad is not None
        assert to_numpy(top.grad).shape == tuple(ref.grad.shape)
        np.testing.assert_array_equal(to_numpy(top.grad), ref.grad.numpy())


@pytest.mark.parametrize(("x_shape", "w_shape"), [((3, 4), (4, 5)), ((2, 3, 4), (4, 2))])
def test_matmul_operator(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> None:
    check_against_torch(lambda x, w: x @ w, lambda x, w: x @ w, [rand(x_shape, 14), rand(w_shape, 15)])


@pytest.mark.parametrize(("x_shape", "w_shape"), [((2, 3), (4, 5)), ((2, 3, 4), (3, 4))])
def test_linear_incompatible_shapes(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="Linear") as info:
        Tensor(rand(x_shape, 0)).linear(Tensor(rand(w_shape, 1)))
    message = str(info.value)
    assert mentions_shape(message, x_shape), message
    assert mentions_shape(message, w_shape), message


def test_linear_weight_in_pytorchs_layout_gets_the_transpose_hint() -> None:
    """nn.Linear's weight is (out, in); x.linear takes (in, out). Only a square one cannot be told."""
    hint = r"w looks like PyTorch's \(out, in\) layout: pass w\.T, of shape \(4, 5\)"
    with pytest.raises(ValueError, match=hint):
        Tensor(rand((2, 4), 0)).linear(Tensor(rand((5, 4), 1)))
    with pytest.raises(ValueError) as info:
        Tensor(rand((2, 4), 0)).linear(Tensor(rand((3, 5), 1)))
    assert "PyTorch" not in str(info.value)


def test_the_flatten_weight_recipe_gives_pytorchs_linear() -> None:
    """The README's (and the hint's) port of a Linear weight that follows a flatten: NHWC maps
    flatten in (H, W, C) order, PyTorch's NCHW ones in (C, H, W)."""
    C, H, W, out = 3, 2, 4, 5
    x, weight = rand((2, H, W, C), 0), rand((out, C * H * W), 1)
    want = F.linear(torch.from_numpy(x).permute(0, 3, 1, 2).flatten(1), torch.from_numpy(weight))
    w = weight.reshape(out, C, H, W).transpose(2, 3, 1, 0).reshape(-1, out)
    assert_close(Tensor(x).flatten().linear(Tensor(w)), want, "Linear after flatten")
    with pytest.raises(ValueError, match=r"a.reshape\(out, C, H, W\).transpose\(2, 3, 1, 0\)"):
        Tensor(x).flatten().linear(Tensor(weight))


@pytest.mark.parametrize("w", [[[1.0], [2.0], [3.0]], 2.0])
def test_linear_weight_must_be_a_tensor(w: object) -> None:
    with pytest.raises(TypeError, match="Linear: w must be a Tensor"):
        Tensor(rand((2, 3), 0)).linear(w)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [
    lambda x: x.layernorm([1.0] * 4, [0.0] * 4),
    lambda x: x.batchnorm(1.0, 0.0),
    lambda x: x.reshape(1, 1, 2, 4).conv2d([[[[1.0]]]]),
    lambda x: topgrad.attention(x.reshape(1, 2, 4).numpy().tolist(), x.reshape(1, 2, 4), x.reshape(1, 2, 4)),
], ids=["LayerNorm", "BatchNorm", "Conv2d", "Attention"])
def test_a_list_or_number_for_a_tensor_operand_is_named(call: Any) -> None:
    """A TypeError naming the op and the operand, not numpy's AttributeError from inside the backend."""
    with pytest.raises(TypeError, match=r"^[A-Za-z0-9]+: \w+ must be a Tensor, got a (list|float)"):
        call(Tensor(rand((2, 4), 0)))


def test_batchnorm_training_must_be_true_or_false() -> None:
    """'False' is a true string: it would train and update the running statistics."""
    with pytest.raises(TypeError, match="BatchNorm: training must be True or False, got 'False'"):
        Tensor(rand((2, 4), 0)).batchnorm(None, None, training="False")  # type: ignore[arg-type]


@pytest.mark.parametrize(("op", "call"), [
    ("Linear", lambda x, t: x.reshape(1, 3).linear(t.reshape(3, 1))),
    ("Conv2d", lambda x, t: x.reshape(1, 1, 3, 1).conv2d(t[:1].reshape(1, 1, 1, 1))),
    ("LayerNorm", lambda x, t: x.layernorm(t, None)),
    ("Attention", lambda x, t: topgrad.attention(x.reshape(1, 1, 3), t.reshape(1, 1, 3), x.reshape(1, 1, 3))),
    ("cat", lambda x, t: topgrad.cat([x, t])),
])
def test_a_torch_tensor_operand_is_named_as_one(backend_name: str, op: str, call: Any) -> None:
    """A torch tensor where a Tensor goes: on numpy the op names it `torch.Tensor` (it said 'must be
    a Tensor, got Tensor', or failed inside numpy's transpose); triton takes its own arrays."""
    x = Tensor(rand((3,), 0))
    t = torch.ones(3)
    if backend_name == "triton" and op != "cat":  # its own arrays: as a constant Tensor of the values
        want = call(x, Tensor(t.numpy(), requires_grad=False)).numpy()
        assert_close(call(x, t), want, f"{op} of a torch.Tensor")
        return
    with pytest.raises(TypeError, match=rf"{op}: .* must be a Tensor, got (a )?torch.Tensor"):
        call(x, t)


def test_an_array_at_a_tensor_is_linear_with_a_constant_x(backend_name: str) -> None:
    """`a @ w` with a numpy array on the left (Tensor.__rmatmul__) is Linear(a, w): w's gradient as
    PyTorch's; a backend that takes only its own arrays refuses `a` in Linear's name."""
    a, w0 = rand((2, 3), 16), rand((3, 4), 17)
    w = Tensor(w0)
    if backend_name != "numpy":
        with pytest.raises(TypeError, match="Linear"):
            a @ w
        return
    y = a @ w
    y.sum().backward()
    tw = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(a, dtype=torch.float64) @ tw
    ty.sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w.grad), tw.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_matmul_operator_error_names_the_product() -> None:
    """`x @ w` runs the Linear op; its error says so, so that a user who wrote `@` knows which."""
    with pytest.raises(ValueError, match=r"Linear \(x @ w\)") as info:
        Tensor(rand((2, 3), 0)) @ Tensor(rand((4, 5), 1))
    assert mentions_shape(str(info.value), (2, 3)) and mentions_shape(str(info.value), (4, 5))


# ---- Reshape and flatten ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "target"),
    [
        ((2, 3, 4), (6, 4)),
        ((2, 3, 4), (-1,)),
        ((2, 3, 4), (4, -1, 2)),
        ((6,), (1, 6, 1)),
        ((), (1,)),
        ((1,), ()),
    ],
)
def test_reshape_fixed(shape: tuple[int, ...], target: tuple[int, ...]) -> None:
    check_against_torch(lambda x: x.reshape(*target), lambda t: t.reshape(target), [rand(shape, 16)])


def test_reshape_accepts_a_tuple() -> None:
    check_against_torch(lambda x: x.reshape((3, 4)), lambda t: t.reshape(3, 4), [rand((2, 6), 0)])


@st.composite
def reshape_targets(draw: st.DrawFn, size: int, max_side: int = 4) -> tuple[int, ...]:
    """A shape with `size` elements, built from divisors, with at most one dimension as -1. For
    no elements: one dimension 0 among others up to `max_side`; it may be the -1 where the others
    are not 0 (a -1 beside a 0 could be anything: PyTorch and numpy refuse it)."""
    if size == 0:
        others = draw(st.lists(st.integers(0, max_side), max_size=3))
        dims0 = draw(st.permutations([0, *others]))
        if 0 not in others and draw(st.booleans()):
            dims0[dims0.index(0)] = -1
        return tuple(dims0)
    dims: list[int] = []
    left = size
    while left > 1 and len(dims) < 4:
        d = draw(st.sampled_from([k for k in range(1, left + 1) if left % k == 0]))
        dims.append(d)
        left //= d
    dims.append(left)
    dims = draw(st.permutations(dims))
    if draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


@given(data=st.data(), seed=seeds)
def test_reshape_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 4, sizes.batch), label="shape")
    target = data.draw(reshape_targets(math.prod(shape), sizes.batch), label="target")
    check_against_torch(
        lambda x: x.reshape(*target), lambda t: t.reshape(target), [rand(shape, seed)], seed=seed,
        layout=data.draw(layouts(1), label="layout"),
    )


# ---- Permute and .T (an op beyond the contract's table) -----------------------------------------
@pytest.mark.parametrize(
    ("shape", "axes"),
    [((2, 3, 4), (2, 0, 1)), ((3, 5), (1, 0)), ((2, 3, 4, 5), (0, 2, -3, 3)), ((4,), (0,)), ((), ()),
     ((2, 1, 3), (1, 0, 2)), ((0, 3), (1, 0)),
     # transposes large enough for numpy's copy in panels of the last axis (a ragged last panel)
     ((200, 150), (1, 0)), ((3, 70, 90), (2, 0, 1)), ((5, 40, 33, 7), (0, 3, 1, 2))],
)
def test_permute_fixed(shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    check_against_torch(lambda x: x.permute(*axes), lambda t: t.permute(axes), [rand(shape, 17)])


@given(data=st.data(), seed=seeds)
def test_permute_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(0, 5, sizes.batch), label="shape")
    axes = data.draw(st.permutations(range(len(shape))), label="axes")
    negative = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)), label="negative")
    axes = [a - len(shape) if neg else a for a, neg in zip(axes, negative)]
    check_against_torch(lambda x: x.permute(axes), lambda t: t.permute(axes), [rand(shape, seed)], seed=seed,
                        layout=data.draw(layouts(1), label="layout"))


@pytest.mark.parametrize("shape", [(3, 5), (4,), ()])
def test_transpose_property(shape: tuple[int, ...]) -> None:
    check_against_torch(lambda x: x.T, lambda t: t.permute(tuple(reversed(range(t.ndim)))), [rand(shape, 18)])


def test_heads_split_by_reshape_and_permute_as_in_pytorch() -> None:
    """Multi-head attention's split and merge of heads: (B, T, H*d) -> (B*H, T, d) and back,
    through Attention, against PyTorch."""
    b, t, h, d = 2, 5, 3, 4

    def heads(x: Any) -> Any:
        return x.reshape(b, t, h, d).permute(0, 2, 1, 3).reshape(b * h, t, d)

    def top(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = topgrad.attention(heads(q), heads(k), heads(v), causal=True)
        return out.reshape(b, h, t, d).permute(0, 2, 1, 3).reshape(b, t, h * d)

    def ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = torch_attention(heads(q), heads(k), heads(v), causal=True)
        return out.reshape(b, h, t, d).permute(0, 2, 1, 3).reshape(b, t, h * d)

    check_against_torch(top, ref, [rand((b, t, h * d), s) for s in (19, 20, 21)])


@pytest.mark.parametrize(
    ("axes", "error", "match"),
    [((0, 0, 1), ValueError, r"axes \(0, 0, 1\) are no ordering of the 3 axes of shape \(2, 3, 4\)"),
     ((0, 1), ValueError, "give each of 0 to 2 once"),
     ((0, 1, 3), ValueError, "no ordering"),
     ((0, 1, -4), ValueError, "no ordering"),
     ((0, 1.0, 2), TypeError, "axes must be ints"),
     ((0, True, 2), TypeError, "axes must be ints")],
)
def test_permute_refuses_what_orders_no_axes(axes: tuple[Any, ...], error: type, match: str) -> None:
    with pytest.raises(error, match=f"Permute: .*{match}"):
        Tensor(rand((2, 3, 4), 0)).permute(*axes)


def test_transpose_property_is_for_at_most_two_axes() -> None:
    x = Tensor(rand((2, 3, 4), 0))
    with pytest.raises(ValueError, match=r"T: a tensor of shape \(2, 3, 4\) has 3 axes; .*\(2, 1, 0\)"):
        _ = x.T


def test_permute_takes_a_tuple() -> None:
    x = Tensor(rand((2, 3, 4), 0))
    assert x.permute((2, 0, 1)).shape == x.permute(2, 0, 1).shape == (4, 2, 3)


@pytest.mark.parametrize(
    ("shape", "start"), [((2, 3, 4, 5), 1), ((2, 3, 4, 5), 2), ((2, 3, 4), 0), ((2, 3, 4), -1)]
)
def test_flatten(shape: tuple[int, ...], start: int) -> None:
    check_against_torch(
        lambda x: x.flatten(start), lambda t: torch.flatten(t, start_dim=start), [rand(shape, 17)]
    )


@given(data=st.data(), seed=seeds)
def test_flatten_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(any_shapes(1, 4, sizes.batch), label="shape")
    start = data.draw(st.integers(-len(shape), len(shape) - 1), label="start")
    check_against_torch(lambda x: x.flatten(start), lambda t: torch.flatten(t, start_dim=start),
                        [rand(shape, seed)], seed=seed, layout=data.draw(layouts(1), label="layout"))


def test_flatten_start_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="flatten: start 5"):
        Tensor(rand((2, 3), 0)).flatten(5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's warning for 0 * inf
def test_division_by_zero_gives_infinities_as_pytorch() -> None:
    x = [1.0, -2.0, 0.0]
    for zero in (0, 0.0, -0.0):
        np.testing.assert_array_equal((Tensor(x) / zero).numpy(), (torch.tensor(x) / zero).numpy())


def test_flatten_default_keeps_the_batch_axis() -> None:
    check_against_torch(lambda x: x.flatten(), lambda t: t.flatten(1), [rand((2, 3, 4, 5), 0)])


# ---- Conv2d (NHWC / HWIO; torch is NCHW / OIHW) ----------------------------------------------
def _conv(
    stride: int | tuple[int, int], padding: int | tuple[int, int]
) -> tuple[Callable[..., Tensor], Callable[..., torch.Tensor]]:
    """The same convolution in Topgrad (NHWC/HWIO) and in PyTorch (permuted to NCHW/OIHW)."""

    def top(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return x.conv2d(w, b, stride=stride, padding=padding)

    def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return torch_conv2d(x, w, b, stride=stride, padding=padding)

    return top, ref


@pytest.mark.parametrize(
    ("x_shape", "k", "cout", "stride", "padding", "bias"),
    [
        ((2, 8, 8, 3), (3, 3), 4, 1, 0, True),
        ((2, 8, 8, 3), (3, 3), 4, 1, 1, False),
        ((2, 9, 7, 2), (3, 3), 5, 2, 1, True),
        ((1, 6, 6, 1), (1, 1), 2, 1, 0, True),
        ((2, 7, 7, 3), (5, 5), 2, 2, 2, True),
        ((3, 5, 6, 2), (2, 3), 3, 3, 0, False),
        ((1, 4, 4, 2), (4, 4), 3, 1, 0, True),
        ((3, 4, 6, 1), (1, 1), 1, 2, 0, False),  # crashed PyTorch's oneDNN (see torch_conv2d)
        ((2, 5, 7, 2), (1, 1), 3, 3, 1, True),
        ((0, 5, 5, 2), (3, 3), 3, 1, 1, True),  # no images
        # stride 1 with far fewer outputs than inputs: dL/dw from x's patches (numpy's REUSE_BELOW)
        ((2, 8, 8, 5), (3, 3), 4, 1, 0, True),
        ((2, 9, 9, 6), (5, 5), 3, 1, 1, False),
    ],
)
def test_conv2d_fixed(
    x_shape: tuple[int, int, int, int], k: tuple[int, int], cout: int, stride: int, padding: int, bias: bool
) -> None:
    top, ref = _conv(stride, padding)
    inputs = [rand(x_shape, 18), rand((*k, x_shape[3], cout), 19, scale=0.5)]
    if bias:
        inputs.append(rand((cout,), 20))
    check_against_torch(top, ref, inputs)


@pytest.mark.parametrize(("stride", "padding"), [((2, 2), (1, 1)), ((2, 1), (1, 0)), ((1, 3), (0, 2))])
def test_conv2d_stride_and_padding_pairs(stride: tuple[int, int], padding: tuple[int, int]) -> None:
    """(h, w) pairs, equal or not, on every backend, as PyTorch takes them."""
    x, w = rand((2, 7, 6, 3), 21), rand((3, 2, 3, 4), 22, scale=0.5)

    def ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(nhwc_to_nchw(x), hwio_to_oihw(w), stride=stride, padding=padding)
        return out.permute(0, 2, 3, 1)

    check_against_torch(lambda x, w: x.conv2d(w, stride=stride, padding=padding), ref, [x, w])


@pytest.mark.parametrize(("padding", "k"), [("same", (3, 3)), ("same", (5, 1)), ("valid", (3, 2))])
def test_conv2d_named_padding(padding: str, k: tuple[int, int]) -> None:
    """PyTorch's padding='same' (odd kernels) and 'valid' give PyTorch's values and gradients."""
    x, w, b = rand((2, 7, 6, 3), 23), rand((*k, 3, 4), 24, scale=0.5), rand((4,), 25)

    def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.conv2d(nhwc_to_nchw(x), hwio_to_oihw(w), b, padding=padding).permute(0, 2, 3, 1)

    check_against_torch(lambda x, w, b: x.conv2d(w, b, padding=padding), ref, [x, w, b])


@pytest.mark.parametrize(("kwargs", "k", "match"), [
    (dict(padding="same", stride=2), (3, 3), r"padding='same' needs stride 1, as in PyTorch, got stride "
                                             r"\(2, 2\)"),
    (dict(padding="same"), (2, 3), r"padding=\(kh // 2, kw // 2\) gives one more output row than the image: "
                                   r"drop the output's first row to get PyTorch's result"),
    (dict(padding="same"), (4, 2), r"one more output row and column than the image: drop the output's "
                                   r"first row and first column"),
    (dict(padding="full"), (3, 3), r"padding must be an int >= 0, an \(h, w\) pair of them, 'valid' or "
                                   r"'same', got 'full'"),
])
def test_conv2d_named_padding_it_cannot_take(kwargs: dict[str, Any], k: tuple[int, int], match: str) -> None:
    """A strided 'same' is refused as PyTorch refuses it; an even kernel's 'same', which PyTorch pads
    on one side more than the other, says how to get the same result from symmetric padding."""
    x, w = Tensor(rand((1, 6, 6, 2), 26)), Tensor(rand((*k, 2, 3), 27))
    with pytest.raises(ValueError, match="^Conv2d: .*" + match):
        x.conv2d(w, **kwargs)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # PyTorch's own note
def test_conv2d_even_kernel_same_padding_as_the_message_says() -> None:
    """The even-kernel message's recipe, padding k // 2 and dropping the first row and column,
    gives PyTorch's padding='same' result."""
    x, w = rand((1, 6, 5, 2), 28), rand((4, 2, 2, 3), 29)
    ours = Tensor(x).conv2d(Tensor(w), padding=(2, 1))[:, 1:, 1:].numpy()
    theirs = F.conv2d(nhwc_to_nchw(torch.from_numpy(x)), hwio_to_oihw(torch.from_numpy(w)), padding="same")
    np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)


# Batches big enough that the numpy backend splits each GEMM into OpenBLAS-small row blocks
# (`topgrad_numpy.ops.gemm`; as many as blocks of at most 434 rows need, made equal), the last
# one partial: 605 rows of 144 in blocks of 303 for 16->16 (forward, dL/dx, and dL/dw summed
# block by block); stride 2 to 32 channels (its dL/dx goes phase by phase); 7569 tap-major rows
# of 9 in blocks of 3785 (at most 6944) for one input channel.
@pytest.mark.parametrize(
    ("x_shape", "cout", "stride"),
    [((5, 11, 11, 16), 16, 1), ((4, 16, 16, 16), 32, 2), ((9, 29, 29, 1), 16, 1)],
)
def test_conv2d_in_gemm_blocks(x_shape: tuple[int, int, int, int], cout: int, stride: int) -> None:
    top, ref = _conv(stride, 1)
    inputs = [rand(x_shape, 26), rand((3, 3, x_shape[3], cout), 27, scale=0.5), rand((cout,), 28)]
    check_against_torch(top, ref, inputs)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1), (2, 0), (3, 1)])
def test_conv2d_nan_in_x_reaches_the_weights_pytorchs_does(stride: int, padding: int) -> None:
    """A NaN pixel poisons only the outputs and weight-gradient taps that PyTorch's does:
    the numpy backend's dL/dw from the gradient's zero-padded patches would spread it to every
    tap (0 * NaN), so it recomputes dL/dw pairing x with the gradient as the forward did."""
    top, ref = _conv(stride, padding)
    x = rand((2, 7, 7, 4), 29)
    x[1, 0, 0, 2] = x[0, 6, 3, 1] = np.nan  # on the border: some taps never meet them
    check_against_torch(top, ref, [x, rand((3, 3, 4, 5), 30, scale=0.5)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("stride", "padding", "bad"), [(1, 0, np.nan), (1, 1, np.inf), (2, 0, -np.inf),
                                                       (2, 1, np.nan), (3, 1, np.inf)])
def test_conv2d_bad_kernel_tap_reaches_only_the_pixels_it_reads_as_in_pytorch(
    stride: int, padding: int, bad: float
) -> None:
    """A NaN or Inf kernel tap makes dL/dx non-finite only at the pixels that tap reads, as in
    PyTorch: the numpy backend's dL/dx as a correlation of the zero-padded gradient with the
    flipped kernel would spread it to every pixel (0 * NaN) from four input channels up."""
    top, ref = _conv(stride, padding)
    w = rand((3, 3, 4, 5), 31, scale=0.5)
    w[0, 0, 2, 1] = bad
    check_against_torch(top, ref, [rand((2, 7, 7, 4), 32), w])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(("kernel", "padding", "bad"), [((1, 2), (0, 3), np.nan), ((3, 3), 3, np.inf),
                                                       ((2, 2), (2, 0), -np.inf), ((1, 1), 1, np.nan)])
def test_conv2d_bad_gradient_outside_the_image_reaches_the_weights_as_in_pytorch(
    kernel: tuple[int, int], padding: int | tuple[int, int], bad: float
) -> None:
    """A NaN or Inf in the upstream gradient at an output whose window lies wholly in the padding
    (padding >= kernel) meets only the padding's zeros: PyTorch's dL/dw is NaN there (0 * NaN),
    and so is Topgrad's, whose stride-1 dL/dw otherwise never pairs that output with anything."""
    top, ref = _conv(1, padding)
    x, w = rand((2, 3, 4, 4), 41), rand((*kernel, 4, 3), 42, scale=0.5)
    out_shape = top(Tensor(x), Tensor(w)).shape
    g = rand(out_shape, 43)
    g[1, 0, 0, 2] = bad  # the first output: its window is all padding on one axis
    xs, ws = Tensor(x), Tensor(w)
    top(xs, ws).backward(g)
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    ref(xt, wt).backward(torch.tensor(g, dtype=torch.float64))
    for name, mine, theirs in (("x", xs.grad, xt.grad), ("w", ws.grad, wt.grad)):
        mine, theirs = to_numpy(mine), theirs.numpy()
        assert np.array_equal(np.isnan(mine), np.isnan(theirs)), f"dL/d{name}: NaN where PyTorch's is not"
        fine = np.isfinite(theirs)
        np.testing.assert_allclose(mine[fine], theirs[fine], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("padding", [0, 1])
def test_the_strided_1x1_reference_is_pytorchs_convolution(padding: int) -> None:
    """torch_conv2d subsamples instead of running oneDNN's strided 1x1 kernel; forward only (the
    bug is in its weight gradient) and 16 input channels (never the faulty path): same answer."""
    x, w = torch.from_numpy(rand((2, 7, 6, 16), 60)), torch.from_numpy(rand((1, 1, 16, 4), 61))
    direct = F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), stride=2, padding=padding)
    assert_close(torch_conv2d(x, w, stride=2, padding=padding), direct.permute(0, 2, 3, 1), "strided 1x1")


@pytest.mark.parametrize(
    ("x_shape", "stride", "constant"),
    [
        ((2, 8, 8, 3), 1, 0), ((2, 8, 8, 1), 1, 0), ((2, 9, 7, 2), 2, 0),
        ((2, 8, 8, 3), 1, 1), ((2, 9, 7, 2), 2, 1),
    ],
)
def test_conv2d_with_a_constant_input(x_shape: tuple[int, int, int, int], stride: int, constant: int) -> None:
    """An image batch (or a frozen kernel) made with requires_grad=False: the other gradients
    still match PyTorch, through every backward path (stride 1 and 2, one and several channels)."""
    top, ref = _conv(stride, 1)
    inputs = [rand(x_shape, 21), rand((3, 3, x_shape[3], 4), 22, scale=0.5), rand((4,), 23)]
    check_against_torch(top, ref, inputs, constants=(constant,))


@pytest.mark.parametrize(
    ("x_shape", "k", "stride", "padding"),
    [((1, 1, 1, 4), (1, 2), 2, 2), ((1, 1, 2, 4), (1, 1), 2, 1), ((1, 1, 1, 4), (1, 1), 2, 1),
     ((1, 1, 2, 4), (1, 1), 2, 0)],
)
def test_conv2d_stride_larger_than_the_input(
    x_shape: tuple[int, int, int, int], k: tuple[int, int], stride: int, padding: int
) -> None:
    """Cases hypothesis found: a tiny input with a wide padding and stride 2 has one phase of
    the stride, but only some kernel taps (or none) reach it; the input gradient path took that
    for the stride-1 case and failed."""
    top, ref = _conv(stride, padding)
    check_against_torch(top, ref, [rand(x_shape, 24), rand((*k, x_shape[3], 1), 25, scale=0.5)])


@given(data=st.data(), seed=seeds)
def test_conv2d_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """Drawn kernel sizes, strides, paddings (one int, or an (h, w) pair) and image sizes (every
    output at least 1x1)."""
    kh, kw = data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw")
    stride = data.draw(st.integers(1, 3) | st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    padding = data.draw(st.integers(0, 2) | st.tuples(st.integers(0, 2), st.integers(0, 2)), label="padding")
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    h = data.draw(st.integers(max(1, kh - 2 * ph), max(kh, sizes.image)), label="h")
    w = data.draw(st.integers(max(1, kw - 2 * pw), max(kw, sizes.image)), label="w")
    batch = data.draw(st.integers(1, sizes.batch), label="batch")
    cin = data.draw(st.integers(1, sizes.channels), label="cin")
    cout = data.draw(st.integers(1, sizes.channels), label="cout")
    bias = data.draw(st.booleans(), label="bias")
    constants = data.draw(st.sampled_from([(), (0,), (1,)]), label="constants")  # an image batch, frozen w
    top, ref = _conv(stride, padding)
    inputs = [rand((batch, h, w, cin), seed), rand((kh, kw, cin, cout), seed + 1, scale=0.5)]
    if bias:
        inputs.append(rand((cout,), seed + 2))
    check_against_torch(top, ref, inputs, seed=seed, constants=constants,
                        layout=data.draw(layouts(len(inputs)), label="layout"))


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "bad"),
    [
        ((8, 8, 3), (3, 3, 3, 4), (8, 8, 3)),  # no batch axis
        ((2, 8, 8, 3), (3, 3, 4), (3, 3, 4)),  # kernel of rank 3
        ((2, 8, 8, 3), (3, 3, 2, 4), (3, 3, 2, 4)),  # input channels differ
        ((2, 8, 8, 3), (3, 3, 3, 0), (3, 3, 3, 0)),  # no output channel (PyTorch refuses it too)
        ((2, 8, 8, 3), (0, 3, 3, 4), (0, 3, 3, 4)),  # an empty kernel
    ],
)
def test_conv2d_bad_shapes(x_shape: tuple[int, ...], w_shape: tuple[int, ...], bad: tuple[int, ...]) -> None:
    """Wrong ranks or channel counts raise ValueError naming Conv2d and the offending shape."""
    with pytest.raises(ValueError, match=r"(?i)conv") as info:
        Tensor(rand(x_shape, 0)).conv2d(Tensor(rand(w_shape, 1)))
    assert mentions_shape(str(info.value), bad), str(info.value)


def test_conv2d_names_pytorch_layouts() -> None:
    """A PyTorch (Cout, Cin, kh, kw) weight whose kh equals Cin passes the channel check; with
    its bias the bias check says what the weight looks like."""
    x = Tensor(rand((1, 6, 6, 3), 0))
    w_oihw, bias = Tensor(rand((16, 3, 3, 3), 1)), Tensor(rand((16,), 2))
    with pytest.raises(ValueError, match=re.escape(
            "w looks like PyTorch's (Cout, Cin, kh, kw) layout (Cin=3, as x's, and Cout=16, as the bias's): "
            "pass np.transpose(w, (2, 3, 1, 0)), of shape (3, 3, 3, 16)")):
        x.conv2d(w_oihw, bias, padding=1)
    w = Tensor(np.transpose(w_oihw.numpy(), (2, 3, 1, 0)))
    assert x.conv2d(w, bias, padding=1).shape == (1, 6, 6, 16)
    assert x.conv2d(w, bias, padding="same").shape == (1, 6, 6, 16)


@pytest.mark.parametrize("x_shape", [(2, 0, 8, 3), (2, 8, 0, 3), (1, 0, 0, 3)])
def test_conv2d_refuses_an_image_with_no_rows_or_columns(x_shape: tuple[int, ...]) -> None:
    """PyTorch refuses an empty height or width even where the padding makes room for the kernel;
    an empty batch is allowed (`test_conv2d_fixed`)."""
    with pytest.raises(RuntimeError):  # what PyTorch does with the same image (NCHW)
        F.conv2d(nhwc_to_nchw(torch.zeros(x_shape)), torch.zeros(4, 3, 3, 3), padding=2)
    with pytest.raises(ValueError, match="Conv2d") as info:
        Tensor(rand(x_shape, 0)).conv2d(Tensor(rand((3, 3, 3, 4), 1)), padding=2)
    assert mentions_shape(str(info.value), x_shape), str(info.value)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding"),
    [
        ((2, 5, 5, 3), (3, 3, 3, 4), 1, 0),
        ((2, 5, 5, 3), (3, 3, 3, 4), 2, 1),
        ((1, 4, 7, 2), (3, 2, 2, 1), (2, 3), (1, 0)),
        ((1, 2, 2, 1), (3, 3, 1, 1), 1, 0),  # the kernel is larger than the image
        ((1, 2, 2, 1), (3, 3, 1, 1), 1, 1),  # ... but the padding makes room
        ((1, 1, 1, 1), (5, 5, 1, 1), 3, 1),  # ... or not enough
        ((1, 3, 9, 1), (4, 1, 1, 2), (1, 4), (0, 0)),
        ((0, 4, 4, 2), (3, 3, 2, 2), 1, 1),  # an empty batch
        ((2, 4, 4, 0), (3, 3, 0, 2), 1, 1),  # no input channels
    ],
)
def test_conv_geometry_matches_pytorch(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: Any, padding: Any
) -> None:
    """Every backend's Conv2d takes its output size, or its refusal, from `conv_geometry`: the
    same as torch.nn.functional.conv2d's on the same image and kernel (the op's own output is
    checked on the backend under test)."""
    x = nhwc_to_nchw(torch.zeros(x_shape))
    w = torch.zeros(w_shape).permute(3, 2, 0, 1)
    try:
        expected: tuple[int, ...] | None = tuple(F.conv2d(x, w, stride=stride, padding=padding).shape[2:])
    except RuntimeError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError, match="Conv2d: the kernel is larger"):
            conv_geometry(x_shape, w_shape, None, stride, padding)
    else:
        assert conv_geometry(x_shape, w_shape, None, stride, padding)[2] == expected
        out = Tensor(np.zeros(x_shape, np.float32)).conv2d(Tensor(np.zeros(w_shape, np.float32)),
                                                            stride=stride, padding=padding)
        assert out.shape == (x_shape[0], *expected, w_shape[3])


def test_conv2d_given_pytorchs_layouts_says_which_layout_it_takes() -> None:
    """An NCHW image batch meets the kernel's Cin in the wrong axis: the error names NHWC."""
    with pytest.raises(ValueError, match="NHWC"):
        Tensor(rand((2, 3, 8, 8), 0)).conv2d(Tensor(rand((3, 3, 3, 4), 1)))


# ---- BatchNorm (over every axis but the last) -------------------------------------------------
def _channels_first(t: torch.Tensor) -> torch.Tensor:
    """NHWC to PyTorch's NCHW, contiguous: PyTorch's float32 on channels_last memory is itself
    ~1e-3 off float64 for BatchNorm far from zero, which as the yardstick's slack hid ours."""
    return t.movedim(-1, 1).contiguous() if t.ndim > 2 else t


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.movedim(1, -1) if t.ndim > 2 else t


# gamma and beta given (True) or None (PyTorch's weight=None, bias=None): each norm's four forms
AFFINE = [(True, True), (True, False), (False, True), (False, False)]


def _affine_inputs(affine: tuple[bool, bool], c: int, seed: int) -> list[np.ndarray]:
    """gamma and beta arrays, for those of `affine` that are given."""
    return [rand((c,), seed + k) for k, given_ in enumerate(affine, start=1) if given_]


def _gamma_beta(affine: tuple[bool, bool], given_: tuple[Any, ...]) -> tuple[Any, Any]:
    """(gamma, beta) from the inputs given, None for each of `affine` that is not."""
    it = iter(given_)
    return (next(it) if affine[0] else None), (next(it) if affine[1] else None)


def _check_batchnorm_training(
    x_shape: tuple[int, ...], momentum: float, eps: float, seed: int, steps: int = 1,
    affine: tuple[bool, bool] = (True, True), offset: float = 1.0,
    layout: str | tuple[str, ...] = "contiguous",
) -> None:
    """`steps` training-mode calls with fresh inputs; outputs, gradients and running stats vs torch.
    `affine`: whether gamma and beta are given (else None); `offset`: the inputs' mean; `layout`:
    of the inputs and the upstream gradient (`check_against_torch`)."""
    c = x_shape[-1]
    running_mean, running_var = Tensor.zeros(c), Tensor.ones(c)
    # PyTorch runs each step in float64 and in float32 (check_against_torch): one set of stats each
    dtypes = (torch.float64, torch.float32)
    torch_stats = {dt: (torch.zeros(c, dtype=dt), torch.ones(c, dtype=dt)) for dt in dtypes}
    for step in range(steps):

        def top(x: Tensor, *gb: Tensor) -> Tensor:
            return x.batchnorm(*_gamma_beta(affine, gb), running_mean=running_mean, running_var=running_var,
                               training=True, momentum=momentum, eps=eps)

        def ref(x: torch.Tensor, *gb: torch.Tensor) -> torch.Tensor:
            y = F.batch_norm(_channels_first(x), *torch_stats[x.dtype], *_gamma_beta(affine, gb), True,
                             momentum, eps)
            return _channels_last(y)

        s = seed + 10 * step
        inputs = [rand(x_shape, s, scale=2.0) + np.float32(offset), *_affine_inputs(affine, c, s)]
        check_against_torch(top, ref, inputs, seed=s, layout=layout)
        (exact_mean, exact_var), (single_mean, single_var) = torch_stats.values()
        assert_as_accurate(running_mean, exact_mean, single_mean, f"running mean after step {step}")
        assert_as_accurate(running_var, exact_var, single_var, f"running var after step {step}")
    assert running_mean.grad is None and running_var.grad is None, "running stats are not graph inputs"


# (4, 16, 16, 16) is 1024 rows of 16 channels: the numpy backend's per-channel passes run on a
# view two rows of 8192 wide (`wide`), as at the models' sizes; (9, 32, 32, 16) takes three
# cache-sized blocks of that view, the last one partial.
@pytest.mark.parametrize(
    "x_shape", [(8, 4), (4, 5, 5, 3), (3, 6, 2), (2, 1), (4, 16, 16, 16), (9, 32, 32, 16)]
)
def test_batchnorm_training(x_shape: tuple[int, ...]) -> None:
    _check_batchnorm_training(x_shape, momentum=0.1, eps=1e-5, seed=21)


def test_batchnorm_running_stats_over_steps() -> None:
    """Running statistics follow torch over several steps (unbiased variance, momentum 0.3)."""
    _check_batchnorm_training((6, 3, 3, 4), momentum=0.3, eps=1e-3, seed=22, steps=3)


def test_batchnorm_training_without_running_stats() -> None:
    def top(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.batchnorm(g, b)

    def ref(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _channels_last(F.batch_norm(_channels_first(x), None, None, g, b, True, 0.1, 1e-5))

    check_against_torch(top, ref, [rand((4, 3, 3, 5), 23), rand((5,), 24), rand((5,), 25)])


@pytest.mark.parametrize("affine", AFFINE[1:])
def test_batchnorm_without_gamma_or_beta(affine: tuple[bool, bool]) -> None:
    """gamma or beta None (PyTorch's weight=None, bias=None), in training (running statistics
    updated) and in eval mode: the output and the gradients of what is given."""
    _check_batchnorm_training((4, 3, 3, 5), momentum=0.2, eps=1e-5, seed=61, affine=affine)
    mean_np, var_np = rand((5,), 62), np.abs(rand((5,), 63)) + 0.5

    def top(x: Tensor, *gb: Tensor) -> Tensor:
        return x.batchnorm(*_gamma_beta(affine, gb), running_mean=Tensor(mean_np), running_var=Tensor(var_np),
                           training=False)

    def ref(x: torch.Tensor, *gb: torch.Tensor) -> torch.Tensor:
        stats = (torch.tensor(mean_np, dtype=x.dtype), torch.tensor(var_np, dtype=x.dtype))
        return _channels_last(F.batch_norm(_channels_first(x), *stats, *_gamma_beta(affine, gb), False))

    check_against_torch(top, ref, [rand((4, 3, 3, 5), 64), *_affine_inputs(affine, 5, 64)])


@pytest.mark.parametrize("given", ["running_mean", "running_var"])
def test_batchnorm_takes_both_running_statistics_or_neither(given: str) -> None:
    """As PyTorch's batch_norm: one statistic alone would be updated while the other is not kept."""
    stat = Tensor.zeros(3, requires_grad=False)
    with pytest.raises(ValueError, match=rf"got {given} without running_(mean|var): give both"):
        Tensor(rand((4, 3), 0)).batchnorm(None, None, **{given: stat})
    assert not np.any(to_numpy(stat)), "refused before anything was updated"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("where", [0, -1])  # in the first chunk of the statistics, or the last
@pytest.mark.parametrize("rows", [6, 18000, 40002])  # one chunk of the statistics, and several
def test_batchnorm_with_an_inf_keeps_pytorchs_running_statistics(rows: int, where: int) -> None:
    """An Inf in a channel: its running mean becomes Inf and its running variance NaN, as in
    PyTorch (the mean's correction by the deviations' sum must not turn the Inf into NaN); the
    other channel is untouched."""
    x = np.tile(np.arange(12, dtype=np.float32).reshape(6, 2), (rows // 6, 1))
    x[where, 0] = np.inf
    mean, var = Tensor.zeros(2, requires_grad=False), Tensor.ones(2, requires_grad=False)
    Tensor(x, requires_grad=False).batchnorm(None, None, running_mean=mean, running_var=var)
    torch_mean, torch_var = torch.zeros(2), torch.ones(2)
    F.batch_norm(torch.from_numpy(x), torch_mean, torch_var, training=True)
    np.testing.assert_allclose(to_numpy(mean), torch_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(var), torch_var.numpy(), rtol=1e-5)  # NaN where PyTorch's is


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_batchnorm_gradients_of_an_infinite_upstream_gradient_over_many_rows() -> None:
    """As above, over 8192 rows of 16 channels (several blocks and chunks of the statistics),
    the Inf where x lies between the first half's mean and the batch's: the infinite sums' signs
    follow x - mean, so any centre other than the batch's mean flips them (a review found that
    in a first-guess centring, since withdrawn)."""
    x = np.repeat(np.where(np.arange(8192) % 2 == 0, 1.0, -1.0)[:, None], 16, axis=1).astype(np.float32)
    x[4096:] += 0.5
    x[6000, 0] = 0.1
    g = np.zeros_like(x)
    g[6000, 0], g[1, 0] = np.inf, 1.0
    ones, zeros = np.ones(16, np.float32), np.zeros(16, np.float32)
    xt, gt, bt = Tensor(x), Tensor(ones), Tensor(zeros)
    (xt.batchnorm(gt, bt) * Tensor(g, requires_grad=False)).sum().backward()
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, ones, zeros))
    F.batch_norm(tx, None, None, tg, tb, True).backward(torch.tensor(g))
    for name, ours, theirs in (("x", xt, tx), ("gamma", gt, tg), ("beta", bt, tb)):
        np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_batchnorm_of_a_batch_sorted_by_value(offset: float) -> None:
    """A batch whose first rows are far from its mean (sorted, here): statistics merged from
    chunks as offsets from the first chunk's (Triton's) or centred on a first guess must not
    lose accuracy to it. Outputs within 1e-5 of the float64 answer, gradients as PyTorch's."""
    x = np.sort(rand((40000, 16), 73, scale=2.0), axis=0) + np.float32(offset)
    stats = {"running_mean": Tensor.zeros(16, requires_grad=False),
             "running_var": Tensor.ones(16, requires_grad=False)}
    out = Tensor(x, requires_grad=False).batchnorm(None, None, **stats)
    x64 = x.astype(np.float64)
    exact = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(to_numpy(out), exact, rtol=0, atol=1e-5)
    np.testing.assert_allclose(to_numpy(stats["running_mean"]), 0.1 * x64.mean(0), rtol=1e-6, atol=1e-6)

    def top(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.batchnorm(g, b)

    def ref(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, g, b, True)

    check_against_torch(top, ref, [x, rand((16,), 74), rand((16,), 75)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_batchnorm_gradients_of_an_infinite_upstream_gradient(training: bool, offset: float) -> None:
    """An Inf reaching BatchNorm's backward gives PyTorch's gradients, Inf and NaN in the same
    places: the mean's correction (0 when the mean needs none) must not make 0 * Inf = NaN."""
    x = np.tile(np.array([[1.0, 2.0], [2.0, -1.0], [3.0, 0.5], [5.0, 4.0]], np.float32), (3, 1)) + offset
    g = np.zeros_like(x)
    g[0, 0] = np.inf
    g[1, 1] = 1.0
    mean, var = x.mean(0).astype(np.float32), np.ones(2, np.float32)
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    stats = {"running_mean": Tensor(mean, requires_grad=False),
             "running_var": Tensor(var, requires_grad=False)}
    xt, gt, bt = Tensor(x), Tensor(ones), Tensor(zeros)
    (xt.batchnorm(gt, bt, training=training, **stats) * Tensor(g, requires_grad=False)).sum().backward()
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, ones, zeros))
    y = F.batch_norm(tx, torch.tensor(mean), torch.tensor(var), tg, tb, training=training)
    y.backward(torch.tensor(g))
    for name, ours, theirs in (("x", xt, tx), ("gamma", gt, tg), ("beta", bt, tb)):
        np.testing.assert_allclose(to_numpy(ours.grad), theirs.grad, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("offset", [100.0, -300.0])
def test_batchnorm_of_values_far_from_zero(offset: float) -> None:
    """Channels whose mean is hundreds of standard deviations from zero (a convolution's bias
    before the norm, as PyTorch initializes it): a float32 sum of their 12544 values misses the
    mean by up to ~1e-4 of a standard deviation, which every output then carries. Both backends
    correct the mean by the deviations' own sum. Checked against the float64 answer at 1e-5:
    `check_against_torch` would accept PyTorch's own float32 error here, ~1e-3 on NHWC memory."""
    x = rand((64, 14, 14, 16), 71, scale=2.0) + np.float32(offset)
    running_mean, running_var = Tensor.zeros(16, requires_grad=False), Tensor.ones(16, requires_grad=False)
    out = Tensor(x, requires_grad=False).batchnorm(None, None, running_mean=running_mean,
                                                   running_var=running_var)
    x64 = x.astype(np.float64).reshape(-1, 16)
    exact = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(to_numpy(out).reshape(-1, 16), exact, rtol=0, atol=1e-5)
    np.testing.assert_allclose(to_numpy(running_mean), 0.1 * x64.mean(0), rtol=1e-6)
    _check_batchnorm_training((8, 6, 6, 4), momentum=0.1, eps=1e-5, seed=72, offset=offset)  # the gradients
    # and at the size where the mean's float32 error matters: backward's correction for it was
    # untested (an audit deleted it and every test passed; off 2.2x the tolerance at offset 100)
    _check_batchnorm_training((64, 14, 14, 16), momentum=0.1, eps=1e-5, seed=73, offset=offset)


@pytest.mark.parametrize(("shape", "seed"), [((2, 4), 203), ((2, 1), 635)])
def test_batchnorm_two_rows_that_nearly_agree(shape: tuple[int, int], seed: int) -> None:
    """Cases hypothesis found: two rows, one channel whose values nearly agree (a tiny variance
    around a mean of ~1). Writing dL/dx as x * coef - mean * coef loses digits to cancellation
    there; the centred form matches PyTorch. In the second, dL/dx (~15) is 1.2e-4 off the float64
    answer in any float32 algorithm, PyTorch's included (`helpers.assert_as_accurate`)."""
    _check_batchnorm_training(shape, momentum=0.1, eps=1e-5, seed=seed)


@pytest.mark.parametrize("x_shape", [(8, 4), (3, 4, 4, 2)])
def test_batchnorm_eval_uses_running_stats(x_shape: tuple[int, ...]) -> None:
    """In eval mode the running statistics normalize and stay unchanged."""
    c = x_shape[-1]
    mean_np, var_np = rand((c,), 26), np.abs(rand((c,), 27)) + 0.5
    running_mean, running_var = Tensor(mean_np), Tensor(var_np)

    def top(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.batchnorm(g, b, running_mean=running_mean, running_var=running_var, training=False)

    def ref(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = F.batch_norm(
            _channels_first(x), torch.tensor(mean_np, dtype=x.dtype), torch.tensor(var_np, dtype=x.dtype),
            g, b, False, 0.1, 1e-5,
        )
        return _channels_last(y)

    check_against_torch(top, ref, [rand(x_shape, 28), rand((c,), 29), rand((c,), 30)])
    assert_close(running_mean, mean_np, "running mean in eval", rtol=0, atol=0)
    assert_close(running_var, var_np, "running var in eval", rtol=0, atol=0)


def test_batchnorm_reads_running_statistics_a_tensor_holds_as_a_strided_view() -> None:
    """A constant Tensor keeps sharing the array it was made from, a view with steps too
    (`Tensor(a[::2])`); triton's kernels read such statistics as dense memory, at the wrong
    offsets: eval output and the training update were silently wrong there."""
    x_np = rand((6, 4), 71)
    base_mean, base_var = np.arange(8, dtype=np.float32), np.arange(1, 9, dtype=np.float32)
    want_mean, want_var = torch.tensor(base_mean[::2]), torch.tensor(base_var[::2])
    want = F.batch_norm(torch.tensor(x_np), want_mean, want_var, training=False).numpy()

    def strided(values: np.ndarray) -> Tensor:
        return Tensor(Tensor(values, requires_grad=False).data[::2], requires_grad=False)

    got = Tensor(x_np).batchnorm(None, None, running_mean=strided(base_mean), running_var=strided(base_var),
                                 training=False)
    assert_close(got, want, "eval with strided statistics")
    mean, var = strided(base_mean), strided(base_var)
    Tensor(x_np).batchnorm(None, None, running_mean=mean, running_var=var, momentum=0.3)
    F.batch_norm(torch.tensor(x_np), want_mean, want_var, training=True, momentum=0.3)
    assert_close(mean, want_mean.numpy(), "running mean updated from strided statistics")
    assert_close(var, want_var.numpy(), "running var updated from strided statistics")


def test_batchnorm_eval_keeps_the_mean_it_normalized_with_for_backward() -> None:
    """Eval mode with raw numpy statistics: a training call that updates them in place before
    backward must not change the gradients (triton saved the caller's array, and gamma's gradient
    came out with the new mean; PyTorch refuses the update through its version counter)."""
    x_np = rand((6, 3), 72)
    mean_np, var_np = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    gamma = Tensor(np.ones(3, np.float32))
    y = Tensor(x_np).batchnorm(gamma, None, running_mean=mean_np, running_var=var_np, training=False)
    loss = (y**2).sum()
    Tensor(x_np * 3 + 1).batchnorm(None, None, running_mean=mean_np, running_var=var_np)  # updates them
    assert not np.array_equal(mean_np, np.full(3, 0.5, np.float32))
    loss.backward()
    g = torch.ones(3, dtype=torch.float64, requires_grad=True)
    stats = torch.full((3,), 0.5, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)
    y_ref = F.batch_norm(torch.tensor(x_np, dtype=torch.float64), *stats, g, None, training=False)
    (y_ref**2).sum().backward()
    assert_close(gamma.grad, g.grad.numpy(), "gamma's gradient after the statistics moved")


@given(data=st.data(), seed=seeds)
def test_batchnorm_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=sizes.batch), label="shape")
    if math.prod(shape[:-1]) < 2:  # torch needs two values per channel to train
        shape = (2, *shape[1:])
    momentum = data.draw(st.sampled_from([0.1, 0.5, 0.9]), label="momentum")
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]), label="eps")  # 0.5: comparable to the variance
    affine = data.draw(st.sampled_from(AFFINE), label="gamma, beta given")
    layout = data.draw(layouts(1 + sum(affine)), label="layout")
    _check_batchnorm_training(shape, momentum=momentum, eps=eps, seed=seed, affine=affine, layout=layout)


@given(data=st.data(), seed=seeds)
def test_batchnorm_eval_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    """Eval mode normalizes with the running statistics and eps, whatever the batch shape."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=sizes.batch), label="shape")
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.1]), label="eps")
    affine = data.draw(st.sampled_from(AFFINE), label="gamma, beta given")
    c = shape[-1]
    mean_np, var_np = rand((c,), seed + 3), np.abs(rand((c,), seed + 4, scale=0.1)) + 0.01  # near eps

    def top(x: Tensor, *gb: Tensor) -> Tensor:
        return x.batchnorm(*_gamma_beta(affine, gb), running_mean=Tensor(mean_np), running_var=Tensor(var_np),
                           training=False, eps=eps)

    def ref(x: torch.Tensor, *gb: torch.Tensor) -> torch.Tensor:
        stats = (torch.tensor(mean_np, dtype=x.dtype), torch.tensor(var_np, dtype=x.dtype))
        y = F.batch_norm(x.reshape(-1, c), *stats, *_gamma_beta(affine, gb), False, 0.1, eps)
        return y.reshape(x.shape)

    check_against_torch(top, ref, [rand(shape, seed), *_affine_inputs(affine, c, seed)], seed=seed,
                        layout=data.draw(layouts(1 + sum(affine)), label="layout"))


# ---- LayerNorm -------------------------------------------------------------------------------
# (2, 128, 64): 256 rows, so numpy's backward takes two row blocks, each on an 8192-wide view.
@pytest.mark.parametrize(
    ("shape", "eps"), [((4, 16), 1e-5), ((2, 3, 8), 1e-5), ((5,), 1e-3), ((3, 1), 1e-5), ((2, 128, 64), 1e-5)]
)
def test_layernorm_fixed(shape: tuple[int, ...], eps: float) -> None:
    d = shape[-1]

    def top(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.layernorm(g, b, eps=eps)

    def ref(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (d,), g, b, eps)

    check_against_torch(top, ref, [rand(shape, 31, scale=3.0), rand((d,), 32), rand((d,), 33)])


@pytest.mark.parametrize("affine", AFFINE[1:])
@pytest.mark.parametrize("shape", [(2, 3, 8), (4, 1)])
def test_layernorm_without_gamma_or_beta(shape: tuple[int, ...], affine: tuple[bool, bool]) -> None:
    """gamma or beta None (PyTorch's weight=None, bias=None): the output and the gradients of
    what is given."""
    d = shape[-1]
    check_against_torch(lambda x, *gb: x.layernorm(*_gamma_beta(affine, gb)),
                        lambda x, *gb: F.layer_norm(x, (d,), *_gamma_beta(affine, gb)),
                        [rand(shape, 65, scale=3.0), *_affine_inputs(affine, d, 65)])


def test_a_constant_row_under_a_subnormal_eps_has_finite_layernorm_gradients() -> None:
    """Variance 0 and eps = 1e-40: 1/std = 1e20, whose square (the backward's s^2 step) overflows
    float32, and times a 0 gave NaN for the whole row; PyTorch's float32 gradients are ~7e19."""
    x = rand((4, 4), 130)
    x[1] = 0.5  # row 1 constant
    tensors, _ = check_against_torch(lambda x, g, b: x.layernorm(g, b, eps=1e-40),
                                     lambda x, g, b: F.layer_norm(x, (4,), g, b, 1e-40),
                                     [x, rand((4,), 131), rand((4,), 132)])
    assert np.isfinite(to_numpy(tensors[0].grad)).all()


def test_a_constant_channel_under_a_subnormal_eps_has_finite_batchnorm_gradients() -> None:
    """BatchNorm's coefficient scale * invstd * dL/dgamma: scale * invstd = gamma / eps overflows
    float32 for eps = 1e-40 while dL/dgamma is 0 (x-hat is 0), so the channel's dL/dx was NaN.
    It is gamma / sqrt(eps) * (g - mean(g)). PyTorch is no reference here: its CPU batch_norm
    gives such a channel output 0, not beta, for any eps under ~1e-38, in float64 too."""
    x, gamma, beta, g = rand((4, 4), 130), rand((4,), 131), rand((4,), 132), rand((4, 4), 133)
    x[:, 2] = 0.5  # channel 2 constant
    xt = Tensor(x)
    out = xt.batchnorm(Tensor(gamma), Tensor(beta), training=True, eps=1e-40)
    out.backward(g)
    assert np.allclose(to_numpy(out)[:, 2], beta[2]), to_numpy(out)
    want = gamma[2].astype(np.float64) / np.sqrt(1e-40) * (g[:, 2] - g[:, 2].astype(np.float64).mean())
    np.testing.assert_allclose(to_numpy(xt.grad)[:, 2], want, rtol=1e-4)


def test_layernorm_row_with_a_tiny_spread() -> None:
    """A draw `nox -s soak` found: a row of three values near -1.7 whose spread is 1/280 of its
    mean. dL/dx reaches ~250 there, and PyTorch's float32 answer is 1.2e-4 (relative) off the
    float64 one, Topgrad's 2e-5: the test passes since PyTorch's float64 is the reference."""
    check_against_torch(
        lambda x, g, b: x.layernorm(g, b),
        lambda x, g, b: F.layer_norm(x, (3,), g, b, 1e-5),
        [rand((3, 3, 3, 3), 124, scale=2.0), rand((3,), 125), rand((3,), 126)],
        seed=124,
    )


@pytest.mark.parametrize(("shape", "offset"), [((8, 4096), 1000.0), ((32, 1024), -1000.0)])
def test_layernorm_of_rows_far_from_zero(shape: tuple[int, int], offset: float) -> None:
    """Rows whose mean is a thousand standard deviations from zero: a float32 row sum misses the
    mean by a few ulps of it, which every output and dL/dgamma carry (the numpy backend's GEMV
    sums: 3x PyTorch's float32 error at 4096 features, 1e-4 of dL/dgamma). Each backend must be
    at least as accurate as PyTorch's float32 (contiguous, its best path), against float64; the
    numpy backend corrects such a row's mean by the deviations' own sum and is ~100x better."""
    d = shape[-1]
    x, gamma, up = rand(shape, 34) + np.float32(offset), rand((d,), 35), rand(shape, 36)
    top_gamma = Tensor(gamma)
    out = Tensor(x, requires_grad=False).layernorm(top_gamma, None)
    out.backward(up)

    def torch_layernorm(dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
        g = torch.tensor(gamma, dtype=dtype, requires_grad=True)
        y = F.layer_norm(torch.tensor(x, dtype=dtype), (d,), g, None, 1e-5)
        y.backward(torch.tensor(up, dtype=dtype))
        assert g.grad is not None
        return y.detach().double().numpy(), g.grad.double().numpy()

    exact, single = torch_layernorm(torch.float64), torch_layernorm(torch.float32)
    for what, ours, want, theirs in zip(("output", "dL/dgamma"), (to_numpy(out), to_numpy(top_gamma.grad)),
                                        exact, single):
        error, torch_error = (np.abs(np.asarray(a, np.float64) - want).max() / np.abs(want).max()
                              for a in (ours, theirs))
        assert error <= max(1e-6, 1.5 * torch_error), f"{what}: {error:.1e} off, PyTorch's {torch_error:.1e}"


def test_layernorm_of_a_constant_row_far_from_zero_is_zero() -> None:
    """A constant row (a padding position) far from zero, with BERT's eps of 1e-12: its corrected
    variance rounds to about zero, and must not go below it (the square root would give NaN);
    the output is 0, as PyTorch's, and the gradients finite."""
    x = np.repeat(np.array([[116354.34375], [1e7 + 3.0]], np.float32), 1000, axis=1)
    x[1, :500] += 64.0  # a second row far from zero that is not constant
    t = Tensor(x)
    out = t.layernorm(None, None, eps=1e-12)
    want = F.layer_norm(torch.from_numpy(x), (1000,), eps=1e-12).numpy()
    np.testing.assert_array_equal(to_numpy(out)[0], want[0])
    np.testing.assert_allclose(to_numpy(out)[1], want[1], rtol=0, atol=1e-4)
    out.backward(rand(x.shape, 37))
    assert np.isfinite(to_numpy(t.grad)).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Triton's interpreter computes in numpy; not Topgrad
def test_layernorm_over_one_feature_has_no_input_gradient() -> None:
    """Over one feature x-hat is 0, so dL/dx = s * (g * gamma - mean(g * gamma)) is exactly 0
    (NaN where the upstream gradient is NaN), the float64 answer. The general formula rounded
    s * g * gamma twice and left ~1e-4 where s = 1/sqrt(eps) is large (a soak run found it)."""
    x = np.array([[1.12], [0.82], [-0.88], [3e4], [2.0]], np.float32)
    up = np.array([[0.8], [0.3], [-1.3], [0.9], [np.nan]], np.float32)
    gamma, beta = np.array([0.3], np.float32), np.array([0.25], np.float32)
    t, g, b = Tensor(x), Tensor(gamma), Tensor(beta)
    t.layernorm(g, b).backward(up)
    xt, gt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, gamma, beta))
    F.layer_norm(xt, (1,), gt, bt).backward(torch.tensor(up, dtype=torch.float64))
    np.testing.assert_array_equal(to_numpy(t.grad), [[0.0], [0.0], [0.0], [0.0], [np.nan]])
    np.testing.assert_allclose(to_numpy(t.grad), xt.grad.numpy(), rtol=0, atol=1e-9)  # float64 rounds too
    for ours, theirs in ((g.grad, gt.grad), (b.grad, bt.grad)):
        np.testing.assert_allclose(to_numpy(ours), theirs.numpy(), rtol=1e-5, equal_nan=True)


@given(data=st.data(), seed=seeds)
def test_layernorm_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=sizes.batch), label="lead")
    # With two features every normalized row is ±1 and the x gradient is pure cancellation
    # (zero but for eps): float32 round-off decides it, so draws start at three features.
    d = data.draw(st.integers(3, sizes.dim), label="d")
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]), label="eps")  # 0.5: comparable to the variance
    affine = data.draw(st.sampled_from(AFFINE), label="gamma, beta given")
    check_against_torch(
        lambda x, *gb: x.layernorm(*_gamma_beta(affine, gb), eps=eps),
        lambda x, *gb: F.layer_norm(x, (d,), *_gamma_beta(affine, gb), eps),
        [rand((*lead, d), seed, scale=2.0), *_affine_inputs(affine, d, seed)],
        seed=seed,
        layout=data.draw(layouts(1 + sum(affine)), label="layout"),
    )


# ---- Attention ---------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("b", "t", "d"), [(2, 5, 8), (1, 1, 4), (3, 7, 3), (2, 16, 16)])
def test_attention_fixed(causal: bool, b: int, t: int, d: int) -> None:
    check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: torch_attention(q, k, v, causal=causal),
        [rand((b, t, d), 34), rand((b, t, d), 35), rand((b, t, d), 36)],
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("t", "s"), [(3, 5), (6, 2)])
def test_attention_with_another_key_length(t: int, s: int, causal: bool) -> None:
    """Keys and values may have their own length S; causal masks are aligned top-left, query i
    seeing keys 0..i, as torch's scaled_dot_product_attention(is_causal=True)."""
    check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: torch_attention(q, k, v, causal=causal),
        [rand((2, t, 4), 46), rand((2, s, 4), 47), rand((2, s, 4), 48)],
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("d", "dv"), [(8, 3), (4, 20), (20, 4)])
def test_attention_with_another_value_width(d: int, dv: int, causal: bool) -> None:
    """Values may have their own width Dv (the output is (B, T, Dv)), as in PyTorch's
    scaled_dot_product_attention; the scale stays 1/sqrt(D) of the queries and keys."""
    check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: torch_attention(q, k, v, causal=causal),
        [rand((2, 5, d), 49), rand((2, 6, d), 50), rand((2, 6, dv), 51)],
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("q_shape", "k_shape", "v_shape"), [
    ((2, 3, 0), (2, 4, 0), (2, 4, 2)),  # no features: every score 0, the output is v's mean
    ((1, 0, 3), (1, 0, 3), (1, 0, 3)),  # no queries and no keys: an empty output
    ((1, 0, 3), (1, 2, 3), (1, 2, 3)),  # no queries
])
def test_attention_with_empty_axes(q_shape, k_shape, v_shape, causal: bool) -> None:
    check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: torch_attention(q, k, v, causal=causal),
        [rand(q_shape, 52), rand(k_shape, 53), rand(v_shape, 54)],
    )


def test_attention_default_is_not_causal() -> None:
    check_against_torch(
        topgrad.attention, torch_attention, [rand((2, 4, 4), 37), rand((2, 4, 4), 38), rand((2, 4, 4), 39)]
    )


def test_causal_attention_ignores_the_future() -> None:
    """Changing the last token's keys and values leaves earlier causal outputs unchanged."""
    q, k, v = rand((1, 4, 3), 40), rand((1, 4, 3), 41), rand((1, 4, 3), 42)
    k2, v2 = k.copy(), v.copy()
    k2[:, -1], v2[:, -1] = 5.0, -5.0
    first = topgrad.attention(Tensor(q), Tensor(k), Tensor(v), causal=True).numpy()
    second = topgrad.attention(Tensor(q), Tensor(k2), Tensor(v2), causal=True).numpy()
    np.testing.assert_allclose(first[:, :-1], second[:, :-1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(first[:, -1], second[:, -1])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_nan_value_reaches_every_causal_row_that_sees_it() -> None:
    """A NaN in v at key 80 of 100: every query row that sees key 80 is NaN, and a row left finite
    has the answer without that value. Which of rows 0-79 are NaN differs (0 * NaN): PyTorch's CPU
    kernel and the numpy backend make all of them NaN, the triton backend's flash kernel only
    those in or after row 80's block of rows (README, "Ops let Inf and NaN through")."""
    q, k, v = (rand((1, 100, 4), 46 + i) for i in range(3))
    v[0, 80, 1] = np.nan
    out = topgrad.attention(Tensor(q), Tensor(k), Tensor(v), causal=True).numpy()
    clean = v.copy()
    clean[0, 80, 1] = 0.0
    ref = torch_attention(*(torch.tensor(a, dtype=torch.float64) for a in (q, k, clean)), causal=True)
    assert np.isnan(out[0, 80:]).any(axis=1).all(), "a row that sees the NaN value"
    fine = np.isfinite(out)
    np.testing.assert_allclose(out[fine], ref.numpy()[fine], rtol=1e-4, atol=1e-4)


def test_attention_is_stable_for_large_scores() -> None:
    q = rand((2, 5, 4), 43, scale=20.0)
    _, out = check_against_torch(
        topgrad.attention, torch_attention, [q, rand((2, 5, 4), 44), rand((2, 5, 4), 45)]
    )
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize(("row", "t", "s", "causal"), [("query", 9, 9, False), ("query", 17, 17, True),
                                                       ("key", 9, 12, False), ("one key", 3, 1, False)])
def test_attention_gradients_where_a_softmax_row_is_one_hot(row: str, t: int, s: int, causal: bool) -> None:
    """A query row of norm ~1e4 makes its probabilities one-hot (so does a single key): there dq and
    the key's dk are sums whose exact terms cancel to 0. The triton kernels took each row's
    sum_j p_ij dp_ij as rowsum(dO * O), which rounds apart from dp: the noise, times the large row,
    put dk off by 4e-3 (dq, for a large key row); PyTorch's float32 is off by 1e-7."""
    q, k, v = rand((2, t, 8), 46), rand((2, s, 8), 47), rand((2, s, 8), 48)
    if row == "query":
        q[:, 3] *= 1e4
    elif row == "key":
        k[:, 5] *= 300.0
    top = lambda q, k, v: topgrad.attention(q, k, v, causal=causal)  # noqa: E731
    ref = lambda q, k, v: torch_attention(q, k, v, causal=causal)  # noqa: E731
    check_against_torch(top, ref, [q, k, v])


@pytest.mark.parametrize("causal", [False, True])
def test_attention_scores_past_float32_before_scaling_stay_finite(causal: bool) -> None:
    """Query row 6 and key row 5 of ~4e18 (D = 64): their q . k, ~6e38, passes float32's 3.4e38,
    the scaled score q . k / 8 does not. Both backends scaled after the product, so that row's
    scores held inf and its softmax gave NaN (inf - inf); PyTorch's scaled_dot_product_attention
    scales first and stays finite. Now q is scaled before the product, as PyTorch's."""
    q, k = np.abs(rand((2, 9, 64), 58)), np.abs(rand((2, 9, 64), 59))
    q[:, 6] *= 4e18  # after key 5: the causal mask lets it see that key
    k[:, 5] *= 4e18
    assert np.isinf(np.einsum("bd,bd->b", q[:, 6], k[:, 5])).all()  # the product overflows float32
    _, out = check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        [q, k, rand((2, 9, 4), 60)],
    )
    assert np.isfinite(to_numpy(out)).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s", [3, 64, 70])  # 64: a whole key block of triton's kernels, no padding
def test_attention_with_keys_of_minus_inf_as_scaled_dot_product_attention(s: int, causal: bool) -> None:
    """Keys of -inf in the data: in batch entry 0 every key, so every score of every query is
    -inf; in entry 1 keys 0 and 2, so causal query 0 sees only -inf. PyTorch's
    scaled_dot_product_attention gives such a query output 0 and its keys and values gradient 0
    (its dL/dq is 0 * inf: NaN); other queries ignore a key of -inf. The written-out softmax of
    `torch_attention` would give NaN: the reference here is PyTorch's own op."""
    q = np.abs(rand((2, 5, 3), 55)) + 0.1  # positive, so that q . k is -inf, not NaN
    k = rand((2, s, 3), 56)
    k[0, :, 0] = -np.inf
    k[1, [0, 2], 1] = -np.inf
    with topgrad_warns_nothing():
        _, out = check_against_torch(
            lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
            [q, k, rand((2, s, 4), 57)],
        )
    got = to_numpy(out)
    assert (got[0] == 0).all()
    assert np.isfinite(got[1]).all()


@given(data=st.data(), seed=seeds)
def test_attention_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    b = data.draw(st.integers(1, sizes.batch), label="b")
    t = data.draw(st.integers(1, sizes.tokens), label="t")
    s = data.draw(st.one_of(st.just(t), st.integers(1, sizes.tokens)), label="s (keys)")
    d = data.draw(st.integers(1, sizes.dim), label="d")
    dv = data.draw(st.one_of(st.just(d), st.integers(1, sizes.dim)), label="dv (value width)")
    causal = data.draw(st.booleans(), label="causal")
    check_against_torch(
        lambda q, k, v: topgrad.attention(q, k, v, causal=causal),
        lambda q, k, v: torch_attention(q, k, v, causal=causal),
        [rand((b, t, d), seed), rand((b, s, d), seed + 1), rand((b, s, dv), seed + 2)],
        seed=seed,
        layout=data.draw(layouts(3), label="layout"),
    )


@pytest.mark.parametrize(
    ("q_shape", "kv_shape", "bad"),
    [
        ((5, 8), (5, 8), (5, 8)),  # no batch axis
        ((2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8)),  # rank 4
        ((2, 5, 8), (2, 5, 4), (2, 5, 4)),  # feature sizes differ
    ],
)
def test_attention_bad_shapes(
    q_shape: tuple[int, ...], kv_shape: tuple[int, ...], bad: tuple[int, ...]
) -> None:
    """Wrong ranks or mismatched q/k shapes raise ValueError naming Attention and the shape."""
    q, k, v = Tensor(rand(q_shape, 0)), Tensor(rand(kv_shape, 1)), Tensor(rand(kv_shape, 2))
    with pytest.raises(ValueError, match=r"(?i)attention") as info:
        topgrad.attention(q, k, v)
    assert mentions_shape(str(info.value), bad), str(info.value)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("q_value", "k_base", "k_step"),
                         [(2.0**10, 2.0**10, 2.0**-10), (2.0**53, -(2.0**53), -(2.0**30))])
def test_attention_of_large_scores(q_value: float, k_base: float, k_step: float, causal: bool) -> None:
    """Scores 2^20 + {0, 1, 2, 3} (exact in float32, so the only rounding is the op's): a saved
    log-sum-exp lost its log-sum, and the triton backend's backward rebuilt probabilities that no
    longer summed to 1 (dK and dV 3% off; 3x for scores of 1e8). Scores near -2^106: its running
    maximum started at -1e30, every probability underflowed and the output was 0, not v's mean.
    q is a constant (its gradient, ~1e-3 from keys of 1024 that nearly cancel, is float32 noise
    in every implementation), and so is k for the second case (gradients of 1e15, noise of 1e8)."""
    q = np.full((2, 3, 1), q_value, np.float32)
    k = (k_base + k_step * np.random.default_rng(12).integers(0, 4, (2, 4, 1))).astype(np.float32)
    v = rand((2, 4, 2), 13)
    check_against_torch(lambda a, b, c: topgrad.attention(a, b, c, causal=causal),
                        lambda a, b, c: torch_attention(a, b, c, causal=causal), [q, k, v],
                        constants=(0, 1) if q_value > 2.0**20 else (0,))


def test_attention_says_how_to_fold_heads_and_names_sdpa_keywords() -> None:
    """(B, H, T, D), PyTorch's multi-head layout, gets the reshape into the batch, in the same words
    on every backend (core's check_attention_shapes); SDPA's keywords say what Topgrad takes."""
    q4 = Tensor(rand((2, 4, 5, 8), 0))
    with pytest.raises(ValueError, match=re.escape("single-head: fold (B, H) heads into the batch, "
                                                   "q.reshape(8, 5, 8)")):
        topgrad.attention(q4, q4, q4)
    q = Tensor(rand((2, 5, 8), 1))
    for keyword, message in [("is_causal", "Topgrad writes causal= (not is_causal=)"),
                             ("attn_mask", "masks other than causal=True are not supported"),
                             ("scale", "for another s, pass q * (s * D ** 0.5)")]:
        with pytest.raises(TypeError, match=re.escape(message)):
            topgrad.attention(q, q, q, **{keyword: True})
    with pytest.raises(ValueError, match=re.escape("Attention: needs at least one key")):
        topgrad.attention(q, Tensor(rand((2, 0, 8), 2)), Tensor(rand((2, 0, 8), 3)))


def test_scale_recipe_for_attention_gives_pytorchs_answer() -> None:
    q, k, v = (rand((2, 5, 8), i) for i in range(3))
    s, d = 0.3, 8
    ours = topgrad.attention(Tensor(q) * (s * d**0.5), Tensor(k), Tensor(v)).numpy()
    q64, k64, v64 = (torch.tensor(a, dtype=torch.float64) for a in (q, k, v))
    theirs = F.scaled_dot_product_attention(q64, k64, v64, scale=s)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-4, atol=1e-5)


def test_layernorm_over_several_axes_says_to_reshape() -> None:
    x = Tensor(rand((2, 5, 8), 4))
    with pytest.raises(ValueError, match=re.escape("normalizes over the last axis only (PyTorch's "
                                                   "normalized_shape=(5, 8) is its last 2 axes): reshape x "
                                                   "to (2, 40) and gamma to (40,)")):
        x.layernorm(Tensor.ones(5, 8), Tensor.zeros(5, 8))


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_norms_on_nchw_images_say_topgrad_is_channels_last(norm: str) -> None:
    """gamma sized for axis 1 of a 4-d x (an NCHW habit) gets the transpose to NHWC, in the same
    words on every backend (core's feature_count)."""
    x = Tensor(rand((2, 3, 5, 5), 56))
    with pytest.raises(ValueError, match=rf"{'BatchNorm' if norm == 'batchnorm' else 'LayerNorm'}: gamma "
                       r"must have shape \(5,\) for x of shape \(2, 3, 5, 5\).*NCHW.*\(0, 2, 3, 1\)"):
        getattr(x, norm)(Tensor.ones(3), Tensor.zeros(3))


def test_batchnorm_takes_the_statistics_by_keyword() -> None:
    """`F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)` ported
    positionally passed every shape check (all are (C,)), trained with the statistics as gamma and
    beta, and wrote the statistics into the weights."""
    x, w, b = Tensor(rand((4, 3), 3)), Tensor.ones(3), Tensor.zeros(3)
    rm, rv = Tensor(np.zeros(3), requires_grad=False), Tensor(np.ones(3), requires_grad=False)
    with pytest.raises(TypeError, match=r"batchnorm takes gamma and beta positionally, then keywords only; 7 "
                       r"were given\. F\.batch_norm\(x, running_mean, .*\) is x\.batchnorm\(weight, bias, "
                       r"running_mean=\.\.\., running_var=\.\.\., training=\.\.\."):
        x.batchnorm(rm, rv, w, b, True, 0.1, 1e-5)
    np.testing.assert_array_equal(w.numpy(), np.ones(3))


def test_batchnorm_eval_mode_needs_running_statistics() -> None:
    """Like torch.nn.functional.batch_norm, eval mode without running statistics is an error."""
    x, gamma, beta = Tensor(rand((4, 3), 1)), Tensor.ones(3), Tensor.zeros(3)
    with pytest.raises(ValueError, match=r"BatchNorm.*running_mean"):
        x.batchnorm(gamma, beta, training=False)


@pytest.mark.parametrize(("stat", "match"), [
    ([0.0, 0.0, 0.0], r"running_mean must be a Tensor"),
    ("read-only", r"a numpy running_mean .*read-only"),
    ("integer", r"a numpy running_mean .*int64"),
])
def test_batchnorm_refuses_running_stats_it_cannot_update(stat: Any, match: str) -> None:
    """A list, a read-only array or an integer one in training, is a TypeError naming the
    statistic on every backend (numpy failed on `.shape` and inside its in-place write, and it
    truncated every update of an integer array silently)."""
    if stat == "read-only":
        stat = np.zeros(3, np.float32)
        stat.flags.writeable = False
    elif stat == "integer":
        stat = np.zeros(3, np.int64)
    x = Tensor(rand((4, 3), 55))
    with pytest.raises(TypeError, match=rf"BatchNorm: {match}"):
        x.batchnorm(Tensor.ones(3), Tensor.zeros(3), running_mean=stat, running_var=np.ones(3, np.float32))


def test_a_torch_tensor_in_arithmetic_is_named_on_numpy(backend_name: str) -> None:
    """numpy converted a torch tensor silently, so a Tensor made under triton kept working under
    numpy (its gradients numpy arrays in a Tensor of torch data) until an optimizer step failed."""
    x = Tensor(rand((3,), 0))
    if backend_name != "numpy":  # triton's own arrays
        assert_close(x + torch.full((3,), 2.0), x.numpy() + 2.0, "x + a torch.Tensor on triton")
        return
    for call in (lambda: x + torch.ones(3), lambda: torch.ones(3) * x, lambda: x / torch.ones(3)):
        with pytest.raises(TypeError, match=r"(Add|Mul|Div): operands must be .* got a torch.Tensor"):
            call()


# ---- non-finite values flow through every op, unwarned, as in PyTorch -------------------------
def _with_non_finite(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values with +inf and -inf in one row (their sum is NaN) and a NaN in another."""
    x = rand(shape, seed)
    flat = x.reshape(-1, shape[-1])
    flat[0, 0], flat[0, -1], flat[-1, 1] = np.inf, -np.inf, np.nan
    return x


_NON_FINITE_CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any], list[np.ndarray]]] = {
    "Add": (lambda x, y: x + y, lambda x, y: x + y,
            [_with_non_finite((3, 4), 1), -_with_non_finite((3, 4), 1)]),
    "Mul": (lambda x, z: x * z, lambda x, z: x * z,
            [_with_non_finite((3, 4), 2), np.zeros((3, 4), np.float32)]),
    "Sum": (lambda x: x.sum(axis=1), lambda x: x.sum(dim=1), [_with_non_finite((3, 4), 3)]),
    "Mean": (lambda x: x.mean(), lambda x: x.mean(), [_with_non_finite((3, 4), 4)]),
    "LogSoftmax": (lambda x: x.logsoftmax(), lambda x: F.log_softmax(x, dim=-1),
                   [_with_non_finite((3, 4), 5)]),
    "Linear": (lambda x, w: x.linear(w), lambda x, w: x @ w, [_with_non_finite((3, 4), 6), rand((4, 5), 7)]),
    "LayerNorm": (lambda x, g, b: x.layernorm(g, b), lambda x, g, b: F.layer_norm(x, (4,), g, b),
                  [_with_non_finite((3, 4), 8), rand((4,), 9), rand((4,), 10)]),
    "BatchNorm": (lambda x, g, b: x.batchnorm(g, b),
                  lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
                  [_with_non_finite((6, 4), 11), rand((4,), 12), rand((4,), 13)]),
    "Conv2d": (lambda x, w: x.conv2d(w, padding=1),
               lambda x, w: F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1),
                                     padding=1).permute(0, 2, 3, 1),
               [_with_non_finite((2, 3, 3, 4), 14), rand((3, 3, 4, 5), 15)]),
    "Conv2d-3-channels": (  # the few-channel path: planes, the bias in the GEMMs, col2im
        lambda x, w, b: x.conv2d(w, b, padding=1),
        lambda x, w, b: F.conv2d(x.permute(0, 3, 1, 2), w.permute(3, 2, 0, 1), b,
                                 padding=1).permute(0, 2, 3, 1),
        [_with_non_finite((2, 3, 3, 3), 19), rand((3, 3, 3, 5), 20), rand((5,), 21)]),
    "Attention": (lambda q, k, v: topgrad.attention(q, k, v),
                  lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
                  [rand((1, 3, 4), 16), _with_non_finite((1, 3, 4), 17), rand((1, 3, 4), 18)]),
}


@pytest.mark.parametrize(("name", "ref"), [("tanh", torch.tanh), ("sigmoid", torch.sigmoid)])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Triton's interpreter computes in numpy; not Topgrad
def test_an_infinite_gradient_at_a_saturated_output_is_nan_unwarned(
    name: str, ref: Callable[..., Any]
) -> None:
    """Where tanh or sigmoid saturates in float32, the local derivative is 0, and an infinite or
    NaN upstream gradient times 0 is NaN, as in PyTorch's float32 (float64 saturates later),
    without numpy's warning."""
    x = np.array([30.0, -30.0, 100.0, 0.5], np.float32)
    up = np.array([np.inf, -np.inf, np.nan, 2.0], np.float32)
    t, xt = Tensor(x), torch.tensor(x, requires_grad=True)
    with topgrad_warns_nothing():
        getattr(t, name)().backward(up)
    ref(xt).backward(torch.from_numpy(up))
    np.testing.assert_allclose(to_numpy(t.grad), xt.grad.numpy(), rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("name", list(_NON_FINITE_CASES))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Triton's interpreter computes in numpy; not Topgrad
def test_non_finite_values_flow_through_unwarned_as_in_pytorch(name: str) -> None:
    """Inf and NaN in an op's input give PyTorch's NaNs and infinities, forward and in every
    gradient, and numpy warns of nothing on the way (inf - inf and inf * 0 happen inside
    sums, products and GEMMs), as PyTorch does not; `topgrad.detect_anomaly()` is the tool
    that stops at them."""
    top, ref, inputs = _NON_FINITE_CASES[name]
    tensors = [Tensor(a) for a in inputs]
    with topgrad_warns_nothing():
        out = top(*tensors)
        grad = np.linspace(-1.0, 1.0, math.prod(out.shape), dtype=np.float32).reshape(out.shape)
        out.backward(grad)
    refs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    want = ref(*refs)
    want.backward(torch.tensor(grad, dtype=torch.float64))
    np.testing.assert_allclose(to_numpy(out), want.detach().numpy(), rtol=1e-4, atol=1e-5, equal_nan=True)
    for t, r in zip(tensors, refs):
        np.testing.assert_allclose(to_numpy(t.grad), r.grad.numpy(), rtol=1e-4, atol=1e-5, equal_nan=True,
                                   err_msg=f"{name}: a gradient")
