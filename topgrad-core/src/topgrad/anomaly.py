"""Anomaly mode: `with topgrad.detect_anomaly():` stops at the first NaN or Inf, forward or backward.

Every op's output and every gradient an op's backward returns is checked; the error names the
op, the phase, which array went bad (by name, for a tensor in `detect_anomaly(names=...)`) and
the user code that built the op: up to four frames outside topgrad, innermost last, captured at
forward time (so a backward failure still points at the model's source) as code objects and
line numbers, turned into text only for an error or `graph()`. Each array costs one reduction
run by the backend, `max(|a|)` (finite when every value is; `sum(a * 0)` on a backend without
the Abs and Max ops), and only its 0-d result is read on the host; the NaN and Inf are counted,
in plain Python, only once one is found. No numpy: core works with any backend. Still a
debugging tool, not for every run; with anomaly mode off it costs nothing (an observer).
"""

from __future__ import annotations

import contextlib
import linecache
import math
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from numbers import Real
from types import CodeType
from typing import Any

from topgrad.arrays import dtype_name
from topgrad.gradcheck import _read
from topgrad.graph import check_names
from topgrad.observe import Observer, observing
from topgrad.op import Op
from topgrad.registry import get_backend
from topgrad.tensor import Tensor, no_grad
from topgrad.warning_location import TOPGRAD_DIR

FRAMES = 4  # frames of user code an anomaly report shows, innermost last
# Test runners' frames end the chain (a script's or a notebook cell's top level, `<module>`, does too).
_RUNNERS = frozenset({"_pytest", "pluggy", "unittest"})


