"""Anomaly mode: `with topgrad.detect_anomaly():` stops at the first NaN or Inf, forward or backward.

Every op's output and every gradient an op's backward returns is checked; the error names the
op, the phase, which array went bad and the line of user code that built the op (captured at
forward time, so a backward failure still points at the model's source). Each array costs one
reduction run by the backend, `max(|a|)` (finite when every value is; `sum(a * 0)` on a backend
without the Abs and Max ops), and only its 0-d result is read on the host; the NaN and Inf are
counted, in plain Python, only once one is found. No numpy: core works with any backend. Still
a debugging tool, not for every run.
"""

from __future__ import annotations

import contextlib
import linecache
import math
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

from topgrad.gradcheck import _read
from topgrad.observe import Observer, dtype_name, observing
from topgrad.op import Op
from topgrad.registry import get_backend
from topgrad.tensor import Tensor, no_grad

_CORE_DIR = os.path.dirname(os.path.abspath(__file__))


class AnomalyError(FloatingPointError):
    """A NaN or Inf appeared in an op's output (forward) or in a gradient (backward)."""

    def __init__(self, message: str, op: str, phase: str, built_at: str | None) -> None:
        super().__init__(message)
        self.op, self.phase, self.built_at = op, phase, built_at


def user_site(skip_modules: tuple[str, ...] = ()) -> str | None:
    """'file.py:12 in fn: source line' of the first caller outside topgrad (and `skip_modules`)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        top = module.split(".", 1)[0]
        in_core = top == "topgrad" or frame.f_code.co_filename.startswith(_CORE_DIR)
        if not in_core and top not in skip_modules and module != "contextlib":
            filename, lineno = frame.f_code.co_filename, frame.f_lineno
            code = linecache.getline(filename, lineno).strip()
            where = f"{filename}:{lineno} in {frame.f_code.co_name}"
            return f"{where}: {code}" if code else where
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _Checking(threading.local):
    """Set while this thread runs a check's own reduction: a backend whose Sum composes ops
    through `Op.apply` would otherwise be checked (and check itself) again."""

    active = False


_checking = _Checking()


def _finite(array: Any) -> bool:
    """True when `array` holds no NaN or Inf, told by one reduction on the backend: `max(|a|)` is
    finite exactly when every value is, and makes no NaN of an Inf (numpy would warn); without the
    optional Abs and Max ops, `sum(a * 0)`, 0 for finite values and NaN once one is NaN or Inf (a
    plain sum of finite values could overflow). The ops' forwards run under no_grad and outside
    `Op.apply`, so they record no graph node and no observer sees them. Integer and bool arrays
    hold neither. Where the backend cannot (no Sum op either), the values are read on the host."""
    kind = dtype_name(array)
    if kind != "?" and "float" not in kind and "complex" not in kind:
        return True
    backend = get_backend()
    before, _checking.active = _checking.active, True
    try:
        with no_grad():
            ops = backend.ops
            if hasattr(ops, "Abs") and hasattr(ops, "Max"):  # max|a|: makes no NaN of an Inf (no warning)
                total = ops.Max().forward(ops.Abs().forward(array), axis=None, keepdims=False)
            else:
                total = ops.Sum().forward(backend.mul(array, 0.0), axis=None, keepdims=False)
        return all(math.isfinite(v) for v in _read(backend.to_numpy(total)).values)
    except Exception:  # Sum missing, or refusing this array: count on the host
        nan, inf, _ = _census(array)
        return not (nan or inf)
    finally:
        _checking.active = before


def _census(array: Any) -> tuple[int, int, int]:
    """(number of NaN, number of Inf, size) of a backend array, counted in Python on the host."""
    values = _read(get_backend().to_numpy(array)).values  # gradcheck's reader: Python floats, flat
    return sum(map(math.isnan, values)), sum(map(math.isinf, values)), len(values)


def _describe(nan: int, inf: int, size: int) -> str:
    parts = [f"{nan} NaN"] if nan else []
    if inf:
        parts.append(f"{inf} Inf")
    return " and ".join(parts) + f" among {size} values"


def _bad(array: Any) -> bool:
    """NaN or Inf in `array`: the reduction's answer, confirmed on the host where it says so (a
    backend computing in lower precision may make NaN of `huge * 0`)."""
    if _finite(array):
        return False
    nan, inf, _ = _census(array)
    return bool(nan or inf)


class AnomalyDetector(Observer):
    """Checks outputs and gradients for NaN/Inf; remembers where each op was built."""

    def before_forward(self, op: Op, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        """Remember the user's line: the first frame outside topgrad and the backend's package (a
        backend may compose ops), not outside the op's own module, which may be the user's script."""
        if _checking.active:
            return
        backend_pkg = type(get_backend()).__module__.split(".", 1)[0]
        op._built_at = user_site((backend_pkg,))  # type: ignore[attr-defined]

    def after_forward(
        self, op: Op, args: tuple[Any, ...], params: dict[str, Any], result: Any, seconds: float
    ) -> None:
        """AnomalyError if the output holds NaN/Inf, saying whether an input brought them or this op did."""
        if _checking.active or _finite(result.data):
            return
        nan, inf, size = _census(result.data)
        if not (nan or inf):
            return
        name = type(op).__name__
        built_at = getattr(op, "_built_at", None)
        bad_inputs = [i for i, a in enumerate(args) if isinstance(a, Tensor) and _bad(a.data)]
        if bad_inputs:
            cause = (f"input {', '.join(map(str, bad_inputs))} already contained NaN/Inf "
                     "(the values came from outside this op: data, parameters or an op run "
                     "before anomaly mode began)")
        else:
            cause = "its inputs were finite, so this op produced them"
        raise AnomalyError(
            f"{name} (forward): its output of shape {tuple(result.shape)} has "
            f"{_describe(nan, inf, size)}; {cause}.\n  op built at {built_at or 'an unknown place'}",
            name, "forward", built_at,
        )

    def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """AnomalyError if a returned gradient holds NaN/Inf, saying whether the incoming one already did."""
        if _checking.active:
            return
        grads = grads if isinstance(grads, tuple) else (grads,)
        for i, g in enumerate(grads):
            if g is None or _finite(g):
                continue
            nan, inf, size = _census(g)
            if not (nan or inf):
                continue
            name = type(op).__name__
            built_at = getattr(op, "_built_at", None)
            cause = (
                "the incoming gradient already contained NaN/Inf, though every gradient the ops computed "
                "before it was finite: it is the seed passed to backward, or, where this op's output is "
                "used more than once, the sum of those uses' gradients, which can overflow though each "
                "is finite"
                if _bad(grad) else "the incoming gradient was finite, so this op's backward produced them"
            )
            raise AnomalyError(
                f"{name} (backward): the gradient for input {i}, shape {tuple(g.shape)}, has "
                f"{_describe(nan, inf, size)}; {cause}.\n  op built at {built_at or 'an unknown place'}",
                name, "backward", built_at,
            )


@contextlib.contextmanager
def detect_anomaly() -> Iterator[AnomalyDetector]:
    """Raise `AnomalyError` at the first op whose output or gradient holds NaN or Inf."""
    with observing(AnomalyDetector()) as detector:
        yield detector
