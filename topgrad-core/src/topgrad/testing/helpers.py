"""Checks of the Backend array helpers (`topgrad.Backend`), which constructors and optimizers use."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from topgrad.arrays import dtype_name
from topgrad.errors import qualified_name
from topgrad.registry import _array_type, get_backend
from topgrad.tensor import Tensor
from topgrad.testing.outcome import RTOL, Outcome, compare, host_values, merge, missing_helpers

_A = np.array([[1.5, -2.0, 0.25], [4.0, 0.5, -3.0]])
_B = np.array([[0.5, 3.0, -1.25], [2.0, -0.5, 8.0]])


def _has_array_api(what: str, a: Any, shape: tuple[int, ...]) -> list[Outcome]:
    found = []
    if not hasattr(a, "dtype"):
        found.append(Outcome.failed(f"{what}: the array has no .dtype"))
    if not hasattr(a, "shape") or tuple(a.shape) != shape:
        found.append(Outcome.failed(f"{what}: .shape is {getattr(a, 'shape', None)}, expected {shape}"))
    return found


def _of_the_backend(what: str, a: Any) -> list[Outcome]:
    """A failure unless `a` is one of the backend's arrays (the type its zeros returns): numpy's
    operators give a numpy scalar for 0-d arrays, which Tensors and optimizer steps refuse later,
    far from the helper that made it."""
    kind = _array_type(get_backend())
    if kind is type(None) or isinstance(a, kind):
        return []
    return [Outcome.failed(f"{what} returned a {qualified_name(type(a))}, not one of the backend's arrays "
                           f"({qualified_name(kind)}, the type zeros returns); numpy's operators make "
                           "scalars of 0-d arrays: return np.asarray(...) of the result")]


_TENSOR_DTYPE = inspect.signature(Tensor.__init__).parameters["dtype"].default
"""The dtype `Tensor(values)` asks `asarray` for: float32."""


def float_dtype(backend: Any) -> str | None:
    """The backend's float dtype: that of `asarray([1.0])` with the dtype `Tensor([1.0])` asks for
    (float32; a float64 backend answers float64). Tensor.zeros, ones and randn, and Adam's state,
    come from helpers that must make it too. None where the backend lacks asarray (its row says so,
    and the rows of the constructors still check their values)."""
    if "asarray" in missing_helpers(backend):
        return None
    return dtype_name(backend.asarray([1.0], dtype=_TENSOR_DTYPE))


def _in_float_dtype(made: dict[str, Any], want: str | None) -> list[Outcome]:
    """A failure naming each helper in `made` (name -> an array it returned) whose array is not of
    the backend's float dtype `want` (None: unknown, nothing to check): a float64 `randn` in a
    float32 backend passes every value check, and the model then trains in float64 (slower), with
    no word."""
    if want is None:
        return []
    wrong = {name: dtype_name(a) for name, a in made.items() if dtype_name(a) not in (want, "?")}
    if not wrong:  # "?": no .dtype, which _has_array_api reports
        return []
    said = ", ".join(f"{name} returned dtype {got}" for name, got in wrong.items())
    return [Outcome.failed(f"{said}, not the backend's float dtype {want} (that of asarray([1.0]), as "
                           "Tensor([1.0]) makes it): Tensor.zeros, ones, randn and He, and Adam's state, "
                           "would be of that dtype, and so would what is computed from them; numpy's "
                           f"constructors default to float64: pass them dtype={want!r}")]


def check_asarray(rtol: float = RTOL) -> Outcome:
    """`asarray` of nested lists, numpy arrays of both widths, a backend array and a scalar."""
    b = get_backend()
    nested = b.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]])
    from_numpy = b.asarray(_A.astype(np.float32))
    scalar = b.asarray(2.5)
    return merge([
        *_has_array_api("asarray(nested list)", nested, (2, 3)),
        compare("asarray(nested list)", host_values(nested), [[1, 2, 3], [4, 5, 6.5]], rtol),
        compare("asarray(numpy float32)", host_values(from_numpy), _A, rtol),
        compare("asarray(numpy float64)", host_values(b.asarray(_A)), _A, rtol),
        compare("asarray(backend array)", host_values(b.asarray(from_numpy)), _A, rtol),
        compare("asarray(2.5)", host_values(scalar), np.float64(2.5), rtol),
        _float64_kept_or_refused(b),
    ])


_NO_FLOAT64 = (TypeError, ValueError, NotImplementedError)
"""What `asarray(..., dtype="float64")` may raise on a backend without float64."""


def _float64_kept_or_refused(b: Any) -> Outcome:
    """`asarray(..., dtype="float64")` gives float64 or raises: a float32 answer would make gradcheck
    and the user believe they run in float64."""
    try:
        wide = b.asarray(_A, dtype="float64")
    except _NO_FLOAT64:
        return Outcome(True)  # a backend without float64 says so, and gradcheck falls back to float32
    if str(wide.dtype) != "float64":
        return Outcome.failed(f"asarray(dtype='float64') returned dtype {wide.dtype}: return float64 "
                              "or raise TypeError, ValueError or NotImplementedError")
    return Outcome(True)


def check_to_numpy(rtol: float = RTOL) -> Outcome:
    """`to_numpy` returns a numpy array with the values it was given."""
    b = get_backend()
    a = b.asarray(_A)
    out = b.to_numpy(a)
    if not isinstance(out, np.ndarray):
        return Outcome.failed(f"to_numpy returned {type(out).__name__}, expected numpy.ndarray")
    return compare("to_numpy", out, _A, rtol)


def check_constants(rtol: float = RTOL) -> Outcome:
    """`zeros`, `ones` and `full` give arrays of the asked shape and value, in the backend's float dtype."""
    b = get_backend()
    outcomes: list[Outcome] = []
    made: dict[str, Any] = {}
    for shape in [(2, 3), (4,), (1, 2, 1)]:
        for name, make, value in [
            ("zeros", lambda s: b.zeros(s), 0.0),
            ("ones", lambda s: b.ones(s), 1.0),
            ("full", lambda s: b.full(s, -2.5), -2.5),
        ]:
            a = make(shape)
            made.setdefault(name, a)  # each helper's dtype once, from its first array
            outcomes += _has_array_api(f"{name}({shape})", a, shape)
            outcomes.append(compare(f"{name}({shape})", host_values(a), np.full(shape, value), rtol))
    return merge([*outcomes, *_in_float_dtype(made, float_dtype(b))])