class AnomalyError(FloatingPointError):
    """A NaN or Inf appeared in an op's output (forward) or in a gradient (backward).

    `built_at` is the innermost line of user code that built the op ("file:line in fn: source"),
    `stack` that line and its callers outside topgrad, outermost first (at most `FRAMES`)."""

    def __init__(self, message: str, op: str, phase: str, built_at: str | None,
                 stack: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.op, self.phase, self.built_at, self.stack = op, phase, built_at, stack


def _path(filename: str, compact: bool) -> str:
    """`filename` relative to the working directory where it lies under it; elsewhere the full
    path, or with `compact` its last two parts (`models/layers.py`)."""
    if filename.startswith("<"):  # <stdin>, <string>, a notebook's cell
        return filename
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        relative = filename
    if not relative.startswith(os.pardir) and not os.path.isabs(relative):
        return relative
    return os.sep.join(filename.split(os.sep)[-2:]) if compact else filename


def _frame_text(code: CodeType, lineno: int, compact: bool = False) -> str:
    """'file.py:12 in fn: source line' (no source where the file cannot be read)."""
    source = linecache.getline(code.co_filename, lineno).strip()
    where = f"{_path(code.co_filename, compact)}:{lineno} in {code.co_name}"
    return f"{where}: {source}" if source else where


class BuiltAt:
    """Where an op was built: up to `FRAMES` frames of user code as (code object, line number),
    innermost first, kept as they were captured (no frame, so no local variable, stays alive) and
    made text only when asked. `str()` is the innermost frame with a short path: what `graph()`
    shows after `@`; `lines()` the whole chain, outermost first, as a traceback reads."""

    __slots__ = ("frames",)

    def __init__(self, frames: tuple[tuple[CodeType, int], ...]) -> None:
        self.frames = frames

    def lines(self, compact: bool = False) -> tuple[str, ...]:
        """'file:line in fn: source' per frame, outermost first, innermost last."""
        return tuple(_frame_text(code, lineno, compact) for code, lineno in reversed(self.frames))

    def innermost(self, compact: bool = False) -> str:
        """The line that called topgrad: 'file:line in fn: source'."""
        code, lineno = self.frames[0]
        return _frame_text(code, lineno, compact)

    def __str__(self) -> str:
        return self.innermost(compact=True)

    def __repr__(self) -> str:
        return f"<BuiltAt {self.innermost(compact=True)!r}, {len(self.frames)} frame(s)>"


def user_frames(skip_modules: tuple[str, ...] = (), depth: int = 1) -> tuple[tuple[CodeType, int], ...]:
    """(code, line) of the first `FRAMES` frames outside topgrad (and `skip_modules`, and
    contextlib), innermost first, starting `depth` frames above this call. A `__call__` that
    called a `forward` (a module's dispatch) is left out; a test runner's frame, or after a
    script's top level (`<module>`), ends the chain."""
    found: list[tuple[CodeType, int]] = []
    frame = sys._getframe(depth)
    while frame is not None and len(found) < FRAMES:
        code = frame.f_code
        module = frame.f_globals.get("__name__", "")
        top = module.partition(".")[0]
        if top in _RUNNERS:
            break
        if not (top == "topgrad" or top in skip_modules or module == "contextlib"
                or code.co_filename.startswith(TOPGRAD_DIR)):
            if not (found and code.co_name == "__call__" and found[-1][0].co_name == "forward"):
                found.append((code, frame.f_lineno))
            if code.co_name == "<module>":
                break
        frame = frame.f_back  # type: ignore[assignment]
    return tuple(found)


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


def _bad(array: Any, inf_counts: bool = True) -> bool:
    """NaN (or, where `inf_counts`, Inf) in `array`: the reduction's answer, confirmed on the host
    where it says so (a backend computing in lower precision may make NaN of `huge * 0`)."""
    if _finite(array):
        return False
    nan, inf, _ = _census(array)
    return bool(nan or (inf and inf_counts))


def _input_text(label: str, x: Any, names: Mapping[int, str]) -> str:
    """What an operand is, for an error (`label`: "input 1", or a keyword): its name (from
    `detect_anomaly(names=...)`), whether it is a trainable leaf, a constant, an op's output, a
    raw array or a number, and its shape."""
    if isinstance(x, Real):
        return f"{label} is the number {x!r}"
    if not isinstance(x, Tensor):
        return f"{label} is an array of shape {tuple(int(d) for d in x.shape)}"
    name = names.get(id(x))
    shape = tuple(int(d) for d in x.shape)
    if x.op is not None:
        what = f"the output of a {type(x.op).__name__} op"
    else:
        what = "a trainable leaf" if x.requires_grad else "a constant (requires_grad=False)"
    return f"{label} is {f'{name!r}, ' if name else ''}{what} of shape {shape}"


def _holds_bad(x: Any, inf_counts: bool) -> bool:
    """NaN (or Inf, where it counts) in an operand: a Tensor, a raw backend array or a number."""
    if isinstance(x, Tensor):
        return _bad(x.data, inf_counts)
    if isinstance(x, Real) and not isinstance(x, bool):
        return math.isnan(x) or (inf_counts and math.isinf(x))
    return hasattr(x, "shape") and hasattr(x, "dtype") and _bad(x, inf_counts)


_NOT_RECORDED = object()  # an op whose forward ran outside anomaly mode: nothing was recorded


def _built_at_text(built_at: Any) -> tuple[str, tuple[str, ...], str]:
    """(innermost line, the chain outermost first, the error's 'op built at' part) of an op's
    `_built_at`: a BuiltAt, None (no frame outside topgrad) or `_NOT_RECORDED`."""
    if built_at is _NOT_RECORDED:
        return "", (), ("\n  op built at an unknown place: its forward ran before anomaly mode began "
                        "(run the forward pass inside detect_anomaly() too, to see where)")
    if built_at is None or not built_at.frames:
        return "", (), "\n  op built at an unknown place"
    stack = built_at.lines()
    return stack[-1], stack, "\n  op built at:" + "".join(f"\n    {line}" for line in stack)


class AnomalyDetector(Observer):
    """Checks outputs and gradients for NaN/Inf; remembers where each op was built."""

    def __init__(self, names: Mapping[str, Tensor] | None = None, inf: bool = True) -> None:
        self.inf = inf  # False: stop at NaN only (an additive -inf mask is meant)
        self.names: dict[int, str] = {}
        self._held: list[Tensor] = []  # the named tensors, kept alive so that their ids stay theirs
        if names is not None:
            check_names(names, "detect_anomaly")
            for name, t in names.items():
                self.names[id(t)] = name
                self._held.append(t)

    def before_forward(self, op: Op, args: tuple[Any, ...], params: dict[str, Any]) -> None:
        """Remember the user's call chain: the frames outside topgrad and the backend's package (a
        backend may compose ops), not outside the op's own module, which may be the user's script.
        Code objects and line numbers only: text is made for an error alone."""
        if _checking.active:
            return
        backend_pkg = type(get_backend()).__module__.partition(".")[0]
        # A backend written in the user's own script, notebook or test module: skipping its
        # module would drop every user frame, so then none is skipped
        frames = user_frames((backend_pkg,), depth=2) if backend_pkg != "__main__" else ()
        frames = frames or user_frames(depth=2)
        op._built_at = BuiltAt(frames) if frames else None  # type: ignore[attr-defined]

    def after_forward(
        self, op: Op, args: tuple[Any, ...], params: dict[str, Any], result: Any, seconds: float
    ) -> None:
        """AnomalyError if the output holds NaN/Inf, saying whether an input brought them or this op did."""
        if _checking.active or _finite(result.data):
            return
        nan, inf, size = _census(result.data)
        inf = inf if self.inf else 0
        if not (nan or inf):
            return
        name = type(op).__name__
        built_at, stack, where = _built_at_text(getattr(op, "_built_at", _NOT_RECORDED))
        # positional operands, then keyword ones (BatchNorm's running statistics), numbers too
        bad = [(f"input {i}", a) for i, a in enumerate(args) if _holds_bad(a, self.inf)]
        bad += [(key, v) for key, v in params.items() if _holds_bad(v, self.inf)]
        if bad:
            which = "; ".join(_input_text(label, x, self.names) for label, x in bad)
            if not self.names and any(isinstance(x, Tensor) and x.op is None for _, x in bad):
                which += " (detect_anomaly(names={'w': w, ...}) names it)"
            held = "NaN/Inf" if self.inf else "NaN"
            if all(isinstance(x, Real) for _, x in bad):  # the code that built the op gave it
                infinite = any(math.isinf(x) for _, x in bad)
                division = " (x / 0 is computed as x * inf)" if name == "Mul" and infinite else ""
                cause = f"{which}, given by the line that built it{division}"
            else:
                cause = (f"{', '.join(label for label, _ in bad)} already contained {held} "
                         "(the values came from outside this op: data, parameters or an op run "
                         f"before anomaly mode began): {which}")
        else:
            cause = ("its inputs were finite, so this op produced them" if self.inf else
                     "its inputs held no NaN (Inf is not checked: inf=False), so this op produced them")
        raise AnomalyError(
            f"{name} (forward): its output of shape {tuple(result.shape)} has "
            f"{_describe(nan, inf, size)}; {cause}.{where}",
            name, "forward", built_at or None, stack,
        )

    def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """AnomalyError if a returned gradient holds NaN/Inf, saying whether the incoming one already did."""
        if _checking.active:
            return
        grads = grads if isinstance(grads, tuple) else (grads,)
        parents = op.parents
        for i, g in enumerate(grads):
            if g is None or (i < len(parents) and not isinstance(parents[i], (Tensor, Op))):
                continue  # a plain value's (x * 3.0's 3.0): the engine drops it unread
            if _finite(g):
                continue
            nan, inf, size = _census(g)
            inf = inf if self.inf else 0
            if not (nan or inf):
                continue
            name = type(op).__name__
            built_at, stack, where = _built_at_text(getattr(op, "_built_at", _NOT_RECORDED))
            parent = parents[i] if i < len(parents) else None
            label = self.names.get(id(parent)) if isinstance(parent, Tensor) else None
            cause = _BACKWARD_CAUSE[_bad(grad, self.inf), self.inf]
            raise AnomalyError(
                f"{name} (backward): the gradient for input {i}{f' ({label!r})' if label else ''}, "
                f"shape {tuple(g.shape)}, has {_describe(nan, inf, size)}; {cause}.{where}",
                name, "backward", built_at or None, stack,
            )

    def after_leaf_gradient(self, leaf: Any, grad: Any) -> None:
        """AnomalyError if a leaf's complete gradient holds NaN/Inf though every gradient an op
        returned for it was checked: their sum (3e38 + 3e38) or the sum with an earlier `.grad` made
        them, where the next optimizer step would write them into the weights."""
        if _checking.active or _finite(grad):
            return
        nan, inf, size = _census(grad)
        inf = inf if self.inf else 0
        if not (nan or inf):
            return
        name = self.names.get(id(leaf))
        who = f"leaf {name!r}" if name else "a leaf (detect_anomaly(names={'w': w, ...}) names it)"
        checked = "finite" if self.inf else "free of NaN (Inf is not checked: inf=False)"
        raise AnomalyError(
            f"{who}, shape {tuple(leaf.shape)}: its gradient in .grad has {_describe(nan, inf, size)}, "
            f"though every gradient the ops returned for it was {checked}: their sum made them (the "
            "leaf is used more than once), or the .grad they were added to held them (from an earlier "
            "backward: opt.zero_grad() clears it)",
            "leaf", "backward", None, (),
        )


_BACKWARD_CAUSE = {  # (the incoming gradient held NaN/Inf, Inf counts) -> why a gradient went bad
    (True, True): "the incoming gradient already contained NaN/Inf, though every gradient the ops computed "
                  "before it was finite: it is the seed passed to backward, or, where this op's output is "
                  "used more than once, the sum of those uses' gradients, which can overflow though each "
                  "is finite",
    (True, False): "the incoming gradient already contained NaN, though no gradient the ops computed before "
                   "it held NaN (Inf is not checked: inf=False): it is the seed passed to backward, or, "
                   "where this op's output is used more than once, the sum of those uses' gradients, NaN "
                   "where one use's Inf meets another's -Inf",
    (False, True): "the incoming gradient was finite, so this op's backward produced them",
    (False, False): "the incoming gradient held no NaN (inf=False), so this op's backward produced them",
}


@contextlib.contextmanager
def detect_anomaly(names: Mapping[str, Tensor] | None = None, inf: bool = True) -> Iterator[AnomalyDetector]:
    """Raise `AnomalyError` at the first op whose output or gradient holds NaN or Inf.

    `names` ({name: tensor}, as `graph()` takes: a model's parameters) names an input that
    already held NaN/Inf, and an input whose gradient went bad. `inf=False` stops at NaN only,
    for a graph that means its Inf (an additive -inf mask before a softmax; PyTorch's anomaly
    mode checks backward's NaN alone)."""
    if not isinstance(inf, bool):
        raise TypeError(f"detect_anomaly: inf is True or False, got {inf!r}")
    with observing(AnomalyDetector(names, inf)) as detector:
        yield detector
