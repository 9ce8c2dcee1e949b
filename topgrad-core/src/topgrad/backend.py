"""What a backend is: a `Backend` object with an op table and a few array helpers.

The helpers carry no autograd; Tensor constructors and optimizers use them. The
optimizer updates have default implementations composed from the helpers, which a
backend may replace with fused kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from topgrad.arrays import dtype_name


@dataclass(frozen=True)
class BackendSpec:
    """A backend a plugin offers; `load` ("module:attribute" or a callable) runs only when selected.
    A Backend object itself is taken too (`register_backend(BackendSpec("mine", MyBackend()))` in
    a notebook), as a "module:attribute" string may name one."""

    name: str
    load: str | Callable[[], Backend] | Backend
    description: str = ""

    def __post_init__(self) -> None:
        """Refuse a spec that could not be selected or loaded, when the plugin makes it: a
        registry listing it would fail later, far from the plugin's mistake."""
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"BackendSpec: name must be a non-empty str, the name users select it by "
                            f"(e.g. 'numpy'), got {self.name!r}")
        module, _, attribute = self.load.partition(":") if isinstance(self.load, str) else ("", "", "")
        if not ((module and attribute) or callable(self.load) or isinstance(self.load, Backend)):
            raise TypeError(f"BackendSpec {self.name!r}: load must be a 'module:attribute' string, a "
                            "callable returning a topgrad.Backend, or a Backend object (e.g. "
                            f"'topgrad_mybackend.backend:MyBackend'), got {self.load!r}")


