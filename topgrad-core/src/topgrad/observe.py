"""Observers: objects that watch every op run, forward and backward (profiler, tracer, anomaly mode).

An observer is registered in `Op._observers`; while that tuple is empty `Op.apply` and the
backward engine take their short path, so watching costs nothing when nobody watches.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

from topgrad.op import Op

_O = TypeVar("_O", bound="Observer")
_changing = threading.Lock()  # two threads entering or leaving blocks at once each keep their change


def _new_lock_after_fork() -> None:
    """A forked child starts with a new lock: one another thread held at the fork stays held."""
    global _changing
    _changing = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


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

    def after_leaf_gradient(self, leaf: Any, grad: Any) -> None:
        """Called once a leaf's gradient of this backward is complete and stored in `leaf.grad`
        (`grad`): the sum over its uses, added to what `.grad` held before."""


def register(observer: Observer) -> None:
    """Start watching ops with `observer` (an `Observer`: the engine calls all of its hooks)."""
    if not isinstance(observer, Observer):
        raise TypeError(f"observers subclass topgrad.observe.Observer (it gives the hooks you do not "
                        f"override), got {type(observer).__name__}")
    with _changing:
        Op._observers = (*Op._observers, observer)


def unregister(observer: Observer) -> None:
    """Stop watching ops with `observer` (no error if it was not registered). A new tuple replaces
    the old, never edited in place: an op running in another thread keeps its whole snapshot."""
    with _changing:
        for i, registered in enumerate(Op._observers):
            if registered is observer:  # by identity: an observer may define __eq__
                Op._observers = Op._observers[:i] + Op._observers[i + 1:]
                return


@contextlib.contextmanager
def observing(observer: _O) -> Iterator[_O]:
    """Register `observer` for the duration of a `with` block."""
    register(observer)
    try:
        yield observer
    finally:
        unregister(observer)