def check_randn(rtol: float = RTOL) -> Outcome:
    """`randn` repeats for a seed, differs across seeds and draws a standard normal, in the backend's
    float dtype."""
    b = get_backend()
    first, again, other = b.randn((40, 50), seed=3), b.randn((40, 50), seed=3), b.randn((40, 50), seed=4)
    outcomes = [*_has_array_api("randn((40, 50))", first, (40, 50)),
                *_in_float_dtype({"randn": first}, float_dtype(b))]
    x = host_values(first)
    if not np.array_equal(x, host_values(again)):
        outcomes.append(Outcome.failed("randn with the same seed gave different arrays"))
    if np.array_equal(x, host_values(other)):
        outcomes.append(Outcome.failed("randn with seeds 3 and 4 gave the same array"))
    if not (abs(x.mean()) < 0.15 and 0.85 < x.std() < 1.15):  # 2000 draws: about 5 sigma margins
        outcomes.append(
            Outcome.failed(f"randn is not standard normal: mean {x.mean():.3f}, std {x.std():.3f}")
        )
    outcomes += _has_array_api("randn((3,))", b.randn((3,)), (3,))
    return merge(outcomes)


def _arith(name: str, fn: Callable[[Any, Any], Any], want: Callable[[Any, Any], Any], rtol: float) -> Outcome:
    b = get_backend()
    x, y = b.asarray(_A), b.asarray(_B)
    return merge([
        compare(f"{name}(a, b)", host_values(fn(x, y)), want(_A, _B), rtol),
        compare(f"{name}(a, 2.0)", host_values(fn(x, 2.0)), want(_A, 2.0), rtol),
        compare(f"{name}(2.0, a)", host_values(fn(2.0, x)), want(2.0, _A), rtol),
        compare(f"{name}(a, b[1])", host_values(fn(x, b.asarray(_B[1]))), want(_A, _B[1]), rtol),
        compare(f"{name} left its inputs", host_values(x), _A, 0.0),
        *_of_the_backend(f"{name}(a, b)", fn(x, y)),
        *_of_the_backend(f"{name} of two 0-d arrays", fn(b.asarray(_A[0, 0]), b.asarray(_B[0, 0]))),
    ])


def check_sqrt(rtol: float = RTOL) -> Outcome:
    """`sqrt` of a backend array, elementwise."""
    b = get_backend()
    return merge([
        compare("sqrt(a)", host_values(b.sqrt(b.asarray(np.abs(_A)))), np.sqrt(np.abs(_A)), rtol),
        *_of_the_backend("sqrt of a 0-d array", b.sqrt(b.asarray(2.0))),
    ])


