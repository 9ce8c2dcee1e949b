"""Observers: objects that watch every op run, forward and backward (profiler, tracer, anomaly mode).

An observer is registered in `Op._observers`; while that list is empty `Op.apply` and the
backward engine take their short path, so watching costs nothing when nobody watches.
"""

from __future__ import annotations

import contextlib
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
