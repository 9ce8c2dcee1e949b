"""Max pooling of NHWC images: forward writes each window's maximum and the tap that gave it;
backward gathers, for each input pixel, the gradients of the windows whose maximum it was (no
atomics, as col2im gathers).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.conv import nhwc_index, reading_output
from topgrad_triton.kernels.indexing import bound, needs_int64, widen


@triton.jit
def _maxpool_kernel(
    x_ptr, out_ptr, tap_ptr, N, H, W, C, OH, OW, sh, sw, ph, pw,
    KH, KW, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """One program writes BLOCK outputs (b, oh, ow, c) of the dense output. The scan takes a tap
    whose value is larger than the running maximum or NaN (PyTorch's rule: the first maximum, the
    last NaN); a window of -inf only keeps its first tap inside the image. WIDE: int64 offsets."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    b, oh, ow, c = nhwc_index(offs, OH, OW, C)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    tap = tl.full([BLOCK], -1, tl.int32)
    for i in range(0, bound(KH)):
        h = oh * sh - ph + i
        for j in range(0, bound(KW)):
            w = ow * sw - pw + j
            ok = inside & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            src = ((b * H + tl.where(ok, h, 0)) * W + tl.where(ok, w, 0)) * C + c
            v = tl.load(x_ptr + src, mask=ok, other=float("-inf"))
            take = ok & ((v > best) | (v != v))
            best = tl.where(take, v, best)
            tap = tl.where(take, i * KW + j, tap)
    first = tl.maximum(ph - oh * sh, 0) * KW + tl.maximum(pw - ow * sw, 0)
    tl.store(out_ptr + offs, best, mask=inside)
    tl.store(tap_ptr + offs, tl.where(tap < 0, first, tap).to(tap_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _maxpool_grad_kernel(
    g_ptr, tap_ptr, dx_ptr, N, H, W, C, OH, OW, sh, sw, ph, pw,
    KH, KW, BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """One program computes BLOCK elements of the dense dx: dx[b, h, w, c] sums, over taps (i, j)
    with oh = (h + ph - i) / sh and ow = (w + pw - j) / sw whole and in range, the gradient of
    output (b, oh, ow, c) where that output's tap is (i, j); taps in the forward's order (WIDE: int64)."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    b, h, w, c = nhwc_index(offs, H, W, C)
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, bound(KH)):
        for j in range(0, bound(KW)):
            row, ok = reading_output(b, h, w, i, j, ph, pw, sh, sw, OH, OW)
            ok = inside & ok
            o = row * C + c
            t = tl.load(tap_ptr + o, mask=ok, other=-1).to(tl.int32)
            g = tl.load(g_ptr + o, mask=ok, other=0.0)
            acc += tl.where(ok & (t == i * KW + j), g, 0.0)
    tl.store(dx_ptr + offs, acc, mask=inside)


def maxpool(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
            out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the pooled dense NHWC output, the tap of each output's window that gave it: int8 for
    windows of up to 127 taps, else int32) of the dense NHWC x."""
    B, H, W, C = x.shape
    out = torch.empty((B, *out_hw, C), dtype=torch.float32, device=x.device)
    small = kernel[0] * kernel[1] <= 127
    tap = torch.empty(out.shape, dtype=torch.int8 if small else torch.int32, device=x.device)
    n = out.numel()
    if n:
        block = runtime.block(256, 1 << 16, many=runtime.quarter(n))
        with runtime.quiet():
            _maxpool_kernel[(triton.cdiv(n, block),)](
                x, out, tap, n, H, W, C, *out_hw, *stride, *pad, *kernel, BLOCK=block,
                WIDE=needs_int64(x, out), num_warps=4,
            )
    return out, tap


def maxpool_grad(grad: torch.Tensor, tap: torch.Tensor, shape: tuple[int, int, int, int],
                 kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]) -> torch.Tensor:
    """The dense NHWC gradient of the pooled image x of `shape`, from the dense output gradient."""
    _, H, W, C = shape
    dx = torch.empty(shape, dtype=torch.float32, device=grad.device)
    n = dx.numel()
    if n:
        block = runtime.block(256, 1 << 16, many=runtime.quarter(n))
        with runtime.quiet():
            _maxpool_grad_kernel[(triton.cdiv(n, block),)](
                grad, tap, dx, n, H, W, C, tap.shape[1], tap.shape[2], *stride, *pad, *kernel,
                BLOCK=block, WIDE=needs_int64(grad, dx), num_warps=4,
            )
    return dx