class Backend:
    """Base class of backends. Subclasses set `name` and `ops` and implement the helpers."""

    name: str = ""
    ops: Any = None

    @property
    def where(self) -> str:
        """Where the arrays live and the ops run, when it is worth saying ("Triton interpreter on
        CPU: slow"); "" by default. topgrad-train's first line shows it."""
        return ""

    def __repr__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"<topgrad backend {self.name!r}{where}>"

    def refuse_complex(self, obj: Any) -> None:
        """TypeError for complex data (a Python or numpy complex, a numpy or torch complex array):
        a real array made from it would silently keep only the real part. For `asarray`."""
        given = getattr(obj, "dtype", None)  # a numpy dtype (kind), or a torch one (is_complex)
        complex_dtype = getattr(given, "kind", None) == "c" or getattr(given, "is_complex", False)
        if isinstance(obj, complex) or complex_dtype:
            raise TypeError(f"{self.name} backend: complex values are not supported (arrays are real, and "
                            "the imaginary part would be dropped); pass a.real or abs(a)")

    def _missing(self, helper: str) -> NotImplementedError:
        return NotImplementedError(
            f"{self!r} does not implement the array helper {helper}() (docs/writing-a-backend.md "
            "lists the helpers a backend implements)"
        )

    # ---- array helpers (no autograd) --------------------------------------------
    def asarray(self, obj: Any, dtype: str = "float32") -> Any:
        """An array of `dtype` ("float32", "float64") from a nested list, numpy array, scalar or own array."""
        raise self._missing("asarray")

    def to_numpy(self, a: Any) -> Any:
        """A numpy array of `a`'s values: what `Tensor.numpy()` returns and the kit compares."""
        raise self._missing("to_numpy")

    def zeros(self, shape: tuple[int, ...]) -> Any:
        """Zeros of `shape`; by default `full(shape, 0.0)`, so a backend need not write it."""
        return self.full(shape, 0.0)

    def ones(self, shape: tuple[int, ...]) -> Any:
        """Ones of `shape`; by default `full(shape, 1.0)`, so a backend need not write it."""
        return self.full(shape, 1.0)

    def full(self, shape: tuple[int, ...], value: float) -> Any:
        """An array of `shape` filled with `value`: the building block of the constructors."""
        raise self._missing("full")

    def randn(self, shape: tuple[int, ...], seed: int | None = None) -> Any:
        """Standard normal draws of `shape`, the same ones for the same seed (reproducible inits)."""
        raise self._missing("randn")

    def add(self, a: Any, b: Any) -> Any:
        """a + b with broadcasting, no autograd (either may be a Python number): for optimizers."""
        raise self._missing("add")

    def sub(self, a: Any, b: Any) -> Any:
        """a - b with broadcasting, no autograd (either may be a Python number): for optimizers."""
        raise self._missing("sub")

    def mul(self, a: Any, b: Any) -> Any:
        """a * b with broadcasting, no autograd (either may be a Python number): for optimizers."""
        raise self._missing("mul")

    def div(self, a: Any, b: Any) -> Any:
        """a / b with broadcasting, no autograd (either may be a Python number): for optimizers."""
        raise self._missing("div")

    def sqrt(self, a: Any) -> Any:
        """The elementwise square root, no autograd: Adam's denominator."""
        raise self._missing("sqrt")

    def copy(self, a: Any) -> Any:
        """A new array holding `a`'s values."""
        return self.mul(a, 1.0)

    def accumulate(self, total: Any, part: Any) -> Any:
        """total + part, arrays of one shape: backward adds a leaf's new gradient to its `.grad` with
        it. Written into `total` where the backend can, as PyTorch accumulates `.grad` in place (code
        holding the array sees the sum); returns the array holding the sum, by default a new one."""
        return self.add(total, part)

    def add_gradients(self, total: Any, part: Any) -> Any:
        """total + part, two gradients of one shape that reach the same tensor in one backward (a
        tensor used twice: a residual shortcut). backward hands over `total` with no reference of
        its own, so a backend that can tell no one else holds the array may write the sum into it
        and save a new array; by default `add(total, part)`."""
        return self.add(total, part)

    def zero_out(self, a: Any) -> Any:
        """Zeros of `a`'s shape and dtype: `zero_grad(set_to_none=False)` clears a `.grad` with it.
        Written into `a` where the backend can, as PyTorch zeroes `.grad` in place (code holding the
        array sees the zeros, then what the next backward adds); returns the array holding the
        zeros, by default a new one. (Not `mul(a, 0.0)`: NaN * 0 is NaN.)"""
        return self.asarray(self.zeros(tuple(a.shape)), dtype=dtype_name(a))

    def memory_key(self, a: Any) -> Hashable | None:
        """A key that arrays sharing memory have in common (views of one buffer), or None
        when unknown. backward gives each leaf a gradient of its own: one whose key is taken
        (by another leaf, or the caller's seed), or None, is copied first."""
        return None

    # ---- optimizer updates: PyTorch's rules, composed from the helpers ----------
    def sgd_update(
        self, param: Any, grad: Any, buf: Any | None, *, lr: float, momentum: float,
        dampening: float, weight_decay: float, nesterov: bool,
    ) -> tuple[Any, Any | None]:
        """One SGD step as `torch.optim.SGD` does it; returns (new param, new momentum buffer)."""
        if weight_decay:
            grad = self.add(grad, self.mul(param, weight_decay))
        if momentum:
            if buf is None:  # a copy, as torch clones it: the caller may edit `.grad` in place later
                buf = self.copy(grad)
            else:
                buf = self.add(self.mul(buf, momentum), self.mul(grad, 1.0 - dampening))
            grad = self.add(grad, self.mul(buf, momentum)) if nesterov else buf
        return self.sub(param, self.mul(grad, lr)), buf

    def adam_update(
        self, param: Any, grad: Any, m: Any, v: Any, *, step: int, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float, decoupled: bool,
    ) -> tuple[Any, Any, Any]:
        """One Adam (or AdamW when `decoupled`) step as torch.optim does it; returns (param, m, v)."""
        if weight_decay and decoupled:
            param = self.mul(param, 1.0 - lr * weight_decay)
        elif weight_decay:
            grad = self.add(grad, self.mul(param, weight_decay))
        m = self.add(self.mul(m, beta1), self.mul(grad, 1.0 - beta1))
        v = self.add(self.mul(v, beta2), self.mul(self.mul(grad, grad), 1.0 - beta2))
        bias1 = 1.0 - beta1**step
        bias2_sqrt = math.sqrt(1.0 - beta2**step)
        denom = self.add(self.div(self.sqrt(v), bias2_sqrt), eps)
        return self.sub(param, self.mul(self.div(m, denom), lr / bias1)), m, v
