"""`TritonBackend`: torch tensors for storage, Triton kernels for every helper and op.

Constructing the backend checks that kernels can run (a CUDA GPU, or Triton's interpreter
under ``TRITON_INTERPRET=1``) and raises `topgrad.BackendUnavailableError` otherwise; torch
and triton are imported only then. Every helper runs under the compute guard.
"""

from __future__ import annotations

import functools
import numbers
import operator
from collections.abc import Callable
from typing import Any

import topgrad
from topgrad.arguments import refuse_non_numbers

from topgrad_triton import runtime
from topgrad_triton.shapes import collapse, distinct_elements


def _guarded_helper(fn: Callable[..., Any]) -> Callable[..., Any]:
    label = f"TritonBackend.{fn.__name__}"

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        from topgrad_triton.guard import guarded

        with guarded(label):
            return fn(*args, **kwargs)

    return inner


def _same_view(a: Any, b: Any) -> bool:
    """Whether two tensors are the same elements of the same memory (their data and strides agree)."""
    return bool(a.data_ptr() == b.data_ptr() and a.stride() == b.stride())


def _names_float32(dtype: Any) -> bool:
    """Whether `dtype` spells float32 for numpy ('float32', 'f4', np.float32, ...) or torch."""
    return _spells(dtype, "float32")


def _names_float64(dtype: Any) -> bool:
    """Whether `dtype` spells float64 ('double', np.float64, torch.float64, ...): the numpy
    backend's other dtype, which the refusal then points to."""
    return _spells(dtype, "float64")


def _spells(dtype: Any, name: str) -> bool:
    """Whether `dtype` is numpy's or torch's spelling of the dtype `name`."""
    if str(dtype) in (name, f"torch.{name}"):
        return True
    import numpy as np

    try:
        return dtype is not None and np.dtype(dtype) == np.dtype(name)
    except TypeError:
        return False


