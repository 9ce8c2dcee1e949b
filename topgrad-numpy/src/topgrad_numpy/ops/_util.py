"""Small helpers shared by the ops: float32 operands, axis normalization, un-broadcasting."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
from topgrad import Op
from topgrad.arguments import normal_axes, not_a_tensor
from topgrad.normalization import feature_count

from topgrad_numpy import cpu_cache

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)
ndarray = np.ndarray


def quiet(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` run with numpy's floating-point warnings off: Inf and NaN flow through (inf - inf
    is NaN, inf * 0 is NaN, exp overflows to inf) as in PyTorch, which warns of none;
    `topgrad.detect_anomaly()` finds where they start. ~1 us a call."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return method(*args, **kwargs)

    return run


def quiet_forward(method: Callable[..., Any]) -> Callable[..., Any]:
    """`quiet` for a forward: where it fails reading an array's attribute (`.shape`), an operand
    given to apply as a list, a number or None is named (`refuse_non_arrays`)."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            try:
                return method(*args, **kwargs)
            except AttributeError as exc:
                refuse_non_arrays(type(args[0]).__name__, method, args[1:], exc)
                raise

    return run


def refuse_non_arrays(op: str, forward: Callable[..., Any], operands: tuple[Any, ...],
                      exc: AttributeError) -> None:
    """After `forward` failed with `exc`, an AttributeError (numpy read `.shape` of what is no
    array): the Tensor methods' TypeError for the first operand that is a list, tuple, number or
    text, or None where `exc` says None was read (a bias or gamma may be None); nothing else."""
    params = [p for p in list(inspect.signature(forward).parameters.values())[1:]  # after self
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    many = bool(params) and params[-1].kind is params[-1].VAR_POSITIONAL  # Concat's *xs
    read_none = "'NoneType'" in str(exc)
    for i, value in enumerate(operands if many else operands[: len(params)]):
        param = params[min(i, len(params) - 1)]
        name = f"tensor {i}" if param.kind is param.VAR_POSITIONAL else param.name
        if isinstance(value, (list, tuple, int, float, str)):
            raise not_a_tensor(op, name, value) from None
        if value is None and read_none and param.default is not None:  # a bias may be None
            raise TypeError(f"{op}: {name} must be a Tensor, got None") from None


class NumpyOp(Op):
    """An op of this backend that computes: its `forward` and `backward` run `quiet`, so no op
    warns of the Inf and NaN it passes on, whichever numpy call meets them (the shape ops, which
    only move data, are plain `Op`s)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("forward", "backward"):
            if name in cls.__dict__:
                setattr(cls, name, (quiet_forward if name == "forward" else quiet)(cls.__dict__[name]))


def arr(x: Any) -> np.ndarray:
    """`x` as an ndarray: ufuncs turn 0-d results into numpy scalars, this turns them back
    (float32, or float64 for a float64 scalar: a float64 Tensor's 0-d result stays float64)."""
    if type(x) is ndarray:
        return x
    return np.asarray(x, dtype=F64 if type(x) is np.float64 else F32)


def int_like(dtype: Any) -> np.dtype:
    """The signed integer type as wide as the float type `dtype`: a view of its bit patterns."""
    return np.dtype(f"i{np.dtype(dtype).itemsize}")


def select(test: np.ufunc, a: Any, b: Any, grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """grad where test(a, b) holds, else +0.0 even where grad is NaN or inf (PyTorch's select,
    bit for bit). The comparison writes its 0/1 straight into `out`, an integer array as wide as
    grad's floats (`int_like`), and 0/1 times grad's bit pattern is that pattern or 0: two flat
    passes, like `grad * mask`; `np.where` branches per element, ~10x slower."""
    test(a, b, out=out, casting="unsafe")
    np.multiply(out, grad.view(out.dtype), out=out)
    return out.view(grad.dtype)


def operands(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """The two operands of Add, Mul or Div (`operand`), arrays in float32, or left in float64
    where every float array among them is float64 (a float64 Tensor, as `gradcheck` makes, stays
    float64; an integer array takes the other's dtype)."""
    a, b = operand(op, a), operand(op, b)
    da = a.dtype if type(a) is ndarray else None
    db = b.dtype if type(b) is ndarray else da
    da = db if da is None else da
    if da == db and (da is None or da == F32 or da == F64):
        return a, b
    return _common_float(a, b)


def _common_float(a: Any, b: Any) -> tuple[Any, Any]:
    """Operands of different dtypes: an integer or bool array (a constant) takes the float
    operand's dtype, as in PyTorch (a float64 Tensor times a mask stays float64); any other mix
    is float32."""
    float_a = type(a) is ndarray and (a.dtype == F32 or a.dtype == F64)
    float_b = type(b) is ndarray and (b.dtype == F32 or b.dtype == F64)
    if float_a and type(b) is ndarray and b.dtype.kind in "biu":
        return a, b.astype(a.dtype)
    if float_b and type(a) is ndarray and a.dtype.kind in "biu":
        return a.astype(b.dtype), b
    return _as_f32(a), _as_f32(b)


def _as_f32(x: Any) -> Any:
    return x.astype(F32) if type(x) is ndarray and x.dtype != F32 else x


REAL_KINDS = "biuf"
"""numpy dtype kinds of real numbers: bool, ints, unsigned ints, floats."""


def not_real(op: str, dtype: np.dtype) -> TypeError:
    """The TypeError for an operand that does not hold real numbers (complex, text, objects, dates):
    numpy would drop an imaginary part, parse text or turn None into NaN without a word."""
    why = ("Topgrad's arrays are real, and numpy would drop the imaginary part: pass a.real or abs(a)"
           if dtype.kind == "c" else "PyTorch refuses it too: convert it to numbers first")
    held = _KIND_NAMES.get(dtype.kind, "values")
    return TypeError(f"{op}: operands must hold real numbers (float, int or bool), got {held} ({dtype}): "
                     f"{why}")


_KIND_NAMES = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "Python objects", "M": "dates",
               "m": "time spans", "V": "raw records"}


def operand(op: str, x: Any) -> Any:
    """An array (as given), or a Python float that numpy treats as weakly typed (it takes the
    other operand's dtype): any real number becomes one (a Fraction too, as `x / c` and the
    triton backend take it). None, text or a Decimal is a TypeError naming `op` (numpy would
    make None a NaN: `x + b` with an optional bias b = None must not train on NaNs)."""
    if type(x) is ndarray:
        if x.dtype.kind in REAL_KINDS:
            return x
        raise not_real(op, x.dtype)
    if isinstance(x, (bool, int, float, np.integer, np.floating)) and not isinstance(x, np.timedelta64):
        return float(x)  # numpy's time span is an integer type, but no number
    if isinstance(x, (complex, np.complexfloating)):
        raise not_real(op, np.dtype(type(x)))
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{op}: operands must be Tensors, arrays or numbers, got {type(x).__name__}")
    if type(x).__module__.startswith("torch"):  # numpy would convert it (a triton Tensor's data too)
        raise TypeError(f"{op}: operands must be Tensors, numpy arrays or numbers, got a torch.Tensor: "
                        "make it Tensor(t)")
    if (type(x) is not list and isinstance(x, numbers.Number)  # the ABC check costs a list ~300 ns
            and not isinstance(x, np.timedelta64)):  # a time span: refused below
        if isinstance(x, numbers.Real):  # a Fraction: numpy made it a 0-d float32 array, which
            return float(x)  # turned a float64 tensor float32
        raise TypeError(f"{op}: operands must be Tensors, arrays or real numbers, got {type(x).__name__} "
                        "(no real number: it would lose digits as a float; PyTorch refuses it too): "
                        "pass float(d)")
    try:  # a list as numpy reads it (integers stay integers: they take the other operand's dtype)
        array = np.asarray(x)
        if array.dtype.kind not in "Mmc":  # dates, time spans and complex values are refused below
            return array if array.dtype.kind in REAL_KINDS else np.asarray(x, dtype=F32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{op}: cannot use a {type(x).__name__} as an operand ({exc})") from None
    raise not_real(op, array.dtype)


def shape_of(x: Any) -> tuple[int, ...]:
    """An operand's shape for messages: () for a Python number."""
    return x.shape if type(x) is ndarray else ()


axes = normal_axes
"""`axes(op, axis, ndim)`: a reduction's axes, sorted and non-negative (core's `normal_axes`)."""


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing numpy broadcasting (leading and size-1 axes)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    summed = tuple(range(lead)) + tuple(
        i + lead for i, s in enumerate(shape) if s == 1 and grad.shape[i + lead] != 1
    )
    if not summed:
        return grad.reshape(shape)
    if len(summed) == lead and grad.flags.c_contiguous and grad.dtype.kind == "f" and grad.size:
        return colsum(grad.reshape(-1, math.prod(shape))).reshape(shape)  # leading axes only: a gemv
    return arr(sum_over(grad, summed).reshape(shape))


def kept_shape(shape: tuple[int, ...], axs: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` with the reduced axes `axs` kept as size 1: a reduction's keepdims shape."""
    return tuple(1 if i in axs else s for i, s in enumerate(shape))


def expand(grad: Any, shape: tuple[int, ...], axs: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """A fresh (writable, contiguous) array of `shape` holding `grad` broadcast over `axs`."""
    grad = arr(grad)
    if not keepdims:
        grad = grad.reshape(kept_shape(shape, axs))
    out = np.empty(shape, dtype=grad.dtype)
    out[...] = grad
    return out


@functools.lru_cache(maxsize=64)
def filled(n: int, value: float, dtype: Any = F32) -> np.ndarray:
    """A cached read-only vector of n `value`s: reductions take their weights from it (a gemv
    against ones is a row sum, against -1/C a row's -mean) with no allocation each call (np.full
    costs ~4 us)."""
    v = np.full(n, value, dtype=dtype)
    v.flags.writeable = False
    return v


def ones(n: int, dtype: Any = F32) -> np.ndarray:
    """A cached read-only ones vector (`filled`): the reductions below multiply by it."""
    return filled(n, 1.0, dtype)


SUM_BLOCK = 1024
"""The most float32 values one BLAS product adds into one sum. Its sums (and numpy's over an outer
axis) add one value after another, so their error grows with the count: 1e-2 relative for 2**20
equal values, where PyTorch's cascade stays at 1e-7. Longer sums are cut in two stages."""


def _long_sums(x3: np.ndarray) -> np.ndarray:
    """Sums over axis 1 of a float32 (pre, red, post) array with red > SUM_BLOCK, shaped (pre, post).

    The red values are cut into nb blocks of b (both about sqrt(red)): one gemv adds the blocks
    together (nb values per sum), a second adds the b rows of that (b per sum), so no sum runs
    longer than ~sqrt(red) values: 2e-5 relative at 2**22 equal values, the worst case. Two
    BLAS calls (a third for a ragged tail), with no float64 copy."""
    pre, red, post = x3.shape
    b = 1 << (math.isqrt(red).bit_length() - 1)  # a power of two, so that b often divides red
    nb, dtype = red // b, x3.dtype
    whole = x3 if nb * b == red else x3[:, : nb * b]
    rows = np.matmul(ones(nb, dtype), whole.reshape(pre, nb, b * post))  # (pre, b * post)
    if post == 1:
        total = rows @ ones(b, dtype)
    else:
        total = np.matmul(ones(b, dtype), rows.reshape(pre, b, post))
    if nb * b < red:
        total += np.matmul(ones(red - nb * b, dtype), x3[:, nb * b :]).reshape(total.shape)
    return total.reshape(pre, post)


def colsum(a2: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Column sums of a 2-d array as one BLAS matrix-vector product (several times faster than
    `a2.sum(axis=0)`, whose inner loop runs over a short row), into `out` when given; in blocks
    past SUM_BLOCK float32 rows."""
    if a2.shape[0] > SUM_BLOCK and a2.dtype == F32:
        sums = _long_sums(a2[None])[0]
        if out is None:
            return sums
        out[...] = sums
        return out
    return np.matmul(ones(a2.shape[0], a2.dtype), a2, out=out)


def sum_over(x: np.ndarray, axs: tuple[int, ...], keepdims: bool = False) -> np.ndarray:
    """`x.sum(axis=axs, keepdims=keepdims)` through numpy (axes non-negative), accumulated in float64
    where a float32 sum would add more than SUM_BLOCK values (numpy adds an outer axis row by row)."""
    if x.dtype == F32 and math.prod([x.shape[i] for i in axs]) > SUM_BLOCK:
        return x.sum(axis=axs, keepdims=keepdims, dtype=F64).astype(F32)
    return x.sum(axis=axs, keepdims=keepdims)


def outer(u: np.ndarray, v: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i, j] = u[i] * v[j] for an `out` of shape (len(u), len(v)), by one BLAS GEMM.

    A per-row factor broadcast over short rows (`x * u[:, None]` with 64 features) runs
    numpy's buffered inner loop one row at a time, ~3x a flat pass; the GEMM writes the
    expanded factor at about a copy's cost, and the op that needed it becomes a flat pass.
    K is 2 with a zero second term (each element is still exactly one product): numpy's
    matmul runs K = 1 in its own loop, ~15x slower than BLAS."""
    left = np.zeros((u.shape[0], 2), out.dtype)
    left[:, 0] = u
    right = np.zeros((2, v.shape[0]), out.dtype)
    right[0] = v
    return np.matmul(left, right, out=out)


VECDOT_FROM = 64
"""Row length from which `row_squares` takes numpy's `vecdot` (a BLAS dot per row). For 229 K
floats on the Intel host: 29 against einsum's 37 us at 64 features, 23 against 33 at 96, 19
against 27 at 384, 130 against 147 at 16384 (4x the floats); its relative error stays
1.2-1.5e-7 at every length, where einsum's float32 sum grows with the row (2.7e-7 at 512
features, 1.1e-6 at 16384). Below 64 it is slower: 70 against 40 us at 48, 205 against 74 at 16."""

EINSUM_FROM = 16
"""Row length from which `row_squares` takes einsum below VECDOT_FROM: 63 against the gemv's 69
us at 16 features for 229 K floats, 118 against 88 at 8."""


def row_squares(a: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The sum of squares of each row of a 2-d array, in one pass that writes no temporary
    (`vecdot` from VECDOT_FROM features, einsum from EINSUM_FROM), else the squares into
    `scratch` (a's shape) and a gemv."""
    if a.shape[1] >= VECDOT_FROM:
        return np.vecdot(a, a)
    if a.shape[1] >= EINSUM_FROM:
        return np.einsum("ij,ij->i", a, a)
    return np.square(a, out=scratch) @ ones(a.shape[1], a.dtype)


def rowsum(a: np.ndarray) -> np.ndarray:
    """Sums over the last axis, kept as a size-1 axis, as one BLAS matrix-vector product (in blocks
    past SUM_BLOCK float32 values)."""
    if a.shape[-1] > SUM_BLOCK and a.dtype == F32:
        rows = np.ascontiguousarray(a).reshape(-1, a.shape[-1], 1)
        return _long_sums(rows).reshape(*a.shape[:-1], 1)
    return (a @ ones(a.shape[-1], a.dtype))[..., None]


NARROW_ROW = 32
NARROW_ROWS_FROM = 64
"""`rowmax` reduces rows of at most NARROW_ROW values, NARROW_ROWS_FROM rows or more, as the
columns of a transposed copy (measured on a Zen 3: 0.34-0.69 of `max`'s time at 128 rows of
2-32 values, ~1 at 32 rows, 0.8 at 128 rows of 48)."""


def rowmax(a: np.ndarray) -> np.ndarray:
    """Maxima over the last axis, kept as a size-1 axis. numpy's reduce along a short last axis
    pays ~50 ns a row, so narrow rows (a classifier's 10 logits) are reduced as the columns of a
    transposed copy, all rows in one call (128x10: 6.7 -> 3.1 us; 1024x10: 51 -> 8)."""
    width = a.shape[-1]
    if width > NARROW_ROW or a.size < NARROW_ROWS_FROM * width:
        return a.max(axis=-1, keepdims=True)
    columns = np.ascontiguousarray(a.reshape(-1, width).T)
    return np.maximum.reduce(columns, axis=0).reshape(*a.shape[:-1], 1)


BUFFER = np.getbufsize()
"""numpy's ufunc buffer size in elements (8192 unless changed), read once: `np.getbufsize()`
costs ~2 us a call, several per op. An inner loop at least this long runs unbuffered."""


def wide(a2: np.ndarray, *vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    """A contiguous `a2` (N, C) viewed as (N/k, k*C), and each (C,) vector tiled k times.

    numpy runs a ufunc whose inner loop is shorter than its buffer size (`BUFFER`, 8192
    elements) through buffers, and refills the broadcast vector's buffer on every fill
    (numpy#32594): a (N, 64) * (64,) product costs ~2x a flat one, 1.4x on a 1024-wide view.
    A view at least a buffer wide runs unbuffered, at the flat speed. Where N lacks the
    factors for that, the view is ~1024 wide (k divides N)."""
    n, c = a2.shape
    if not a2.flags.c_contiguous or c == 0:
        return (a2, *vectors)
    k = math.gcd(n, 1 << (-(-BUFFER // c) - 1).bit_length())  # a power of two >= BUFFER / c
    if k * c < BUFFER:
        k = math.gcd(n, max(1, 1024 // c))
    if k == 1:
        return (a2, *vectors)
    return (a2.reshape(n // k, k * c), *(_tiled(v, k) for v in vectors))


def trailing_broadcast(ufunc: np.ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ufunc(a, b) for a commutative ufunc (add, multiply), on wide views (`wide`) where one
    operand is a block broadcast over the other's leading axes (a bias, a per-feature scale,
    positional embeddings) and the other is at least a numpy buffer large; plain numpy
    broadcasting otherwise."""
    for big, small in ((a, b), (b, a)):
        if big.size >= max(BUFFER, 2 * small.size) and _is_trailing_block(small, big):
            bw, sw = wide(big.reshape(-1, small.size), small.reshape(-1))
            return ufunc(bw, sw).reshape(big.shape)
    return ufunc(a, b)


def _is_trailing_block(small: np.ndarray, big: np.ndarray) -> bool:
    """`small`, less its leading size-1 axes, has the shape of `big`'s last axes (at least one);
    both C-contiguous, of one dtype."""
    if small.ndim > big.ndim or small.dtype != big.dtype:
        return False
    if not (small.flags.c_contiguous and big.flags.c_contiguous):
        return False
    block = small.shape
    while block and block[0] == 1:
        block = block[1:]
    return bool(block) and big.shape[big.ndim - len(block) :] == block


def _tiled(v: np.ndarray, k: int) -> np.ndarray:
    """`v` repeated k times end to end: `np.tile`'s result, at a fifth of its Python overhead."""
    out = np.empty((k, v.shape[0]), dtype=v.dtype)
    out[...] = v
    return out.reshape(-1)


def wide_add(a2: np.ndarray, v: np.ndarray) -> None:
    """a2 += v broadcast over the rows of a2 (N, C), in place, on the wide view."""
    aw, vw = wide(a2, v)
    aw += vw


def _run(shape: tuple[int, ...], axs: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(before, reduced, after) sizes when `axs` is one contiguous run of axes, else None."""
    if not axs or list(axs) != list(range(axs[0], axs[-1] + 1)):
        return None
    return math.prod(shape[: axs[0]]), math.prod(shape[axs[0] : axs[-1] + 1]), math.prod(shape[axs[-1] + 1 :])


def run_sum(x: np.ndarray, axs: tuple[int, ...]) -> np.ndarray | None:
    """Sum of a C-contiguous float x over a contiguous run of axes as one (batched) BLAS product
    with a ones vector, flattened to the kept axes; None where that does not apply.

    `x.sum(axis=(1, 2))` on NHWC activations is ~5x slower (short inner loops)."""
    run = _run(x.shape, axs)
    if run is None or not x.flags.c_contiguous or x.size == 0 or x.dtype.kind != "f":
        return None
    pre, red, post = run
    if red > SUM_BLOCK and x.dtype == F32:
        return _long_sums(x.reshape(pre, red, post)).reshape(pre * post)
    if post == 1:
        return x.reshape(pre, red) @ ones(red, x.dtype)
    if pre == 1:
        return ones(red, x.dtype) @ x.reshape(red, post)
    return np.matmul(ones(red, x.dtype)[None, :], x.reshape(pre, red, post)).reshape(pre * post)


def run_expand(grad: Any, shape: tuple[int, ...], axs: tuple[int, ...]) -> np.ndarray | None:
    """A fresh array of `shape` holding grad repeated over a contiguous run of axes (np.repeat:
    ~2.5x faster than a broadcast assignment), or None where that does not apply."""
    run = _run(shape, axs)
    if run is None:
        return None
    pre, red, post = run
    g = np.ascontiguousarray(grad)
    return np.repeat(g.reshape(pre, 1, post), red, axis=1).reshape(shape)


def check_affine(op: str, x: np.ndarray, **params: Any) -> int:
    """The feature count C of x (its last axis), checking every given parameter (gamma, beta, the
    running statistics; None where not given) has shape (C,), in core's words; TypeError for one
    that is no array (a list: the Tensor methods refuse it)."""
    try:
        shapes = {name: None if p is None else p.shape for name, p in params.items()}
    except AttributeError:
        for name, p in params.items():
            if p is not None and not hasattr(p, "shape"):
                raise not_a_tensor(op, name, p) from None
        raise
    return feature_count(op, x.shape, **shapes)


BLOCKS_FROM_L2 = 2 << 20
"""L2 size from which chains of elementwise passes run block by block. Measured: on an Intel
core with 2 MiB of L2 (and a slow mesh L3) blocks made Sigmoid 1.3x faster; on a Zen 3 core
with 512 KiB, ReLU's backward in blocks was 10-30% slower (benchmarks/HISTORY.md, changes 30
and before)."""

BLOCK_ELEMENTS = 64 << 10 if cpu_cache.l2_bytes() >= BLOCKS_FROM_L2 else 0
"""Elements per block in a chain of elementwise passes (`flat_blocks`), 0 for whole arrays:
256 KiB of float32 per array, so every pass of the chain over one block finds it in L2."""


def flat_blocks(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching flat blocks of BLOCK_ELEMENTS of same-shape C-contiguous arrays, for a chain of
    ufunc passes run block by block; the whole arrays at once where blocks are off, the arrays
    are smaller than two blocks, differ in shape or one is not contiguous (a broadcast
    gradient). Either way each element gets the same operations: the results are the same bits."""
    first, block = arrays[0], BLOCK_ELEMENTS
    size = first.size
    if not block or size < 2 * block or not all(a.shape == first.shape and a.flags.c_contiguous
                                                 for a in arrays):
        yield arrays
        return
    flat = [a.reshape(-1) for a in arrays]
    for i in range(0, size, block):
        yield tuple(a[i : i + block] for a in flat)


ROWS_BYTES = 256 << 10
"""Bytes of scratch per pass in the chunked normalization loops: a cache-sized block instead of a
temporary the size of x (the op's peak memory stays at PyTorch's: output and gradient)."""


def block_rows(a: np.ndarray) -> int:
    """Rows of the 2-d array `a` in about ROWS_BYTES (at least one)."""
    return max(1, ROWS_BYTES // max(1, a.shape[1] * a.itemsize))


def row_blocks(a: np.ndarray, per: int | None = None) -> Iterator[slice]:
    """Slices of a 2-d array's rows, `per` rows each (default: about ROWS_BYTES each)."""
    per = per or block_rows(a)
    for i in range(0, a.shape[0], per):
        yield slice(i, min(a.shape[0], i + per))


def row_chunks(a: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Row slices of a 2-d array (as `row_blocks`), each with a matching scratch block (one
    buffer, as large as the first block, reused)."""
    blocks = list(row_blocks(a))
    rows_max = blocks[0].stop if blocks else 0
    scratch = np.empty((rows_max, a.shape[1]), dtype=a.dtype)
    for rows in blocks:
        yield rows, scratch[: rows.stop - rows.start]


class Chunk(NamedTuple):
    """Images of a batch and, of each, the rows one chunk of a chunked op covers (Conv2d's patch
    matrices, MaxPool2d's window stacks): every row, unless one image outgrows a chunk."""

    images: slice
    rows: slice


def image_chunks(batch: int, per: int, rows: int) -> list[Chunk]:
    """Chunks of `per` whole images each (the last may hold fewer), all `rows` rows of them."""
    return [Chunk(slice(i, min(batch, i + per)), slice(0, rows)) for i in range(0, batch, per)]


def input_rows(rows: slice, step: int, kernel: int) -> tuple[int, int]:
    """The padded input rows [lo, hi) that output rows `rows` read, at stride `step` with windows
    `kernel` rows tall (a chunk's window of the padded image)."""
    return rows.start * step, (rows.stop - 1) * step + kernel


def rows_inside(lo: int, rows: int, pad: int, n: int) -> tuple[int, int]:
    """Which of the padded rows lo:lo+rows hold the image (pad:pad+n), counted from lo: a chunk's
    window of a padded image is padding above the first and from the second on."""
    top = min(max(lo, pad), lo + rows) - lo
    return top, max(min(lo + rows, pad + n) - lo, top)
