"""Elementwise kernels: binary ops with broadcasting, unary ops and the strided copy.

One kernel serves them all: the output is contiguous, and each operand is a Python
scalar, a contiguous array of the output's shape, or any strided view (broadcast dims
have stride 0) read through up to six collapsed dims. `contiguous` is the strided copy
every op uses when a view must become dense; `copy_into` writes a dense array into a
strided view (how `elementwise` fills an `out` that is not dense).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import needs_int64, widen
from topgrad_triton.shapes import broadcast_shape, broadcast_strides, collapse

(ADD, SUB, MUL, DIV, COPY, SQRT, RELU, RELU_GRAD, EXP, LOG, NEG_MUL,
 TANH, SIGMOID, TANH_GRAD, SIGMOID_GRAD, EQUAL, SQRT_GRAD, ABS, ABS_GRAD) = range(19)
MAX_DIMS = 6
SCALAR, CONTIGUOUS, STRIDED = 0, 1, 2


@triton.jit
def _strided_offset(offs, s1, s2, s3, s4, s5, st0, st1, st2, st3, st4, st5):
    """The memory offsets, by strides st0..st5, of the flat offsets `offs` of a dense array whose
    dims are (any, s1, ..., s5)."""
    r = offs
    i5 = r % s5
    r = r // s5
    i4 = r % s4
    r = r // s4
    i3 = r % s3
    r = r // s3
    i2 = r % s2
    r = r // s2
    i1 = r % s1
    i0 = r // s1
    return i0 * st0 + i1 * st1 + i2 * st2 + i3 * st3 + i4 * st4 + i5 * st5


@triton.jit
def _operand(ptr, val, offs, mask, s1, s2, s3, s4, s5, st0, st1, st2, st3, st4, st5,
             MODE: tl.constexpr, BLOCK: tl.constexpr):
    """The operand's values at the output's flat offsets `offs` (scalar, contiguous or strided)."""
    if MODE == 0:
        x = tl.full([BLOCK], val, tl.float32)  # not 0.0 + val, which turns -0.0 into +0.0
    elif MODE == 1:
        x = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        off = _strided_offset(offs, s1, s2, s3, s4, s5, st0, st1, st2, st3, st4, st5)
        x = tl.load(ptr + off, mask=mask, other=0.0).to(tl.float32)
    return x


@triton.jit
def _elementwise_kernel(
    out_ptr, a_ptr, b_ptr, a_val, b_val, n,
    s1, s2, s3, s4, s5,
    sa0, sa1, sa2, sa3, sa4, sa5,
    sb0, sb1, sb2, sb3, sb4, sb5,
    OP: tl.constexpr, A_MODE: tl.constexpr, B_MODE: tl.constexpr, BLOCK: tl.constexpr,
    WIDE: tl.constexpr,
):
    """One program writes BLOCK consecutive elements of the contiguous output: out[i] = OP(a[i], b[i]).

    Unary ops pass b as the scalar 0 (B_MODE 0), which costs no load; WIDE indexes in int64.
    """
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = _operand(a_ptr, a_val, offs, mask, s1, s2, s3, s4, s5, sa0, sa1, sa2, sa3, sa4, sa5, A_MODE, BLOCK)
    b = _operand(b_ptr, b_val, offs, mask, s1, s2, s3, s4, s5, sb0, sb1, sb2, sb3, sb4, sb5, B_MODE, BLOCK)
    if OP == 0:
        y = a + b
    elif OP == 1:
        y = a - b
    elif OP == 2:
        y = a * b
    elif OP == 3:  # _rn: correctly rounded, as PyTorch's; `/` is div.full.f32 (2 ulp) on a GPU
        y = tl.div_rn(a, b)
    elif OP == 4:
        y = a
    elif OP == 5:  # _rn: tl.sqrt is sqrt.approx.ftz on a GPU, which flushes a subnormal x to 0
        y = tl.sqrt_rn(a)
    elif OP == 6:
        y = tl.where(a < 0.0, 0.0, a)  # NaN passes through, as in torch.relu
    elif OP == 7:  # RELU_GRAD: a is the upstream gradient, b the forward input or output (same signs)
        y = tl.where(b <= 0.0, 0.0, a)  # NaN in x passes the gradient, as in torch
    elif OP == 8:
        y = tl.exp(a)
    elif OP == 9:
        y = tl.log(a)
    elif OP == 10:  # NEG_MUL: -(a * b), Div's gradient of its divisor
        y = -(a * b)
    elif OP == 11:  # TANH: from e^-2|x| (no overflow), a Taylor series near 0 (no cancellation)
        e = tl.exp(-2.0 * tl.abs(a))
        t = (1.0 - e) / (1.0 + e)
        t = tl.where(a < 0.0, -t, t)
        a2 = a * a
        y = tl.where(tl.abs(a) < 0.05, a * (1.0 - a2 * (1.0 / 3.0 - a2 * (2.0 / 15.0))), t)
    elif OP == 12:  # SIGMOID: 1 / (1 + e^-x); e^-x = inf below ~-88 gives 0
        y = 1.0 / (1.0 + tl.exp(-a))
    elif OP == 13:  # TANH_GRAD: a is the upstream gradient, b the output y: a (1 - y²)
        y = a * (1.0 - b * b)
    elif OP == 14:  # SIGMOID_GRAD: a is the upstream gradient, b the output y: a y (1 - y)
        y = a * b * (1.0 - b)
    elif OP == 15:  # EQUAL: 1 where a == b, else 0 (Max's mask of the elements that reached the maximum)
        y = tl.where(a == b, 1.0, 0.0)
    elif OP == 16:  # SQRT_GRAD: a is the upstream gradient, b the output y: a / (2 y), inf at y = 0 (torch)
        y = tl.div_rn(a, 2.0 * b)
    elif OP == 17:
        y = tl.abs(a)
    else:  # ABS_GRAD: a is the upstream gradient, b the input x: a sign(x), 0 at x = 0 and at NaN as in torch
        y = a * tl.where(b > 0.0, 1.0, tl.where(b < 0.0, -1.0, 0.0))
    tl.store(out_ptr + offs, y, mask=mask)


def _layout(x: Any, out_shape: tuple[int, ...]) -> tuple[int, list[int]]:
    """The operand's mode and its strides as read at the output's shape."""
    if not isinstance(x, torch.Tensor):
        return SCALAR, [0] * len(out_shape)
    if tuple(x.shape) == out_shape and x.is_contiguous():
        return CONTIGUOUS, broadcast_strides(x.shape, x.stride(), out_shape)
    return STRIDED, broadcast_strides(x.shape, x.stride(), out_shape)


def _padding(dims: list[int]) -> int:
    """How many leading size-1 dims make the collapsed `dims` six, the kernels' index depth (the
    callers split deeper arrays along their first axis first)."""
    return MAX_DIMS - len(dims)


def elementwise(op: int, a: Any, b: Any = None, name: str = "elementwise",
                out_shape: tuple[int, ...] | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """out = OP(a, b) as a new contiguous float32 array; a, b are arrays or Python numbers.

    `out_shape` broadcasts a unary operand (the copy of an expanded view). `out`, an array of the
    result's shape on the operands' device, receives the result instead (in its dtype): the kernel
    writes a dense one itself; any other view (a `.grad` set to `big[:, ::2]`) gets the dense
    result through `copy_into`. Elements of `out` that share memory (an expanded view) get one of
    their values: only a constant (zero_out's zeros) is well defined there.
    """
    shapes = [tuple(x.shape) for x in (a, b) if isinstance(x, torch.Tensor)]
    if out_shape is None:
        out_shape = shapes[0] if shapes else ()
        for s in shapes[1:]:
            out_shape = broadcast_shape(name, out_shape, s)
    if out is None:
        dev = next((x.device for x in (a, b) if isinstance(x, torch.Tensor)), runtime.device())
        out = torch.empty(out_shape, dtype=torch.float32, device=dev)
    n = math.prod(out_shape)
    if n == 0:
        return out
    if not out.is_contiguous():  # a strided view: computed dense, then stored through its strides
        copy_into(out, elementwise(op, a, b, name=name, out_shape=out_shape), name=name)
        return out
    (a_mode, sa), (b_mode, sb) = _layout(a, out_shape), _layout(b, out_shape)
    strided = [s for m, s in ((a_mode, sa), (b_mode, sb)) if m == STRIDED]
    dims, collapsed = collapse(out_shape, *strided) if strided else ([n], [])
    if len(dims) > MAX_DIMS:  # deeper than the kernel's index: a launch per index of the first axis
        for i in range(out_shape[0]):
            elementwise(op, _index(a, i, len(out_shape)), _index(b, i, len(out_shape)), name=name,
                        out_shape=out_shape[1:], out=out[i])
        return out
    pad = _padding(dims)
    sizes = [1] * pad + dims
    it = iter(collapsed)
    sa = [0] * pad + next(it) if a_mode == STRIDED else [0] * MAX_DIMS
    sb = [0] * pad + next(it) if b_mode == STRIDED else [0] * MAX_DIMS
    block = runtime.block(1024, 1 << 16, many=runtime.quarter(n))
    grid = (triton.cdiv(n, block),)
    # a contiguous operand spans the output's n elements; only a strided one can reach further
    wide = needs_int64(n, *(x for x, mode in ((a, a_mode), (b, b_mode)) if mode == STRIDED))
    with runtime.quiet():
        _elementwise_kernel[grid](
            out, a if a_mode != SCALAR else out, b if b_mode != SCALAR else out,
            float(a) if a_mode == SCALAR and a is not None else 0.0,
            float(b) if b_mode == SCALAR and b is not None else 0.0,
            n, *sizes[1:], *sa, *sb,
            OP=op, A_MODE=a_mode, B_MODE=b_mode, BLOCK=block, WIDE=wide, num_warps=4,
        )
    return out


@triton.jit
def _store_strided_kernel(dst_ptr, src_ptr, n, s1, s2, s3, s4, s5, st0, st1, st2, st3, st4, st5,
                          BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """One program copies BLOCK consecutive elements of the dense src into the strided view dst
    (WIDE: int64 offsets)."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(src_ptr + offs, mask=mask, other=0.0)
    tl.store(dst_ptr + _strided_offset(offs, s1, s2, s3, s4, s5, st0, st1, st2, st3, st4, st5), x, mask=mask)


def _index(x: Any, i: int, ndim: int) -> Any:
    """Operand x's part for index i of an `ndim`-dimensional output's first axis: a number, an
    operand broadcast along that axis (fewer dimensions, or size 1 there) or x[i]."""
    if not isinstance(x, torch.Tensor) or x.dim() < ndim:
        return x
    return x[0] if x.shape[0] == 1 else x[i]


def copy_into(dst: torch.Tensor, src: torch.Tensor, name: str = "copy_into") -> None:
    """Write `src` (made dense float32 first, if it is not) into `dst`, a strided view of the same
    shape (a Slice's place in its input's gradient, a Concat input's part of the output); no two
    elements of dst may share memory."""
    if tuple(src.shape) != tuple(dst.shape):
        raise ValueError(f"{name}: cannot write an array of shape {tuple(src.shape)} into a view of "
                         f"shape {tuple(dst.shape)}")
    n = math.prod(dst.shape)
    if n == 0:
        return
    dims, (strides,) = collapse(tuple(dst.shape), dst.stride())
    if len(dims) > MAX_DIMS:  # deeper than the kernel's index: a launch per index of the first axis
        for i in range(dst.shape[0]):
            copy_into(dst[i], src[i], name=name)
        return
    pad = _padding(dims)
    sizes, strides = [1] * pad + dims, [0] * pad + strides
    block = runtime.block(1024, 1 << 16, many=runtime.quarter(n))
    with runtime.quiet():
        _store_strided_kernel[(triton.cdiv(n, block),)](
            dst, contiguous(src, name=name), n, *sizes[1:], *strides, BLOCK=block,
            WIDE=needs_int64(n, dst), num_warps=4)


def contiguous(x: torch.Tensor, name: str = "copy") -> torch.Tensor:
    """x itself if dense and float32, else a dense float32 copy made by the strided copy kernel
    (`name`, the op, is named in its errors)."""
    if x.is_contiguous() and x.dtype == torch.float32:
        return x
    return elementwise(COPY, x, name=name)


def broadcast_to(x: Any, shape: tuple[int, ...], scale: float | None = None) -> torch.Tensor:
    """A dense array of `shape` holding x broadcast (times `scale`, when given)."""
    if scale is None:
        return elementwise(COPY, x, name="broadcast", out_shape=tuple(shape))
    return elementwise(MUL, x, scale, name="broadcast", out_shape=tuple(shape))
