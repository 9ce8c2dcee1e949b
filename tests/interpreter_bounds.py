"""Bounds checks for Triton's interpreter: a kernel that loads or stores outside the storage of
its tensor arguments fails with an IndexError naming the kernel (the interpreter re-raises it
as its InterpreterError).

The interpreter reads and writes host memory at whatever address a kernel computes, so an
out-of-range access that a mask lets through corrupts the test process silently (on a GPU it
would be an illegal address). conftest installs this whenever kernels run interpreted; it
wraps three private interpreter functions, and where a Triton version lacks them it checks
nothing and says why. Block-pointer and descriptor loads (unused here) are not checked.
"""

from __future__ import annotations

from typing import Any

import numpy as np

installed = False
"""True once `install` has wrapped the interpreter."""


def install() -> str | None:
    """Wrap the interpreter's argument set-up and masked loads and stores; None, or why not."""
    global installed
    if installed:
        return None
    try:
        from triton.runtime import interpreter
    except ImportError as exc:
        return f"no Triton interpreter ({exc})"
    try:
        executor, builder = interpreter.GridExecutor, interpreter.InterpreterBuilder
        init_args = executor._init_args_hst
        load, store = builder.create_masked_load, builder.create_masked_store
        np_dtype = interpreter._get_np_dtype
    except AttributeError as exc:
        return f"this Triton's interpreter differs ({exc})"
    ranges: list[tuple[int, int]] = []  # [start, end) of every tensor argument's storage
    kernel = [""]

    def checked_init_args(self: Any, args_dev: Any, kwargs: Any) -> Any:
        args, kw = init_args(self, args_dev, kwargs)
        ranges.clear()
        kernel[0] = getattr(self.fn, "__name__", "?")
        for arg in [*args, *kw.values()]:
            if hasattr(arg, "untyped_storage"):
                storage = arg.untyped_storage()
                ranges.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
        return args, kw

    def check(what: str, ptrs: Any, mask: Any) -> None:
        addresses = np.asarray(ptrs.data).astype(np.uint64)
        addresses = addresses[np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)]
        if addresses.size == 0:
            return
        ends = addresses + np.uint64(np_dtype(ptrs.get_element_ty()).itemsize)
        inside = np.zeros(addresses.shape, dtype=bool)
        for start, end in ranges:
            inside |= (addresses >= start) & (ends <= end)
        if not inside.all():
            raise IndexError(
                f"Triton kernel {kernel[0]}: {int((~inside).sum())} of {addresses.size} {what}s fall "
                f"outside the storage of its tensor arguments (a mask lets through an address it should not)"
            )

    def checked_load(self: Any, ptrs: Any, mask: Any, *rest: Any) -> Any:
        check("load", ptrs, mask)
        return load(self, ptrs, mask, *rest)

    def checked_store(self: Any, ptrs: Any, value: Any, mask: Any, *rest: Any) -> Any:
        check("store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest)

    executor._init_args_hst = checked_init_args
    builder.create_masked_load = checked_load
    builder.create_masked_store = checked_store
    installed = True
    return None