def check_copy(rtol: float = RTOL) -> Outcome:
    """copy(a) holds a's values, and where memory_key knows them, a key of its own (else
    backward would copy the copies of leaf gradients again, or keep shared ones)."""
    b = get_backend()
    a = b.asarray(_A)
    c = b.copy(a)
    outcomes = [*_has_array_api("copy(a)", c, _A.shape), compare("copy(a)", host_values(c), _A, rtol),
                *_of_the_backend("copy of a 0-d array", b.copy(b.asarray(2.0)))]
    if c is a:  # backward copies shared leaf gradients with it: `a.grad` and `b.grad` would be one
        outcomes.append(Outcome.failed("copy(a) returned a itself; it must return a new array"))
    key_a, key_c = b.memory_key(a), b.memory_key(c)
    if key_a is not None and key_a == key_c:
        outcomes.append(Outcome.failed(f"memory_key gives a and copy(a) the same key {key_a!r}"))
    return merge(outcomes)


def check_sum_helper(name: str, rtol: float = RTOL) -> Outcome:
    """`name`(total, part) returns total + part, written into total or not, and leaves part as it
    was: backward sums gradients with these helpers. `accumulate` adds a leaf's new gradient to
    its `.grad` (a wrong one gives every second backward a wrong `.grad`); `add_gradients` sums
    the gradients that reach one tensor (a wrong one breaks every residual graph)."""
    b = get_backend()
    helper = getattr(b, name)
    part = b.asarray(_B)
    result = helper(b.asarray(_A), part)
    zero_d = helper(b.asarray(_A[0, 0]), b.asarray(_B[0, 0]))
    return merge([
        *_has_array_api(f"{name}(a, b)", result, _A.shape),
        compare(f"{name}(a, b)", host_values(result), _A + _B, rtol),
        compare(f"{name} left b", host_values(part), _B, 0.0),
        *_of_the_backend(f"{name} of two 0-d arrays", zero_d),
    ])


def check_zero_out(rtol: float = RTOL) -> Outcome:
    """zero_out(a) returns zeros of a's shape and dtype (float64 too, where the backend has it),
    written into a or not: zero_grad(set_to_none=False) clears gradients with it. NaN and inf become
    0 too (a product with 0 would keep NaN)."""
    b = get_backend()
    given = _A.copy()
    given[0, :2] = [np.nan, np.inf]
    arrays = [b.asarray(given)]
    try:
        arrays.append(b.asarray(given, dtype="float64"))
    except _NO_FLOAT64:
        pass  # a backend without float64 (the asarray row checks that it says so)
    zero_d = b.zero_out(b.asarray(2.0))
    outcomes = [*_of_the_backend("zero_out of a 0-d array", zero_d)]
    if not outcomes:  # a backend array: its shape and value too
        outcomes = [*_has_array_api("zero_out(0-d a)", zero_d, ()),
                    compare("zero_out(0-d a)", host_values(zero_d), np.zeros(()), 0.0)]
    for a in arrays:
        kind = str(a.dtype)
        result = b.zero_out(a)
        outcomes += [*_has_array_api(f"zero_out({kind} a)", result, _A.shape),
                     compare(f"zero_out({kind} a holding NaN and inf)", host_values(result),
                             np.zeros(_A.shape), 0.0)]
        if hasattr(result, "dtype") and str(result.dtype) != kind:  # a .grad keeps its parameter's dtype
            outcomes.append(Outcome.failed(f"zero_out of a {kind} array returned dtype {result.dtype}"))
    return merge(outcomes)


HELPER_CHECKS: dict[str, Callable[[float], Outcome]] = {
    "asarray": check_asarray,
    "to_numpy": check_to_numpy,
    "zeros/ones/full": check_constants,
    "randn": check_randn,
    "add": lambda rtol: _arith("add", get_backend().add, np.add, rtol),
    "sub": lambda rtol: _arith("sub", get_backend().sub, np.subtract, rtol),
    "mul": lambda rtol: _arith("mul", get_backend().mul, np.multiply, rtol),
    "div": lambda rtol: _arith("div", get_backend().div, np.divide, rtol),
    "sqrt": check_sqrt,
    "copy/memory_key": check_copy,
    "accumulate": lambda rtol: check_sum_helper("accumulate", rtol),
    "add_gradients": lambda rtol: check_sum_helper("add_gradients", rtol),
    "zero_out": check_zero_out,
}
"""Each helper check by its row label; each takes the tolerance and returns an Outcome."""
