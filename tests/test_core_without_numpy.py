"""Core's debugging tools on a backend whose arrays are not numpy's, with numpy blocked.

topgrad-core declares no numpy (tests/test_architecture.py checks its imports statically). Here
`gradcheck` and `detect_anomaly` run, with `import numpy` made to fail, on a tiny pure-Python
backend: flat lists of Python floats with a shape, its `to_numpy` a copy of the same kind (an
object with `.tolist()` and `.shape`, as a host array has). Only what these tools and the engine
use is implemented: elementwise Mul and Add of equal shapes (or with a number), and a full Sum.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import topgrad
from topgrad import Backend, BackendSpec, Op, Tensor, registry


class Flat:
    """A pure-Python array: C-order values (Python floats), a shape and a dtype name."""

    def __init__(self, shape: tuple[int, ...], values: list[float], dtype: str = "float32") -> None:
        self.shape, self.values, self.dtype = tuple(shape), list(values), dtype

    def tolist(self) -> Any:
        def nest(values: list[float], shape: tuple[int, ...]) -> Any:
            if not shape:
                return values[0]
            inner = math.prod(shape[1:])
            return [nest(values[k * inner:(k + 1) * inner], shape[1:]) for k in range(shape[0])]

        return nest(self.values, self.shape)


def _read(obj: Any) -> tuple[tuple[int, ...], list[float]]:
    if isinstance(obj, Flat):
        return obj.shape, list(obj.values)
    if not isinstance(obj, (list, tuple)):
        return (), [float(obj)]
    parts = [_read(o) for o in obj]
    inner = parts[0][0] if parts else ()
    assert all(shape == inner for shape, _ in parts), "ragged"
    return (len(parts), *inner), [v for _, values in parts for v in values]


def _round(values: list[float], dtype: str) -> list[float]:
    if dtype == "float64":
        return values
    from array import array

    return array("f", values).tolist()


def _zip(a: Any, b: Any, f: Any) -> Flat:
    """f elementwise over two Flats of one shape, or a Flat and a number; the Flat's dtype."""
    if not isinstance(a, Flat):
        return _zip(b, a, lambda x, y: f(y, x))
    if isinstance(b, Flat):
        assert a.shape == b.shape, f"pure-python backend: shapes {a.shape} and {b.shape}"
        others = b.values
    else:
        others = [float(b)] * len(a.values)
    return Flat(a.shape, _round([f(x, y) for x, y in zip(a.values, others)], a.dtype), a.dtype)


def _mul(x: float, y: float) -> float:
    return x * y


def _add(x: float, y: float) -> float:
    return x + y


class Mul(Op):
    """a * b, elementwise."""

    def forward(self, a: Any, b: Any) -> Flat:
        self.save_for_backward(a, b)
        return _zip(a, b, _mul)

    def backward(self, grad: Flat) -> tuple[Any, ...]:
        a, b = self.saved
        return (_zip(grad, b, _mul) if isinstance(a, Flat) else None,
                _zip(grad, a, _mul) if isinstance(b, Flat) else None)


class Add(Op):
    """a + b, elementwise."""

    def forward(self, a: Any, b: Any) -> Flat:
        self.kinds = isinstance(a, Flat), isinstance(b, Flat)
        return _zip(a, b, _add)

    def backward(self, grad: Flat) -> tuple[Any, ...]:
        return tuple(grad if kind else None for kind in self.kinds)


class Sum(Op):
    """The sum of every element, a 0-d array."""

    def forward(self, x: Flat, axis: Any = None, keepdims: bool = False) -> Flat:
        assert axis is None and not keepdims, "pure-python backend: a full sum only"
        self.like = x
        return Flat((), _round([math.fsum(x.values) if all(map(math.isfinite, x.values))
                                else sum(x.values)], x.dtype), x.dtype)

    def backward(self, grad: Flat) -> tuple[Flat]:
        return (Flat(self.like.shape, grad.values * len(self.like.values), grad.dtype),)


class WrongMul(Mul):
    """a * b whose backward is 10% too large."""

    def backward(self, grad: Flat) -> tuple[Any, ...]:
        return tuple(None if g is None else _zip(g, 1.1, _mul) for g in super().backward(grad))


