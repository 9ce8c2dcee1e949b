"""Observers: objects that watch every op run, forward and backward (profiler, tracer, anomaly mode).

An observer is registered in `Op._observers`; while that list is empty `Op.apply` and the
backward engine take their short path, so watching costs nothing when nobody watches.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any, TypeVar

from topgrad.op import Op

_O = TypeVar("_O", bound="Observer")


class Observer:
    """Base class with do-nothing hooks; subclasses override the ones they need."""

    def before_forward(self, op: Op, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        """Called before `op.forward`; `args` are the positional arguments of `apply`."""

    def after_forward(
        self, op: Op, args: tuple[Any, ...], params: dict[str, Any], result: Any, seconds: float
    ) -> None:
        """Called after `op.forward` with the output Tensor and the forward time."""

    def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """Called after `op.backward` with the incoming gradient and the gradients it returned."""


def register(observer: Observer) -> None:
    """Start watching ops with `observer` (an `Observer`: the engine calls all three hooks)."""
    if not isinstance(observer, Observer):
        raise TypeError(f"observers subclass topgrad.observe.Observer (it gives the hooks you do not "
                        f"override), got {type(observer).__name__}")
    Op._observers.append(observer)


def unregister(observer: Observer) -> None:
    """Stop watching ops with `observer` (no error if it was not registered)."""
    # Remove by identity: an observer may define __eq__.
    for i, registered in enumerate(Op._observers):
        if registered is observer:
            del Op._observers[i]
            return


@contextlib.contextmanager
def observing(observer: _O) -> Iterator[_O]:
    """Register `observer` for the duration of a `with` block."""
    register(observer)
    try:
        yield observer
    finally:
        unregister(observer)


# ---- reading arrays without knowing the backend ----------------------------------------
def nbytes(obj: Any) -> int:
    """Bytes held by a backend array (numpy, torch, ...), or by a tuple/list of them; 0 otherwise."""
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    n = getattr(obj, "nbytes", None)
    if isinstance(n, int):
        return n
    shape = getattr(obj, "shape", None)
    if shape is None:
        return 0
    numel = getattr(obj, "numel", None)
    element_size = getattr(obj, "element_size", None)
    if callable(numel) and callable(element_size):  # torch.Tensor
        return int(numel()) * int(element_size())
    return math.prod(int(s) for s in shape) * itemsize(getattr(obj, "dtype", None))


def itemsize(dtype: Any) -> int:
    """Bytes per element of a dtype: its `.itemsize` (numpy, torch), else the bit count its name
    ends with ('float64' -> 8, for a backend whose dtype is a name); 0 when neither tells."""
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    bits = re.search(r"(\d+)$", str(dtype))
    return int(bits.group(1)) // 8 if bits else 0


def is_array(obj: Any) -> bool:
    """True for backend arrays: anything with a shape and a dtype."""
    return hasattr(obj, "shape") and hasattr(obj, "dtype")


def shape_of(obj: Any) -> tuple[int, ...] | None:
    """The shape of an array or Tensor as a tuple of ints, else None."""
    shape = getattr(obj, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(obj: Any) -> str:
    """'float32', 'int64', ... for numpy and torch dtypes alike."""
    dtype = getattr(obj, "dtype", None)
    if dtype is None:
        return "?"
    try:
        return _DTYPE_NAMES[dtype]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype object
        name = str(dtype).removeprefix("torch.")
        with contextlib.suppress(TypeError):
            _DTYPE_NAMES[dtype] = name
        return name
