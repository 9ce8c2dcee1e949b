"""Numpy-backend operands of unusual kinds: complex values in lists, float16 and long double or
integer arrays given raw to Linear, Conv2d and Attention, Fraction and Decimal numbers, values
that overflow float32. Each must be refused clearly or converted the documented way, never
silently changed (an imaginary part dropped) or left to fail later in backward."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import topgrad
from topgrad import Tensor

pytestmark = pytest.mark.skipif(
    "numpy" not in topgrad.available_backends(), reason="topgrad-numpy is not installed"
)


@pytest.fixture
def nb() -> Iterator[Any]:
    """The numpy backend, selected for the test and restored afterwards."""
    previous = topgrad.get_backend().name
    backend = topgrad.set_backend("numpy")
    yield backend
    topgrad.set_backend(previous)


COMPLEX_REFUSED = "complex values are not supported"


def _seeded_with(seed: Any) -> Any:
    """w.grad after (w * 1.0).backward(seed), for a w of two ones."""
    w = Tensor([1.0, 2.0])
    (w * 1.0).backward(seed)
    return w.grad


def _added(other: Any) -> Any:
    """Tensor([1.0, 2.0]) + other (a list: the core makes it a constant Tensor)."""
    return Tensor([1.0, 2.0]) + other


@pytest.mark.parametrize("make", [
    lambda: Tensor([np.complex128(1 + 5j)]),
    lambda: Tensor([1, 2j]),
    lambda: Tensor([[1.0, 2.0], [np.complex64(3j), 4.0]]),
    lambda: _added([np.complex128(5j), 0.0]),
    lambda: Tensor([1.0, 2.0]) * (np.complex128(5j), 1.0),
    lambda: _seeded_with([np.complex128(1 + 5j)] * 2),
], ids=["numpy-complex", "python-complex", "nested", "add-list", "mul-tuple", "backward-seed"])
def test_complex_values_in_a_list_are_refused(nb: Any, make: Callable[[], Any]) -> None:
    """A complex number inside a list is refused as a complex array is (numpy would keep only the
    real part, with a ComplexWarning at most), not converted or failing in float()'s words."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's ComplexWarning would be the only sign
        with pytest.raises(TypeError, match=COMPLEX_REFUSED):
            make()


def test_real_lists_still_convert(nb: Any) -> None:
    """Lists of floats, ints and bools still make float32 arrays (the probe is kept for them)."""
    assert Tensor([1.0, 2]).numpy().tolist() == [1.0, 2.0]
    assert Tensor([True, False]).numpy().tolist() == [1.0, 0.0]
    assert Tensor([np.float64(0.5), 1]).dtype == "float32"


def _seed_overflow() -> Any:
    """x.grad after (x * 2.0).backward(a float64 seed beyond float32's range)."""
    x = Tensor([1.0])
    (x * 2.0).backward(np.array([1e300]))
    return x.grad