class PurePython(Backend):
    """float32 (rounded with `array`) and float64 arrays of Python floats; records to_numpy's shapes."""

    def __init__(self) -> None:
        self.ops = SimpleNamespace(Mul=Mul, Add=Add, Sum=Sum)
        self.read: list[tuple[int, ...]] = []

    def asarray(self, obj: Any, dtype: str = "float32") -> Flat:
        if dtype not in ("float32", "float64"):
            raise TypeError(f"pure-python backend: no dtype {dtype!r}")
        shape, values = _read(obj)
        return Flat(shape, _round(values, dtype), dtype)

    def to_numpy(self, a: Any) -> Flat:
        self.read.append(a.shape)
        return Flat(a.shape, a.values, a.dtype)

    def full(self, shape: tuple[int, ...], value: float) -> Flat:
        return Flat(shape, _round([float(value)] * math.prod(shape), "float32"))

    def add(self, a: Any, b: Any) -> Flat:
        return _zip(a, b, _add)

    def mul(self, a: Any, b: Any) -> Flat:
        return _zip(a, b, _mul)


@pytest.fixture(autouse=True)
def pure_python(monkeypatch: pytest.MonkeyPatch, backend_name: str) -> Iterator[PurePython]:
    """The pure-Python backend selected and `import numpy` failing; both undone afterwards."""
    backend = PurePython()
    topgrad.register_backend(BackendSpec("purepython", lambda: backend), replace=True)
    topgrad.set_backend("purepython")
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` now raises ImportError
    with pytest.raises(ImportError):
        import numpy  # noqa: F401
    yield backend
    monkeypatch.undo()
    registry._in_process.pop("purepython", None)
    registry._loaded.pop("purepython", None)
    topgrad.set_backend(backend_name)


def test_gradcheck_runs_in_float64_without_numpy() -> None:
    x, w = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], [[2.0, 1.0, -3.0], [0.5, -0.5, 1.0]]
    result = topgrad.gradcheck(lambda x, w: (x * w + x * x * 0.5).sum(), x, w)
    assert result and result.precision == "float64" and result.checked == 12, str(result)
    assert topgrad.gradcheck(lambda x: x * 3.0 + 1.0, Tensor([1.0, 2.0]), dtype="float32")


def test_gradcheck_finds_a_wrong_backward_without_numpy() -> None:
    for dtype in (None, "float32"):
        result = topgrad.gradcheck(lambda x, w: WrongMul.apply(x, w), [1.0, -2.0, 0.5], [3.0, 0.5, 2.0],
                                   dtype=dtype, raise_on_failure=False)
        assert not result and result.failures == 6, str(result)
        assert result.worst is not None and abs(result.worst.rel_err - 0.1) < 1e-3


def test_anomaly_mode_without_numpy_reads_only_one_value_per_finite_array(pure_python: PurePython) -> None:
    x, w = Tensor([[1.0, 2.0], [3.0, 4.0]]), Tensor([[0.5, 0.5], [-1.0, 2.0]])
    pure_python.read.clear()
    with topgrad.detect_anomaly():
        (x * w + x).sum().backward()
    assert pure_python.read and set(pure_python.read) == {()}, "finite arrays: only 0-d sums come to the host"
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        x * Tensor([[math.nan, 1.0], [math.inf, -math.inf]])
    message = str(info.value)
    assert "Mul (forward)" in message and "1 NaN and 2 Inf among 4 values" in message, message
    assert "input 1 already contained NaN/Inf" in message, message
    assert not Op._observers


@pytest.mark.parametrize("name", ["BackendConformance", "run"])
def test_the_kit_without_numpy_says_what_to_install(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`class TestMine(topgrad.testing.BackendConformance)` and `topgrad.testing.run(...)` without numpy
    failed with a bare "No module named 'numpy'"; the CLI and the pytest route gave the install line."""
    import topgrad.testing as kit

    loaded = [m for m in sys.modules if m.startswith("topgrad.testing.")]
    for module in loaded:
        monkeypatch.delitem(sys.modules, module)  # imported by earlier tests: import them afresh
    with pytest.raises(ModuleNotFoundError, match=r"^the conformance kit needs numpy: pip install numpy "
                       r"\(topgrad-core's \[testing\] extra\)$"):
        getattr(kit, name)
