"""The guard: inside an op or a helper, torch may allocate, view and move memory, never compute.

`guarded(label)` activates a `TorchDispatchMode` that sees every aten op torch runs.
Allocation (`empty`, `new_empty`, `set_`), views (`view`, `permute`, `expand`, ...) and
copies that only move memory (a device transfer, or the interpreter writing a storage
back onto itself) pass; anything else raises `TorchComputeError`, naming the torch
function and the op it ran in. Guards nest: only the outermost one is a dispatch mode.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops (overload packet names) that allocate memory or make views of it.
ALLOWED: frozenset[str] = frozenset({
    # allocation
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "set_", "lift_fresh",
    # views and metadata
    "view", "_unsafe_view", "_reshape_alias", "as_strided", "alias", "detach", "permute", "transpose",
    "t", "expand", "unsqueeze", "squeeze", "select", "slice", "narrow", "unfold", "diagonal",
    "split", "split_with_sizes", "unbind", "view_as", "resolve_conj", "resolve_neg", "is_same_size",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
})
#: aten ops allowed only when they move memory without changing it (see `_moves_only`).
COPIES: frozenset[str] = frozenset({"copy_", "_to_copy", "_copy_from", "_copy_from_and_resize"})


class TorchComputeError(RuntimeError):
    """A torch compute op ran where only Triton kernels may compute."""


def _moves_only(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """True for a copy that keeps the dtype and either changes device or writes a storage onto itself."""
    if name == "_to_copy":
        src, dtype = args[0], kwargs.get("dtype")
        return dtype is None or dtype == src.dtype
    dst, src = (args[0], args[1]) if name == "copy_" else (args[1], args[0])
    if not (isinstance(dst, torch.Tensor) and isinstance(src, torch.Tensor)) or dst.dtype != src.dtype:
        return False
    if dst.device != src.device:
        return True  # a transfer between host and GPU
    same_storage = dst.untyped_storage().data_ptr() == src.untyped_storage().data_ptr()
    return same_storage and dst.storage_offset() == src.storage_offset() and dst.stride() == src.stride()


class ComputeGuard(TorchDispatchMode):
    """Raise on any aten op that is not allocation, a view, or a pure memory move."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name not in ALLOWED and not (name in COPIES and _moves_only(name, args, kwargs)):
            where = self.labels[-1] if self.labels else "?"
            raise TorchComputeError(
                f"torch.{name} ran inside topgrad-triton op {where}: all math must run in Triton kernels "
                f"(aten.{func.__name__} is not an allocation, a view or a memory move)"
            )
        return func(*args, **kwargs)


_state = threading.local()


@contextlib.contextmanager
def guarded(label: str) -> Iterator[None]:
    """Run the block with the compute guard on; `label` (e.g. "Add.forward") names it in errors."""
    mode: ComputeGuard | None = getattr(_state, "mode", None)
    if mode is not None:  # nested: the outer mode is active already
        mode.labels.append(label)
        try:
            yield
        finally:
            mode.labels.pop()
        return
    mode = _state.mode = ComputeGuard()
    mode.labels.append(label)
    try:
        with mode:
            yield
    finally:
        _state.mode = None