with np.errstate(over="ignore"):  # inf where long double is float64 (Windows, ARM macOS)
    BEYOND_FLOAT64 = np.longdouble(1e300) * np.longdouble(1e300)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: Tensor([1e300, 1.0]), [np.inf, 1.0]),
    (lambda: Tensor([-1e300]), [-np.inf]),
    (lambda: Tensor(np.array([1e300, 1.0])), [np.inf, 1.0]),
    (lambda: Tensor(1e300), np.inf),
    (lambda: Tensor(10**300), np.inf),
    (lambda: Tensor(np.array([BEYOND_FLOAT64]), dtype="float64"), [np.inf]),
    (_seed_overflow, [np.inf]),
], ids=["list", "negative", "float64-array", "float", "int", "long-double", "backward-seed"])
def test_values_beyond_the_range_become_inf_without_a_warning(nb: Any, make: Callable[[], Any],
                                                              expected: Any) -> None:
    """A value beyond float32's range becomes inf silently, as torch.tensor([1e300]) gives inf
    (README: values pass "without numpy's warnings"); numpy warned "overflow encountered in cast"."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        made = make()
        got = made.numpy() if isinstance(made, Tensor) else np.asarray(made)
    assert got.tolist() == expected


@pytest.mark.parametrize("combine", [
    lambda t, c: t * c, lambda t, c: c * t, lambda t, c: t + c, lambda t, c: c + t,
    lambda t, c: t - c, lambda t, c: c - t, lambda t, c: t / c, lambda t, c: c / t,
], ids=["mul", "rmul", "add", "radd", "sub", "rsub", "div", "rdiv"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fraction_is_a_number_that_keeps_the_tensors_dtype(nb: Any, combine: Callable[[Any, Any], Any],
                                                             dtype: str) -> None:
    """A Fraction (a numbers.Real, as `x / c` takes it) counts as its float in every arithmetic op:
    numpy made it a 0-d float32 array, so `t64 * Fraction(1, 3)` was float32 and `t64 / ...` float64."""
    from fractions import Fraction

    t = Tensor([1.0, 2.0], dtype=dtype)
    got = combine(t, Fraction(1, 3))
    assert got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), combine(np.array([1.0, 2.0]), 1 / 3), rtol=1e-6)


@pytest.mark.parametrize("combine", [
    lambda t, c: t * c, lambda t, c: c + t, lambda t, c: t - c, lambda t, c: c - t,
    lambda t, c: t / c, lambda t, c: c / t,
], ids=["mul", "radd", "sub", "rsub", "div", "rdiv"])
def test_a_decimal_is_refused_as_pytorch_refuses_it(nb: Any, combine: Callable[[Any, Any], Any]) -> None:
    """A Decimal is no real number (Python will not mix it with floats): refused naming the op and
    float(d), as PyTorch and the triton backend refuse it (numpy made it float32)."""
    from decimal import Decimal

    with pytest.raises(TypeError, match=r"(Add|Mul|Div): .*got Decimal.*float\(d\)"):
        combine(Tensor([1.0, 2.0], dtype="float64"), Decimal("0.5"))


def _gemm_op_cases() -> dict[str, Callable[[Tensor, Any], Tensor]]:
    """Linear, Conv2d and Attention, each with one raw array operand `r` (shapes fixed by name)
    and a trainable float32 input x (rows (2, 3), images (1, 4, 4, 2) or sequences (1, 2, 3)).
    Made inside a test, once `nb` has selected the numpy backend (nox runs this file under the
    triton backend too, whose Tensors the numpy ops refuse)."""
    w_lin = Tensor(np.linspace(-1, 1, 6).reshape(3, 2), requires_grad=False)
    w_conv = Tensor(np.linspace(-1, 1, 36).reshape(3, 3, 2, 2), requires_grad=False)
    return {
        "linear-w": lambda x, r: x.linear(r),
        "linear-b": lambda x, r: x.linear(w_lin, r),
        "matmul": lambda x, r: x @ r,
        "rmatmul": lambda x, r: r.T @ x.T,
        "conv-w": lambda x, r: x.conv2d(r),
        "conv-b": lambda x, r: x.conv2d(w_conv, r),
        "attention-k": lambda x, r: topgrad.attention(x, r, x),
        "attention-v": lambda x, r: topgrad.attention(x, x, r),
    }


RAW_SHAPES = {"linear-w": (3, 2), "linear-b": (2,), "matmul": (3, 2), "rmatmul": (3, 2),
              "conv-w": (3, 3, 2, 2), "conv-b": (2,), "attention-k": (1, 2, 3), "attention-v": (1, 2, 3)}
X_SHAPES = {"linear": (2, 3), "matmul": (2, 3), "rmatmul": (2, 3), "conv": (1, 4, 4, 2),
            "attention": (1, 2, 3)}

COUNTED_AS = [  # a raw array's dtype, and the dtype it counts as in these ops (README)
    (np.int8, "float64"), (np.int64, "float64"), (np.uint8, "float64"), (np.bool_, "float64"),
    (np.float16, "float32"), (np.longdouble, "float64"),
]


@pytest.mark.parametrize("case", list(RAW_SHAPES))
@pytest.mark.parametrize(("raw_dtype", "counted"), COUNTED_AS,
                         ids=[np.dtype(d).name for d, _ in COUNTED_AS])
def test_raw_arrays_in_gemm_ops_count_as_float32_or_float64(nb: Any, case: str, raw_dtype: Any,
                                                           counted: str) -> None:
    """A raw integer or bool array counts as float64 in Linear, Conv2d and Attention (README),
    every width of it (int8 and bool were float32 in Linear, int64 float64), float16 as float32
    and a long double as float64: the result is float32 or float64, never float128 (whose
    backward failed naming neither op nor operand), equal to the op on Tensor(r, dtype=counted),
    and a float32 leaf's gradient stays float32."""
    op = _gemm_op_cases()[case]
    raw = (np.arange(np.prod(RAW_SHAPES[case])) % 3).reshape(RAW_SHAPES[case]).astype(raw_dtype)
    x_shape = X_SHAPES[case.split("-")[0]]
    results = []
    for other in (raw, Tensor(raw.astype(counted), dtype=counted, requires_grad=False)):
        x = Tensor(np.linspace(-1, 1, int(np.prod(x_shape))).reshape(x_shape))
        y = op(x, other)
        (y * y).sum().backward()
        results.append((y.dtype, y.numpy(), x.grad.dtype, np.asarray(x.grad)))
    (y_dtype, y_raw, g_dtype, g_raw), (_, y_ref, _, g_ref) = results
    assert (y_dtype, g_dtype) == (np.dtype(counted), np.dtype(np.float32))
    np.testing.assert_array_equal(y_raw, y_ref)
    np.testing.assert_array_equal(g_raw, g_ref)


@pytest.mark.parametrize("case", list(RAW_SHAPES))
@pytest.mark.parametrize(("raw_dtype", "held"), [(np.complex128, "complex numbers"), (np.str_, "text")],
                         ids=["complex", "text"])
def test_raw_arrays_of_no_real_numbers_are_refused_in_gemm_ops(nb: Any, case: str, raw_dtype: Any,
                                                               held: str) -> None:
    """A raw complex or text array is refused by Linear, Conv2d and Attention alike, naming the op
    and operand: Attention made a complex128 Tensor (refused only in backward) and Conv2d failed
    in numpy's words ('Cannot cast ufunc add output')."""
    raw = np.ones(RAW_SHAPES[case]).astype(raw_dtype)
    x_shape = X_SHAPES[case.split("-")[0]]
    op_name = {"linear": "Linear", "matmul": "Linear", "rmatmul": "Linear", "conv": "Conv2d",
               "attention": "Attention"}[case.split("-")[0]]
    with pytest.raises(TypeError, match=rf"^{op_name} \(\w\): operands must hold real numbers.*got {held}"):
        _gemm_op_cases()[case](Tensor(np.ones(x_shape)), raw)
