"""Print each op as it runs: `TOPGRAD_TRACE=1 python train.py`, or `with topgrad.trace.tracing():`.

One line per op call, to stderr: the op, forward or backward, the shapes in and out, the time.
A backward line ends with its op's forward line ("forward: line 3"), so the two pair up.
`import topgrad` reads TOPGRAD_TRACE once and, when it is set (and not 0), calls `enable()`.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any, TextIO

from topgrad.arrays import shape_of
from topgrad.graph import _shape_text
from topgrad.indexing import index_text, is_index
from topgrad.observe import Observer, observing, register, unregister
from topgrad.op import Op
from topgrad.tensor import Tensor

_global: Tracer | None = None


def _shapes(values: Any) -> str:
    parts = []
    for v in values:
        if isinstance(v, Tensor):
            v = v.data
        shape = shape_of(v)
        if shape is not None:
            parts.append(_shape_text(shape))
        elif v is None:
            parts.append("None")  # a missing operand (no bias): "-" ran into the "->" after it
        else:
            parts.append(repr(v) if isinstance(v, (int, float, bool)) else type(v).__name__)
    return " ".join(parts)


class Tracer(Observer):
    """Writes one line per op call to `stream` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.count = 0
        self._numbering = threading.Lock()  # ops in several threads: each line its own number
        # id(op) -> (a weak reference to it, its forward line); by id, as the engine keys ops: a user's
        # Op may be unhashable (a @dataclass), and the entry goes with the op
        self.forward_lines: dict[int, tuple[weakref.ref[Op], int]] = {}

    def _write(self, line: str) -> int:
        """Print `line` numbered; returns its number (another thread may write the next one)."""
        with self._numbering:
            self.count += 1
            number = self.count
        print(f"[topgrad {number:>6}] {line}", file=self.stream or sys.stderr)
        return number

    def after_forward(
        self, op: Op, args: tuple[Any, ...], params: dict[str, Any], result: Any, seconds: float
    ) -> None:
        """Write the forward line: op, input and output shapes, parameters, time."""
        key, lines = id(op), self.forward_lines
        extra = " ".join(
            f"{k}={index_text(v) if is_index(v) else v}" for k, v in params.items()
            if isinstance(v, (bool, int, float, str, tuple))
        )
        number = self._write(
            f"{type(op).__name__:<12} forward  {_shapes(args)} -> {_shapes((result,))}"
            f"{'  ' + extra if extra else ''}  {seconds * 1e3:.3f} ms"
        )
        lines[key] = (weakref.ref(op, lambda _: lines.pop(key, None)), number)

    def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
        """Write the backward line: op, incoming and returned gradients' shapes, time, its forward line."""
        grads = grads if isinstance(grads, tuple) else (grads,)
        entry = self.forward_lines.get(id(op))
        line = entry[1] if entry is not None and entry[0]() is op else None  # None: forward before tracing
        self._write(
            f"{type(op).__name__:<12} backward {_shapes((grad,))} -> {_shapes(grads)}  {seconds * 1e3:.3f} ms"
            f"{'' if line is None else f'  (forward: line {line})'}"
        )


def enable(stream: TextIO | None = None) -> Tracer:
    """Start tracing every op (what TOPGRAD_TRACE=1 does at import); returns the tracer. Where
    tracing is on already, a `stream` given now is where its lines go from here on."""
    global _global
    if _global is None:
        _global = Tracer(stream)
        register(_global)
    elif stream is not None:  # after TOPGRAD_TRACE=1, enable(buf) kept writing to stderr
        _global.stream = stream
    return _global


def disable() -> None:
    """Stop the tracing `enable()` started."""
    global _global
    if _global is not None:
        unregister(_global)
        _global = None


@contextlib.contextmanager
def tracing(stream: TextIO | None = None) -> Iterator[Tracer]:
    """Trace every op run inside the block."""
    with observing(Tracer(stream)) as tracer:
        yield tracer
