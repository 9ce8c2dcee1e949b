"""`topgrad.cat` and `topgrad.stack`: the shape checks of joining tensors along an axis.

Kept apart from the engine so that the Tensor functions and every backend's Concat op refuse
the same inputs with the same words: which tensor, which shapes, which axis.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

from topgrad.errors import type_name

T = TypeVar("T")


def joined_shape(op: str, shapes: Sequence[tuple[int, ...]], axis: Any) -> tuple[tuple[int, ...], int]:
    """The shape of `shapes` joined along `axis`, and the axis as a non-negative int; ValueError
    unless every size but the axis's matches, as in torch.cat."""
    if not shapes:
        raise ValueError(f"{op}: needs at least one tensor, got none")
    first = tuple(shapes[0])
    for i, shape in enumerate(shapes):
        if not shape:
            raise ValueError(f"{op}: tensor {i} is 0-d, which has no axis to join along; "
                             "make it 1-d first (x.reshape(1)), or use topgrad.stack")
    ax = normal_axis(op, axis, len(first))
    for i, shape in enumerate(shapes[1:], 1):
        shape = tuple(shape)
        if len(shape) != len(first) or any(a != b for d, (a, b) in enumerate(zip(shape, first)) if d != ax):
            raise ValueError(f"{op}: tensor {i} has shape {shape} and tensor 0 {first}; joined along axis "
                             f"{ax}, they must match in every other axis")
    return (*first[:ax], sum(s[ax] for s in shapes), *first[ax + 1:]), ax


def one_shape(op: str, shapes: Sequence[tuple[int, ...]]) -> None:
    """ValueError unless every shape is the first's, as torch.stack needs."""
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            raise ValueError(f"{op}: tensor {i} has shape {shape} and tensor 0 {shapes[0]}; "
                             "stack needs one shape (topgrad.cat joins along an existing axis)")


def normal_axis(op: str, axis: Any, ndim: int) -> int:
    """`axis` in [0, ndim) (negative counts from the end); TypeError for a non-int."""
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for tensors of {ndim} axes")
    return int(axis) % ndim


def tensor_list(op: str, tensors: Any, tensor_type: type[T]) -> list[T]:
    """`tensors` as a list of `tensor_type` (Topgrad's Tensor); TypeError for a lone Tensor or
    anything not a Tensor."""
    if isinstance(tensors, tensor_type) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: takes a list or tuple of Tensors, got {type(tensors).__name__}"
                        + (" (wrap a single Tensor in a list)" if isinstance(tensors, tensor_type) else ""))
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor, got none")
    for i, t in enumerate(tensors):
        if not isinstance(t, tensor_type):
            raise TypeError(f"{op}: tensor {i} must be a Tensor, got {type_name(t)} "
                            "(wrap an array as Tensor(a))")
    return list(tensors)
