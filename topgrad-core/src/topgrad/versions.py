"""The update clock: counts in-place writes (optimizer steps, adds into a `.grad`) so that backward
refuses an op whose saved input was overwritten after its forward, as PyTorch's version counters do;
and the tensors PyTorch would make views, whose in-place operators Topgrad refuses."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from topgrad import registry

if TYPE_CHECKING:  # tensor.py imports this module: the engine's types are for the checker only
    from topgrad.op import Op
    from topgrad.tensor import Tensor


class _UpdateClock:
    """Counts in-place writes (optimizer steps, adds into a `.grad`), as PyTorch's version counters
    do, so backward can tell an op's saved arrays were overwritten; written under `lock`."""

    def __init__(self) -> None:
        self.now = 0  # each op keeps it at forward, each leaf at its last step (read without the lock)
        self.leaves: weakref.WeakSet[Tensor] = weakref.WeakSet()  # stepped leaves: a saved view matches
        self.grads: weakref.WeakKeyDictionary[Tensor, int] = weakref.WeakKeyDictionary()  # .grads written
        self.lock = threading.Lock()  # threads train at once: a set being added to cannot be iterated
        # held while backward stores a leaf's gradient: two threads' backwards through one shared
        # parameter would both see .grad None, or overlap in numpy's in-place add (which drops the GIL)
        self.grad_lock = threading.Lock()


_updates = _UpdateClock()


def _new_clock_lock() -> None:
    """A forked child starts with new locks: one another thread held at the fork stays held."""
    _updates.lock, _updates.grad_lock = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_clock_lock)


_views: weakref.WeakSet[Tensor] = weakref.WeakSet()


def mark_view(t: Tensor) -> Tensor:
    """`t`, remembered as what PyTorch makes a view of another tensor (x[i], x.T, x.reshape(...),
    x.permute(...), x.detach()): an in-place operator there writes through to that tensor in
    PyTorch, and Topgrad's, which give `t` new values of its own, would silently not."""
    _views.add(t)
    return t


def is_view(t: Tensor) -> bool:
    """Whether `t` was made as PyTorch makes a view (`mark_view`)."""
    return t in _views


def mark_updated(t: Tensor) -> None:
    """Record that `t.data` was just written in place (an optimizer step)."""
    with _updates.lock:
        _updates.now += 1
        t._updated_at = _updates.now
        _updates.leaves.add(t)


def mark_grad_written(t: Tensor) -> int:
    """Record that `t.grad`'s array was just written in place (backward's sum, zero_grad's zeros);
    returns the clock's new count."""
    with _updates.lock:
        _updates.now += 1
        _updates.grads[t] = _updates.now
        return _updates.now


def refuse_overwritten(op: Op, writes: _Writes | None, backend: Any, tensor_type: type[Any]) -> _Writes:
    """RuntimeError if `op` saved an array written in place since its forward; else the table of
    writes it was checked against, which backward passes to the next op (built again only where
    the clock moved since)."""
    if writes is None or writes.at != _updates.now:
        writes = _Writes(backend, tensor_type)
    writes.refuse(op)
    return writes


class _Writes:
    """The memory the update clock counted writes into, as of its count `at`: each stepped leaf's
    data and each added-into `.grad`, with when. One backward builds it once and keeps it current
    with its own adds, so checking an op costs its saved arrays, not every clocked leaf."""

    def __init__(self, backend: Any, tensor_type: type[Any]) -> None:
        with _updates.lock:
            self.at, leaves, grads = _updates.now, list(_updates.leaves), list(_updates.grads.items())
        self.backend, self.tensor_type = backend, tensor_type  # Tensor: tensor.py imports this module
        self.stepped: dict[Any, tuple[Tensor, int]] = {}  # memory key: (leaf, when its data was stepped)
        self.added: dict[Any, tuple[Tensor, int]] = {}  # memory key: (leaf, when its .grad was written)
        for t in leaves:
            self._keep(self.stepped, t.data, t, t._updated_at)
        for t, at in grads:
            self._keep(self.added, t._grad, t, at)

    def _keep(self, table: dict[Any, tuple[Tensor, int]], array: Any, leaf: Tensor, at: int) -> None:
        key = None if array is None else self.backend.memory_key(array)
        if key is not None and (key not in table or table[key][1] < at):  # the latest write counts
            table[key] = (leaf, at)

    def grad_added(self, leaf: Tensor, now: int) -> None:
        """The walk just added into leaf's .grad, moving the clock to `now`: kept current if that was
        the only move since (another thread's step makes the next check build a new one)."""
        if self.at == now - 1:
            self._keep(self.added, leaf._grad, leaf, now)
            self.at = now

    def refuse(self, op: Op) -> None:
        """RuntimeError if `op` saved an array (a leaf's, a view of it, a .grad's) written in place
        since its forward, as PyTorch's version counters; an op that saved only other arrays goes on."""
        backend, born = self.backend, op._born
        array_type = registry._array_type(backend)
        for a in op._intermediate:
            key = backend.memory_key(a) if isinstance(a, array_type) else None
            if key is None:
                continue
            added, stepped = self.added.get(key), self.stepped.get(key)
            if added is not None and added[1] > born:
                raise RuntimeError(
                    f"{type(op).__name__}: an array it saved is the memory of the .grad of a leaf of shape "
                    f"{added[0].shape}, which was written after this op's forward (backward adds into "
                    ".grad in place, as PyTorch does, and zero_grad(set_to_none=False) zeroes it in place), "
                    "so its gradient would be wrong; make such a "
                    "Tensor from a copy of the .grad array, or run the forward pass again")
            if stepped is not None and stepped[1] > born:
                leaf = stepped[0]
                inputs = [i for i, parent in enumerate(op.parents) if parent is leaf]
                what = (f"its input {inputs[0]} (a leaf of shape {leaf.shape})" if inputs else
                        f"it saved a view of a leaf of shape {leaf.shape} (through reshape, detach() or "
                        "another view), which")
                raise RuntimeError(f"{type(op).__name__}: {what} was {_OVERWRITTEN}")
        for i, parent in enumerate(op.parents):
            if (isinstance(parent, self.tensor_type) and parent._updated_at > born
                    and backend.memory_key(parent.data) is None):
                raise RuntimeError(f"{type(op).__name__}: its input {i} (a leaf of shape {parent.shape}) was "
                                   f"{_OVERWRITTEN}")


_OVERWRITTEN = (
    "updated in place by an optimizer step after this op's forward, so the arrays it saved hold "
    "the new values and its gradient would be wrong; run the forward pass again after "
    "optimizer.step() (step after backward)"
)
