"""Which arrays nothing but their caller can reach, told by CPython's reference counts.

Such an array may be written over instead of filling a new one, whose memory is cold: backward's
sum of two gradients goes into the first (`unshared_argument`), ReLU's dL/dx into its saved
output (`unshared_saved`). Any other holder adds a reference: a Tensor, a dict, an op's saved
arrays, and every view (a view's `base` is the array owning the memory). Each count a check
compares with is measured at import through the same shape of calls the check makes, so it
follows the running CPython's rules for frames and calls; an interpreter without reference
counts (PyPy has no `sys.getrefcount`) gets 0 there, and nothing is unshared.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

_COUNTED = hasattr(sys, "getrefcount")


def unshared_argument(a: np.ndarray) -> bool:
    """Whether `a`, handed over by a caller that keeps no reference of its own (backward pops the
    gradient it passes), is a writeable array that only the calls in between refer to, and whose
    memory is its own or that of an array only `a` refers to (an op's gradient is often a
    reshaped view of a new array)."""
    return bool(ARGUMENT_REFS and a.flags.writeable and sys.getrefcount(a) <= ARGUMENT_REFS
                and _owner_free(a))


def unshared_saved(op: Any, i: int) -> bool:
    """Whether the array `op` saved at position i may be written over in its backward: the engine
    drops the saved arrays after it (`saved_are_scratch`), and nothing refers to that array but
    the saved tuple and the one local the backward unpacked it into (its output's Tensor, a
    consumer's saved copy or a view would each add a reference)."""
    if not (SAVED_REFS and op.saved_are_scratch) or _saved_refs(op, i) > SAVED_REFS:
        return False
    a = op.saved[i]
    return type(a) is np.ndarray and a.flags.writeable and _owner_free(a)


def _owner_free(a: np.ndarray) -> bool:
    """`a` owns its memory, or the array that does is referred to by `a`'s `base` alone."""
    if a.base is None:
        return True
    if type(a.base) is not np.ndarray or a.base.base is not None:
        return False
    return _owner_refs(a) <= OWNER_REFS


def _owner_refs(a: np.ndarray) -> int:
    owner = a.base
    return sys.getrefcount(owner)


def _saved_refs(op: Any, i: int) -> int:
    a = op.saved[i]
    return sys.getrefcount(a)


def _argument_refs(a: np.ndarray) -> int:
    """The count of a temporary handed to a function that passes it on, counted in the callee,
    as `add_gradients` hands `total` to `unshared_argument`."""
    return _refs_in_callee(a)


def _refs_in_callee(a: np.ndarray) -> int:
    return sys.getrefcount(a)


class _SavedProbe:
    """An op's shape for `unshared_saved`'s calibration: one saved array, which backward unpacks."""

    saved_are_scratch = True

    def __init__(self, a: np.ndarray) -> None:
        self.saved = (a,)

    def backward(self) -> int:
        """The count `_saved_refs` takes while a backward holds the unpacked array."""
        (_output,) = self.saved  # as ReLU's backward unpacks its output: a local held meanwhile
        return _saved_refs(self, 0)


ARGUMENT_REFS = _argument_refs(np.empty(1)) if _COUNTED else 0
OWNER_REFS = _owner_refs(np.empty(2).reshape(1, 2)) if _COUNTED else 0
SAVED_REFS = _SavedProbe(np.empty(1)).backward() if _COUNTED else 0
