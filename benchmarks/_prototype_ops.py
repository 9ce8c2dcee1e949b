"""A prototype of a numpy-op change not in the backend, to measure it (not a backend).

Registered as an override plugin (`install()`), it replaces the numpy backend's LayerNorm in
this process only; `vs_torch.py --prototype ops` and `ab_prototype.py` use it. It subclasses the
backend's op and changes one thing: it writes its plain per-row numbers across their rows by the
other of `gemm.fill_rows`' two ways (the broadcast copy where the backend takes the GEMM, i.e.
with OpenBLAS's SkylakeX kernels, and the GEMM elsewhere). Change 64 was measured on Haswell
kernels only, and `ab_prototype.py --ops LayerNorm --models attention` checks it on a host.

The earlier prototypes (chunked Conv2d, BLAS Sum/Mean, BatchNorm/LayerNorm, the chunked SGD
update, Add and Mul summing broadcast gradients with a gemv, Linear adding its bias on a wide
view) are now the backend's own code (see HISTORY.md), so they were removed from here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import topgrad
from topgrad_numpy.ops import gemm as _gemm
from topgrad_numpy.ops import layernorm as _layernorm


class LayerNorm(_layernorm.LayerNorm):
    """The backend's LayerNorm with `gemm.fill_rows` taking its other path (the same bits)."""

    def forward(self, *args: Any, **kwargs: Any) -> np.ndarray:
        with _other_fill_rows():
            return super().forward(*args, **kwargs)

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        with _other_fill_rows():
            return super().backward(grad)


@contextlib.contextmanager
def _other_fill_rows() -> Iterator[None]:
    """`gemm.fill_rows` as if numpy's OpenBLAS had the other kernel family, for this block
    (only LayerNorm's expansions ask `small_kernels` inside it)."""
    own = _gemm.small_kernels
    other = not own()
    _gemm.small_kernels = lambda: other  # type: ignore[assignment]
    try:
        yield
    finally:
        _gemm.small_kernels = own


PROTOTYPES: dict[str, type[topgrad.Op]] = {"LayerNorm": LayerNorm}


class _Plugin:
    @topgrad.hookimpl
    def topgrad_ops(self, backend: str) -> dict[str, Any] | None:
        if backend != "numpy":
            return None
        return {name: topgrad.override(op) for name, op in PROTOTYPES.items()}


def install() -> None:
    """Replace the numpy backend's LayerNorm by the prototype, in this process."""
    topgrad.register_plugin(_Plugin(), name="benchmarks-prototype-ops")
    topgrad.set_backend("numpy")
