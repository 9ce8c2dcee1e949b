"""`x[index]`: a basic index (ints, slices, None, ...) checked and written out per axis.

Backends receive the index in one canonical form, so that none of them parses Python's
indexing rules: a tuple with one entry per axis of `x` (an int in range, or a slice whose
start, stop and step are ints with step >= 1, as `slice.indices` gives them) and `None`
wherever a new axis of size 1 goes. The rules are PyTorch's, which are numpy's without
negative steps and without advanced indexing (arrays, lists, booleans).
"""

from __future__ import annotations

import operator
from typing import Any, TypeGuard

Index = tuple[int | slice | None, ...]


def basic_index(index: Any, shape: tuple[int, ...]) -> Index:
    """`index` as the canonical tuple for a tensor of `shape`; IndexError for an int out of range
    or too many indices (so `for row in x` stops), TypeError for anything but basic indexing."""
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        _check_kind(item)
    if sum(item is Ellipsis for item in items) > 1:
        raise IndexError("Slice: an index can only have a single ellipsis ('...')")
    used = sum(item is not None and item is not Ellipsis for item in items)
    if used > len(shape):
        raise IndexError(f"Slice: too many indices for a tensor of shape {shape}: {used} given, "
                         f"it has {len(shape)} axes")
    if Ellipsis not in items:
        items = (*items, Ellipsis)
    out: list[int | slice | None] = []
    axis = 0
    for item in items:
        if item is None:
            out.append(None)
        elif item is Ellipsis:
            for _ in range(len(shape) - used):
                out.append(slice(0, shape[axis], 1))
                axis += 1
        else:
            out.append(_one_axis(item, axis, shape[axis]))
            axis += 1
    return tuple(out)


def _check_kind(item: Any) -> None:
    if item is None or item is Ellipsis or isinstance(item, slice):
        return
    if not isinstance(item, bool) and type(item).__name__ != "bool_":
        try:
            operator.index(item)
            return
        except TypeError:
            pass
    shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:37] + "..."
    raise TypeError(
        f"Slice: cannot index with {type(item).__name__} {shown}; Topgrad takes basic indexing "
        "only: ints, slices (start:stop:step), None and ... (arrays, lists and booleans, "
        "numpy's advanced indexing, are not supported)"
    )


def _one_axis(item: int | slice, axis: int, size: int) -> int | slice:
    """One axis's entry: a non-negative int, or a slice of ints with a positive step."""
    if isinstance(item, slice):
        for part in ("start", "stop", "step"):
            value = getattr(item, part)
            if value is not None and not hasattr(value, "__index__"):
                raise TypeError(f"Slice: the {part} of axis {axis}'s slice must be an int or None, got "
                                f"{value!r} (as in PyTorch and numpy)")
        step = 1 if item.step is None else operator.index(item.step)
        if step <= 0:
            why = "; as in PyTorch, reversing by a negative step is not supported" if step else ""
            raise ValueError(f"Slice: the step of axis {axis} must be positive, got {step}{why}")
        return slice(*item.indices(size))
    i = operator.index(item)
    if not -size <= i < size:
        raise IndexError(f"Slice: index {i} is out of range for axis {axis} of size {size}")
    return i % size


def is_index(value: Any) -> TypeGuard[Index]:
    """Is `value` a basic index in the canonical form (a tuple of ints, slices and None, with
    at least one slice or None)? graph() and the trace show such a value as `index_text` writes it."""
    return (isinstance(value, tuple) and any(v is None or isinstance(v, slice) for v in value)
            and all(v is None or isinstance(v, (int, slice)) for v in value))


def index_text(index: Index) -> str:
    """'[1, 2:5, :8:2, None]': a canonical index as Python code writes it (a slice's start 0 and
    step 1 left out)."""
    def one(item: int | slice | None) -> str:
        if not isinstance(item, slice):
            return str(item)
        start = "" if item.start in (None, 0) else str(item.start)
        stop = "" if item.stop is None else str(item.stop)
        return f"{start}:{stop}" + ("" if item.step in (None, 1) else f":{item.step}")

    return "[" + ", ".join(one(item) for item in index) + "]"
