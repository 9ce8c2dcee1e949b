"""Prototypes of numpy-op changes not (yet) in the backend, to measure them (not a backend).

Registered as an override plugin (`install()`), they replace the numpy backend's ops in this
process only; `vs_torch.py --prototype ops` and `ab_prototype.py` use them. Each subclasses the
backend's op and changes only what PERF_NOTES.md recommends:

- Add and Mul sum broadcast gradients down to a trailing (C,) shape with a BLAS gemv;
- Linear adds its bias on a wide view (its input gradient skipped for a constant input, as the
  backend's own Linear skips it);
- LayerNorm writes its plain per-row numbers across their rows by the other of
  `gemm.fill_rows`' two ways (the broadcast copy where the backend takes the GEMM, i.e. with
  OpenBLAS's SkylakeX kernels, and the GEMM elsewhere): change 64 was measured on Haswell
  kernels only, and `ab_prototype.py --ops LayerNorm --models attention` checks it on a host.

The earlier prototypes of chunked Conv2d, BLAS Sum/Mean, BatchNorm/LayerNorm and the chunked
SGD update are now the backend's own code (see HISTORY.md), so they were removed from here.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import topgrad
from topgrad_numpy.ops import elementwise as _elementwise
from topgrad_numpy.ops import gemm as _gemm
from topgrad_numpy.ops import layernorm as _layernorm
from topgrad_numpy.ops import linear as _linear
from topgrad_numpy.ops._util import arr, unbroadcast

F32 = np.float32


# ---- helpers ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def ones(n: int) -> np.ndarray:
    """A read-only float32 ones vector of length n (cached: reductions reuse it)."""
    v = np.ones(n, dtype=F32)
    v.flags.writeable = False
    return v


def colsum(a2: np.ndarray) -> np.ndarray:
    """Column sums of a 2-d array, as one BLAS gemv (numpy's axis-0 sum is slow for few columns)."""
    return ones(a2.shape[0]) @ a2


def rowsum(a2: np.ndarray) -> np.ndarray:
    return a2 @ ones(a2.shape[1])


def wide(a2: np.ndarray, *vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    """`a2` (N, C), contiguous, viewed as (N/k, k*C), and each (C,) vector tiled k times."""
    n, c = a2.shape
    k = math.gcd(n, max(1, 1024 // max(c, 1)))
    return (a2.reshape(n // k, k * c), *(np.tile(v, k) for v in vectors))


def add_rowvec(a2: np.ndarray, v: np.ndarray) -> None:
    """a2 += v (broadcast over rows), in place, on the wide view."""
    aw, vw = wide(a2, v)
    aw += vw


def reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape` (numpy broadcasting undone); gemv when shape is grad's trailing axes."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead > 0 and tuple(grad.shape[lead:]) == tuple(shape) and grad.flags.c_contiguous:
        return colsum(grad.reshape(-1, max(1, math.prod(shape)))).reshape(shape)
    return unbroadcast(grad, shape)


# ---- ops ------------------------------------------------------------------------------------------
class Add(_elementwise.Add):
    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        sa, sb = self.shapes
        return (None if sa is None else reduce_to(grad, sa), None if sb is None else reduce_to(grad, sb))


class Mul(_elementwise.Mul):
    def backward(self, grad: np.ndarray) -> tuple[Any, Any]:
        # as the backend's: the number of `x * 2.0` (kept, not saved), else the saved operands
        a, b = self._intermediate if self.number is None else (self.number, self.number)
        sa, sb = _elementwise._needed(self)
        ga = None if sa is None else reduce_to(arr(grad * b), sa)
        gb = None if sb is None else reduce_to(arr(grad * a), sb)
        return ga, gb


class Linear(_linear.Linear):
    def forward(self, x: np.ndarray, w: np.ndarray, b: Any = None) -> np.ndarray:
        if b is None or x.ndim < 1 or w.ndim != 2 or x.shape[-1] != w.shape[0]:
            return super().forward(x, w, b)
        _linear._check(x, w, b)
        out = x.reshape(-1, w.shape[0]) @ w
        add_rowvec(out, b)
        self.save_for_backward(x, w)
        self.has_bias = True
        return out.reshape(*x.shape[:-1], w.shape[1])

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        x, w = self._intermediate
        g2 = grad.reshape(-1, w.shape[1])
        gx = (g2 @ w.T).reshape(x.shape) if self.needs_grad(0) else None
        gw = x.reshape(-1, w.shape[0]).T @ g2
        return gx, gw, colsum(g2) if self.has_bias else None


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


PROTOTYPES: dict[str, type[topgrad.Op]] = {"Add": Add, "Mul": Mul, "Linear": Linear, "LayerNorm": LayerNorm}


class _Plugin:
    @topgrad.hookimpl
    def topgrad_ops(self, backend: str) -> dict[str, Any] | None:
        if backend != "numpy":
            return None
        return {name: topgrad.override(op) for name, op in PROTOTYPES.items()}


def install(ops: bool = True) -> None:
    """Replace the numpy backend's Add, Mul, Linear and LayerNorm by the prototypes, in this process."""
    if ops:
        topgrad.register_plugin(_Plugin(), name="benchmarks-prototype-ops")
    topgrad.set_backend("numpy")
