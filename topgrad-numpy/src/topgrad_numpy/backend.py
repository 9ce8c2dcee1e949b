"""The numpy backend object: array helpers (float32, or float64 where asked), in-place optimizer updates."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import topgrad
from topgrad.arguments import refuse_non_numbers

from topgrad_numpy import ops as _ops
from topgrad_numpy.ops._util import BLOCK_ELEMENTS, quiet
from topgrad_numpy.unshared import unshared_argument

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
_FLOAT_DTYPES: dict[str, np.dtype] = {"float32": F32, "float64": F64}  # asarray's names, and what they make


def _float_dtype(dtype: Any) -> np.dtype:
    """The dtype `asarray` makes for `dtype`: float32 or float64, named as numpy or torch spells it
    (a name is looked up first, the engine's common case: parsing one costs ~1 us a call), or a
    TypeError."""
    if type(dtype) is str and dtype in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[dtype]
    if str(dtype) in ("torch.float32", "torch.float64"):  # torch's spelling, as the triton backend takes
        dtype = str(dtype)[len("torch."):]
    try:
        dt = np.dtype(dtype) if dtype is not None else None  # np.dtype(None) would be float64
    except TypeError:
        dt = None
    if dt is None or dt not in (F32, F64):
        raise TypeError(f"numpy backend: arrays are float32 (the default) or float64, got dtype={dtype!r}")
    return dt


def _same_kind(total: Any, part: Any) -> bool:
    """Whether `total` and `part` are numpy arrays of one dtype and shape, so that their sum can
    be written into `total` (what both in-place gradient sums require first)."""
    return (type(total) is np.ndarray and type(part) is np.ndarray and part.dtype == total.dtype
            and part.shape == total.shape)


def _f32(x: Any) -> np.ndarray:
    """A float32 ndarray (0-d for scalars): helper results never silently become float64."""
    return x if type(x) is np.ndarray and x.dtype == F32 else np.asarray(x, dtype=F32)


def _without_text(data: list[Any] | tuple[Any, ...]) -> Any:
    """`data`, a (nested) list or tuple, as numpy reads it where that is floats or bools (the values
    asarray makes from the list) or complex numbers (which asarray then refuses: a float array made
    from them would keep only the real part), after refusing text in it, which numpy would parse
    (PyTorch refuses it); anything else as given, for asarray's own conversion and its errors."""
    try:
        probe = np.asarray(data)
    except Exception:  # ragged, or Tensors that require grad: asarray says what
        return data
    refuse_non_numbers("numpy", data, probe)
    return probe if probe.dtype.kind in "fbc" else data


def _param_dtype(param: Any) -> np.dtype:
    """The dtype an optimizer step keeps: float64 for a float64 parameter (its state follows it),
    float32 for anything else."""
    return F64 if getattr(param, "dtype", None) == F64 else F32


def _owned(a: Any, dtype: np.dtype = F32) -> np.ndarray:
    """`a` itself when it can be updated in place (a writable ndarray of `dtype`), else a copy."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype)


CHUNK = max(BLOCK_ELEMENTS, 1 << 14)
"""Elements per optimizer-update slice: no temporary of a parameter's size is allocated (the
mlp's peak memory drops by one 1.5 MiB weight), and every pass over a slice finds it in L2.
16K elements, or 64K where the core has 2 MiB of L2 (`BLOCK_ELEMENTS`): on an Intel core with
2 MiB, the mlp's SGD updates 0.355 -> 0.297 ms and Adam's 1.64 -> 1.40 ms (five arrays' slices,
1.25 MiB, still fit); on smaller L2s five 256 KiB slices would not."""


def _chunks(param: np.ndarray, *arrays: Any) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching flat slices of param and arrays, plus a scratch slice; one whole-array chunk
    where a layout or shape does not allow flat slicing (views must stay writable). Everything
    is in param's dtype."""
    arrs = [np.asarray(a, dtype=param.dtype) for a in arrays]
    if not (param.flags.c_contiguous and all(a.shape == param.shape and a.flags.c_contiguous for a in arrs)):
        yield (param, *arrs, np.empty(param.shape, dtype=param.dtype))
        return
    flat = [param.reshape(-1), *(a.reshape(-1) for a in arrs)]
    scratch = np.empty(min(CHUNK, param.size), dtype=param.dtype)
    for i in range(0, param.size, CHUNK):
        j = min(param.size, i + CHUNK)
        yield (*(a[i:j] for a in flat), scratch[: j - i])


def _axpy(param: np.ndarray, g: Any, alpha: float) -> None:
    """param += alpha * g in place, through a small scratch (no parameter-sized temporary)."""
    for p, gc, tmp in _chunks(param, g):
        np.multiply(gc, alpha, out=tmp)
        p += tmp


class NumpyBackend(topgrad.Backend):
    """CPU backend: arrays are float32 (or float64) `numpy.ndarray`s, ops live in `topgrad_numpy.ops`."""

    name = "numpy"
    ops = _ops

    # ---- array helpers --------------------------------------------------------------
    def asarray(self, obj: Any, dtype: Any = "float32") -> np.ndarray:
        """`obj` as an ndarray of `dtype`; no copy for an ndarray that already has it. The ops
        compute in float32, or in float64 for float64 arrays: other dtypes are a TypeError. Values
        beyond the dtype's range become inf without numpy's warning (`np.errstate`, ~1.4 us, only
        where a wider source could hold such values)."""
        dt = _float_dtype(dtype)
        if type(obj) is np.ndarray and obj.dtype == dt:
            return obj
        if obj is None:
            raise TypeError("numpy backend: cannot make an array from None")
        if isinstance(obj, topgrad.Tensor):
            obj = obj.data
        elif hasattr(obj, "detach") and hasattr(obj, "cpu"):  # a torch tensor, without importing torch
            obj = obj.detach().cpu()
            if str(obj.dtype).startswith(("torch.bfloat16", "torch.float8")):  # none in numpy: float32
                obj = obj.float()  # holds every value, as the triton backend converts them
        elif isinstance(obj, (list, tuple)):  # numpy would parse text in it too: look at what it holds
            obj = _without_text(obj)
        refuse_non_numbers("numpy", obj)  # numpy would parse text, count dates, make None NaN
        self.refuse_complex(obj)
        try:
            if type(obj) is np.ndarray and (obj.dtype.kind != "f" or obj.itemsize <= dt.itemsize):
                return np.asarray(obj, dtype=dt)  # no value can overflow (int64's reach 9.2e18)
            with np.errstate(over="ignore"):  # 1e300 becomes inf, as in PyTorch, without a warning
                return np.asarray(obj, dtype=dt)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"numpy backend: cannot make a {dt} array from {type(obj).__name__}: {exc}"
            ) from None

    def to_numpy(self, a: Any) -> np.ndarray:
        """A copy, so that editing what `Tensor.numpy()` returns never changes the tensor."""
        return np.array(a, copy=True)

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 zeros of `shape`."""
        return np.zeros(shape, dtype=F32)

    def ones(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 ones of `shape`."""
        return np.ones(shape, dtype=F32)

    def full(self, shape: tuple[int, ...], value: float) -> np.ndarray:
        """A float32 array of `shape` filled with `value`."""
        return np.full(shape, value, dtype=F32)

    def randn(self, shape: tuple[int, ...], seed: int | None = None) -> np.ndarray:
        """float32 standard normal draws from numpy's default generator, reproducible for a seed."""
        return np.random.default_rng(seed).standard_normal(shape, dtype=F32)

    @quiet
    def add(self, a: Any, b: Any) -> np.ndarray:
        """a + b in float32, or in float64 where both are float64 arrays (the engine sums a float64
        Tensor's gradients with this: `gradcheck`'s float64 runs stay float64)."""
        if type(a) is np.ndarray and a.dtype == F64 and type(b) is np.ndarray and b.dtype == F64:
            return np.asarray(np.add(a, b))  # 0-d operands give a numpy scalar: keep an array
        return _f32(np.add(a, b))

    @quiet
    def sub(self, a: Any, b: Any) -> np.ndarray:
        """a - b in float32 (the optimizers' arithmetic)."""
        return _f32(np.subtract(a, b))

    @quiet
    def mul(self, a: Any, b: Any) -> np.ndarray:
        """a * b in float32 (the optimizers' arithmetic)."""
        return _f32(np.multiply(a, b))

    @quiet
    def div(self, a: Any, b: Any) -> np.ndarray:
        """a / b in float32 (the optimizers' arithmetic)."""
        return _f32(np.divide(a, b))

    @quiet
    def sqrt(self, a: Any) -> np.ndarray:
        """The square root in float32 (Adam's denominator)."""
        return _f32(np.sqrt(a))

    def copy(self, a: Any) -> np.ndarray:
        """A new array with `a`'s values and dtype (a float64 Tensor stays float64)."""
        return np.array(a, copy=True)

    @quiet
    def accumulate(self, total: Any, part: Any) -> np.ndarray:
        """total + part written into `total` (a `.grad`, in place as in PyTorch) where it is a writeable
        array of the sum's dtype and shape; else a new array, as `add` makes it."""
        if _same_kind(total, part) and total.flags.writeable:
            return np.add(total, part, out=total)
        return self.add(total, part)

    def add_gradients(self, total: Any, part: Any) -> np.ndarray:
        """total + part written into `total` where nothing else can see that array
        (`unshared_argument`): a residual block's shortcut gradient, 6.4 MB in deepconv's first
        stage, is then summed without a new array (0.49 against 0.86 ms there: the new array's
        memory is cold); else `add`. backward holds no reference to `total` while it calls this.
        (Not `quiet`: its wrapper's argument tuple would hold a second reference, and nothing
        would be unshared.)"""
        if _same_kind(total, part) and total.dtype in (F32, F64) and unshared_argument(total):
            with np.errstate(all="ignore"):
                return np.add(total, part, out=total)
        return self.add(total, part)

    def zero_out(self, a: Any) -> np.ndarray:
        """Zeros written into `a` (a `.grad`, in place as in PyTorch) where it is a writeable array;
        else new zeros of its shape and dtype."""
        if type(a) is np.ndarray and a.flags.writeable:
            a.fill(0)
            return a
        return np.zeros(np.shape(a), dtype=F64 if getattr(a, "dtype", None) == F64 else np.float32)

    def memory_key(self, a: Any) -> int:
        """The id of the object at the end of `a`'s chain of bases: views of one buffer share it."""
        while isinstance(a, np.ndarray) and a.base is not None:
            a = a.base
        return id(a)

    # ---- optimizer updates: torch.optim's rules, param and state updated in place --------
    @quiet
    def sgd_update(
        self, param: Any, grad: Any, buf: Any | None, *, lr: float, momentum: float,
        dampening: float, weight_decay: float, nesterov: bool,
    ) -> tuple[Any, Any | None]:
        """One `torch.optim.SGD` step; writes into param and buf, never into grad. A float64
        param and its buffer stay float64; everything else is float32."""
        dtype = _param_dtype(param)
        param = _owned(param, dtype)
        g = grad
        if weight_decay:
            g = param * weight_decay
            g += grad
        if momentum:
            if buf is None:
                buf = np.array(g, dtype=dtype)  # torch clones the first gradient
            else:
                buf = _owned(buf, dtype)
                buf *= momentum
                buf += g if not dampening else g * (1.0 - dampening)
            if nesterov:
                ahead = buf * momentum
                ahead += g
                g = ahead
            else:
                g = buf
        _axpy(param, g, -lr)
        return param, buf

    @quiet
    def adam_update(
        self, param: Any, grad: Any, m: Any, v: Any, *, step: int, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float, decoupled: bool,
    ) -> tuple[Any, Any, Any]:
        """One Adam / AdamW step as torch.optim; writes into param, m and v, never into grad. A
        float64 param keeps float64 moments (the float32 zeros it starts with are converted)."""
        dtype = _param_dtype(param)
        param, m, v = _owned(param, dtype), _owned(m, dtype), _owned(v, dtype)
        g = grad
        if weight_decay and decoupled:
            param *= 1.0 - lr * weight_decay
        elif weight_decay:
            g = param * weight_decay
            g += grad
        bc2, step_size = 1.0 / math.sqrt(1.0 - beta2**step), lr / (1.0 - beta1**step)
        for p, gc, mc, vc, tmp in _chunks(param, g, m, v):
            np.subtract(gc, mc, out=tmp)
            tmp *= 1.0 - beta1
            mc += tmp  # m.lerp_(g, 1 - beta1)
            vc *= beta2
            np.multiply(gc, 1.0 - beta2, out=tmp)  # (1 - beta2) * g * g in torch's order: g * g
            tmp *= gc  # first would overflow float32 for gradients beyond 1.8e19
            vc += tmp
            np.sqrt(vc, out=tmp)
            tmp *= bc2
            tmp += eps
            np.divide(mc, tmp, out=tmp)
            tmp *= step_size
            p -= tmp
        return param, m, v