def _as_shape(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    """`shape` as a tuple: an int (Python's or numpy's) n is (n,), as numpy's constructors take it."""
    if isinstance(shape, (int, numbers.Integral)):
        return (operator.index(shape),)
    return tuple(shape)


def _refuse_non_numbers(obj: Any) -> Any:
    """A TypeError, as the numpy backend's, for text where numbers belong: an array of text, or a (nested)
    list or tuple holding text, which numpy would parse into numbers (PyTorch refuses it); likewise
    None in a list and object arrays, which numpy would make NaN, and dates, which it would count.
    Returns numpy's reading of a list or tuple (None for anything else, or where numpy cannot read
    it), for `asarray` to check for complex values too."""
    import numpy as np

    if not isinstance(obj, (list, tuple)):
        refuse_non_numbers("triton", obj)
        return None
    try:
        probe = np.asarray(obj)
    except Exception:  # ragged, or Tensors that require grad: the conversion says what
        return None
    refuse_non_numbers("triton", obj, probe)
    return probe


def _on_host(obj: Any, probe: Any, torch: Any, refuse_complex: Callable[[Any], None]) -> Any:
    """A C-contiguous float32 numpy copy of `obj` (a number, numpy array, or nested list or tuple,
    `probe` numpy's reading of one). A list holding torch tensors (`[loss.data, ...]`) that numpy
    could not read has each read back to the host first (numpy reads a 0-d one through float(),
    torch compute under the guard, and cannot read a GPU one at all), a complex one refused by
    `refuse_complex` (numpy would drop its imaginary part). Anything else numpy cannot make
    float32 (a ragged list) raises a TypeError with numpy's reason."""
    import numpy as np

    def holds_tensors(o: Any) -> bool:
        return isinstance(o, torch.Tensor) or (isinstance(o, (list, tuple)) and any(map(holds_tensors, o)))

    def read_back(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            refuse_complex(o)
            return o.detach().cpu().numpy()
        return [read_back(v) for v in o] if isinstance(o, (list, tuple)) else o

    given = type(obj).__name__
    if probe is not None:  # numpy has read the list already: convert that, not the list again
        obj = probe
    elif isinstance(obj, (list, tuple)) and holds_tensors(obj):
        obj = read_back(obj)
    try:
        with np.errstate(over="ignore"):  # 1e300 becomes inf, as in PyTorch, without numpy's warning
            return np.array(obj, dtype=np.float32, copy=True)  # C-contiguous; refuses ragged lists
    except (TypeError, ValueError, RuntimeError) as failed:
        raise TypeError(f"triton backend: cannot make a float32 array from {given}: "
                        f"{failed}") from None


class TritonBackend(topgrad.Backend):
    """Topgrad backend whose ops, helpers and optimizer updates are Triton kernels."""

    name = "triton"

    def __init__(self) -> None:
        runtime.check_available()
        import torch

        from topgrad_triton import ops
        from topgrad_triton.kernels import elementwise, fill, optim

        self._torch = torch
        self._ew, self._fill, self._optim = elementwise, fill, optim
        self.ops = ops.table()
        self.device = torch.device(runtime.device())

    @property
    def where(self) -> str:
        """CUDA, or Triton's CPU interpreter (each kernel run in numpy: slow, for tests)."""
        return "Triton interpreter on CPU: slow" if runtime.interpreting() else "CUDA"

    # ---- conversion ---------------------------------------------------------------
    @_guarded_helper
    def asarray(self, obj: Any, dtype: str = "float32") -> Any:
        """A float32 torch tensor on the backend's device; a dtype change runs in the copy kernel.

        Only float32 is held (the kernels compute in fp32): another `dtype` raises TypeError.
        """
        torch = self._torch
        if not _names_float32(dtype):
            also = "; the numpy backend computes in float64" if _names_float64(dtype) else ""
            raise TypeError(f"backend 'triton' holds float32 arrays only (its kernels compute in fp32), "
                            f"got dtype={dtype!r}{also}")
        self.refuse_complex(obj)
        if obj is None:  # numpy would make it NaN
            raise TypeError("triton backend: cannot make an array from None")
        if not isinstance(obj, torch.Tensor):
            # numpy would parse text, and drop a list's complex values' imaginary parts (with only a
            # ComplexWarning); PyTorch refuses text, and keeps complex values complex
            probe = _refuse_non_numbers(obj)
            self.refuse_complex(probe)
            obj = torch.from_numpy(_on_host(obj, probe, torch, self.refuse_complex))
        if obj.device != self.device:
            obj = obj.to(self.device)
        if obj.dtype != torch.float32:
            out = torch.empty(tuple(obj.shape), dtype=torch.float32, device=self.device)
            obj = self._ew.elementwise(self._ew.COPY, obj, name="asarray", out=out)
        return obj

    @_guarded_helper
    def to_numpy(self, a: Any) -> Any:
        """A numpy copy of the array."""
        import numpy as np

        if not isinstance(a, self._torch.Tensor):
            return np.asarray(a, dtype=np.float32)
        return np.array(a.detach().cpu().numpy(), copy=True)

    # ---- constructors -------------------------------------------------------------
    @_guarded_helper
    def full(self, shape: int | tuple[int, ...], value: float) -> Any:
        """A float32 array of `shape` (an int n: (n,), as numpy and the numpy backend take it) filled
        with `value`, by the fill kernel; zeros and ones too."""
        return self._fill.full(_as_shape(shape), value)

    @_guarded_helper
    def randn(self, shape: int | tuple[int, ...], seed: int | None = None) -> Any:
        """Standard normal draws of `shape` (an int n: (n,)) by a Triton kernel, the same ones for
        the same seed."""
        return self._fill.randn(_as_shape(shape), seed)

    # ---- arithmetic (broadcasting; Python numbers accepted on either side) --------
    @_guarded_helper
    def add(self, a: Any, b: Any) -> Any:
        """a + b by the elementwise kernel (the optimizers' arithmetic: no torch compute)."""
        return self._ew.elementwise(self._ew.ADD, a, b, name="add")

    @_guarded_helper
    def accumulate(self, total: Any, part: Any) -> Any:
        """total + part written into `total` (a `.grad`, in place as in PyTorch, whatever its layout: a
        `.grad` set to `big[:, ::2]` adds into `big`) where it is a float32 array of the sum's shape on
        this backend's device whose elements do not share memory; else a new float32 array on this
        device, as `add` makes it (a float64 `total` too: the kernels compute in fp32)."""
        torch, ew = self._torch, self._ew
        total, part = self._here(total), self._here(part)
        if not (isinstance(total, torch.Tensor) and isinstance(part, torch.Tensor)
                and total.dtype == torch.float32 and total.shape == part.shape and self._writable(total)):
            return ew.elementwise(ew.ADD, total, part, name="accumulate")
        if self.memory_key(part) == self.memory_key(total) and not _same_view(part, total):
            part = ew.elementwise(ew.COPY, part, name="accumulate")  # w.backward(w.grad.T): read, then write
        return ew.elementwise(ew.ADD, total, part, name="accumulate", out=total)

    @_guarded_helper
    def zero_out(self, a: Any) -> Any:
        """Zeros written into `a` (a `.grad`, in place as in PyTorch, whatever its layout: a `.grad` set
        to `big[:, ::2]` zeroes those elements of `big`; an expanded one, whose elements share memory,
        too, as every write is a zero) by the elementwise kernel where it is a floating-point array on
        this backend's device (zeros are exact in any float dtype); else new zeros of its shape and
        float dtype on this device."""
        torch, ew = self._torch, self._ew
        floating = isinstance(a, torch.Tensor) and a.is_floating_point()
        if not (floating and a.device == self.device and self._storable(a)):
            dtype = a.dtype if floating else torch.float32
            a = torch.empty(tuple(a.shape), dtype=dtype, device=self.device)
        return ew.elementwise(ew.COPY, 0.0, name="zero_out", out_shape=tuple(a.shape), out=a)

    def _here(self, a: Any) -> Any:
        """`a` on this backend's device: a torch tensor on another one moved (a copy, no compute)."""
        if isinstance(a, self._torch.Tensor) and a.device != self.device:
            return a.to(self.device)
        return a

    def _writable(self, a: Any) -> bool:
        """Whether kernels may write `a` in place: on this device, no two elements sharing memory,
        within the strided store's dimensions."""
        return a.device == self.device and (a.is_contiguous() or (
            distinct_elements(a.shape, a.stride()) and self._storable(a)))

    def _storable(self, a: Any) -> bool:
        """Whether the strided store reaches every element of `a`: dense, or its strides collapse to
        at most MAX_DIMS dimensions (else the helpers make a new array, as before)."""
        return bool(a.is_contiguous() or len(collapse(tuple(a.shape), a.stride())[0]) <= self._ew.MAX_DIMS)

    @_guarded_helper
    def sub(self, a: Any, b: Any) -> Any:
        """a - b by the elementwise kernel (the optimizers' arithmetic: no torch compute)."""
        return self._ew.elementwise(self._ew.SUB, a, b, name="sub")

    @_guarded_helper
    def mul(self, a: Any, b: Any) -> Any:
        """a * b by the elementwise kernel (the optimizers' arithmetic: no torch compute)."""
        return self._ew.elementwise(self._ew.MUL, a, b, name="mul")

    @_guarded_helper
    def div(self, a: Any, b: Any) -> Any:
        """a / b by the elementwise kernel (the optimizers' arithmetic: no torch compute)."""
        return self._ew.elementwise(self._ew.DIV, a, b, name="div")

    @_guarded_helper
    def sqrt(self, a: Any) -> Any:
        """The square root by the elementwise kernel (Adam's denominator)."""
        return self._ew.elementwise(self._ew.SQRT, a, name="sqrt")

    def memory_key(self, a: Any) -> int | None:
        """The address of `a`'s storage: views of one buffer share it (metadata, no compute)."""
        return a.untyped_storage().data_ptr() if isinstance(a, self._torch.Tensor) else None

    # ---- fused optimizer updates --------------------------------------------------
    @_guarded_helper
    def sgd_update(
        self, param: Any, grad: Any, buf: Any | None, *, lr: float, momentum: float,
        dampening: float, weight_decay: float, nesterov: bool,
    ) -> tuple[Any, Any | None]:
        """One SGD step as torch.optim.SGD does it, in one kernel; returns (param, momentum buffer)."""
        c = self._ew.contiguous
        new, buf = self._optim.sgd(
            c(param), c(grad), c(buf) if buf is not None else None, lr=lr, momentum=momentum,
            dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
        )
        return self._in_place(param, new, "sgd_update"), buf

    @_guarded_helper
    def adam_update(
        self, param: Any, grad: Any, m: Any, v: Any, *, step: int, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float, decoupled: bool,
    ) -> tuple[Any, Any, Any]:
        """One Adam / AdamW step as torch.optim does it, in one kernel; returns (param, m, v)."""
        c = self._ew.contiguous
        new, m, v = self._optim.adam(
            c(param), c(grad), c(m), c(v), step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decoupled=decoupled,
        )
        return self._in_place(param, new, "adam_update"), m, v

    def _in_place(self, param: Any, new: Any, name: str) -> Any:
        """The updated values in `param` itself where the kernel wrote a dense copy of a strided one
        (w.data = base.T): torch.optim updates in place, so a view or a w.detach() taken before the
        step sees them, as on the numpy backend. A copy kernel, no torch compute."""
        if new is param or not (isinstance(param, self._torch.Tensor) and param.dtype == new.dtype
                                and self._writable(param)):
            return new
        return self._ew.elementwise(self._ew.COPY, new, name=name, out=param)
