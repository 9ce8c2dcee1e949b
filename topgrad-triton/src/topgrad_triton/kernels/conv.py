"""im2col and its adjoint col2im for NHWC images and HWIO kernels, with a stride and a zero
padding per axis (sh, sw and ph, pw).

`im2col` lays each output position's receptive field out as one row, so a convolution
is one matmul with the kernel viewed as (KH*KW*C, Cout). `col2im` sums the rows' gradients
back onto the image without atomics: each program gathers, for its own input pixels, the
few (output position, kernel tap) pairs that read them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from topgrad.pairs import output_size

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import bound, needs_int64, widen


@triton.jit
def nhwc_index(offs, H, W, C):
    """(b, h, w, c) of offsets into a dense NHWC array of height H, width W and C channels."""
    c = offs % C
    r = offs // C
    w = r % W
    r = r // W
    return r // H, r % H, w, c


@triton.jit
def reading_window(n, pad, tap, stride, n_out):
    """Along one axis: the output position whose window reads input position n at kernel tap
    `tap`, (n + pad - tap) / stride, and whether there is one (whole, and in range)."""
    m = n + pad - tap
    ms = tl.where(m >= 0, m, 0)  # keep // and % away from negative numbers
    o = ms // stride
    return o, (m >= 0) & (ms % stride == 0) & (o < n_out)


@triton.jit
def reading_output(b, h, w, i, j, ph, pw, sh, sw, OH, OW):
    """The output whose window reads input pixel (b, h, w) at kernel tap (i, j), as its row
    (b * OH + oh) * OW + ow of the dense output (0 where there is none), and whether there is one:
    what a gathering backward (col2im, max pooling's) adds up, tap by tap."""
    oh, h_ok = reading_window(h, ph, i, sh, OH)
    ow, w_ok = reading_window(w, pw, j, sw, OW)
    ok = h_ok & w_ok
    return (b * OH + tl.where(ok, oh, 0)) * OW + tl.where(ok, ow, 0), ok


@triton.jit
def _im2col_kernel(
    x_ptr, cols_ptr, H, W, C, OH, OW, KW, sh, sw, ph, pw, M, KC,
    sxb, sxh, sxw, sxc,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, WIDE: tl.constexpr,
):
    """One program fills a BLOCK_M x BLOCK_K tile of cols (M = B*OH*OW rows, KC = KH*KW*C columns):
    cols[(b, oh, ow), (i, j, c)] = x[b, oh*sh - ph + i, ow*sw - pw + j, c], 0 in the padding.
    WIDE: int64 offsets."""
    rm = widen(tl.program_id(0), WIDE) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = widen(tl.program_id(1), WIDE) * BLOCK_K + tl.arange(0, BLOCK_K)
    b = rm // (OH * OW)
    pos = rm % (OH * OW)
    oh = pos // OW
    ow = pos % OW
    i = rk // (KW * C)
    tap = rk % (KW * C)
    j = tap // C
    c = tap % C
    h = oh[:, None] * sh - ph + i[None, :]
    w = ow[:, None] * sw - pw + j[None, :]
    inside = (rm[:, None] < M) & (rk[None, :] < KC)
    valid = inside & (h >= 0) & (h < H) & (w >= 0) & (w < W)
    hs = tl.where(valid, h, 0)
    ws = tl.where(valid, w, 0)
    src = x_ptr + b[:, None] * sxb + hs * sxh + ws * sxw + c[None, :] * sxc
    tl.store(cols_ptr + rm[:, None] * KC + rk[None, :], tl.load(src, mask=valid, other=0.0), mask=inside)


@triton.jit
def _col2im_kernel(
    dcols_ptr, dx_ptr, H, W, C, OH, OW, KH, KW, sh, sw, ph, pw, N, KC,
    BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """One program computes BLOCK elements of the dense NHWC dx: dx[b, h, w, c] is the sum, over
    kernel taps (i, j) with oh = (h + ph - i) / sh and ow = (w + pw - j) / sw whole
    and in range, of dcols[(b, oh, ow), (i, j, c)]. WIDE: int64 offsets."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    b, h, w, c = nhwc_index(offs, H, W, C)
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, bound(KH)):
        for j in range(0, bound(KW)):
            row, ok = reading_output(b, h, w, i, j, ph, pw, sh, sw, OH, OW)
            acc += tl.load(dcols_ptr + row * KC + (i * KW + j) * C + c, mask=inside & ok, other=0.0)
    tl.store(dx_ptr + offs, acc, mask=inside)


def im2col(x: torch.Tensor, kh: int, kw: int, stride: tuple[int, int], pad: tuple[int, int]) -> torch.Tensor:
    """The (B*OH*OW, KH*KW*C) patch matrix of the NHWC image x (any strides); stride and pad
    are (h, w) pairs."""
    B, H, W, C = x.shape
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size((H, W), (kh, kw), stride, pad)
    M, KC = B * OH * OW, kh * kw * C
    cols = torch.empty((M, KC), dtype=torch.float32, device=x.device)
    if M == 0 or KC == 0:
        return cols
    block_k = min(triton.next_power_of_2(KC), runtime.block(64, 1024, many=runtime.quarter(KC)))
    tile = runtime.block(4096, 1 << 16, many=runtime.quarter(M) * block_k)
    block_m = max(1, min(triton.next_power_of_2(M), tile // block_k))
    grid = (triton.cdiv(M, block_m), triton.cdiv(KC, block_k))
    with runtime.quiet():
        _im2col_kernel[grid](
            x, cols, H, W, C, OH, OW, kw, sh, sw, ph, pw, M, KC, *x.stride(),
            BLOCK_M=block_m, BLOCK_K=block_k, WIDE=needs_int64(x, cols), num_warps=4,
        )
    return cols


def col2im(dcols: torch.Tensor, shape: tuple[int, int, int, int], kh: int, kw: int,
           stride: tuple[int, int], pad: tuple[int, int]) -> torch.Tensor:
    """The adjoint of `im2col`: the dense NHWC gradient of the image from the patch-matrix gradient."""
    B, H, W, C = shape
    (sh, sw), (ph, pw) = stride, pad
    OH, OW = output_size((H, W), (kh, kw), stride, pad)
    dx = torch.empty(shape, dtype=torch.float32, device=dcols.device)
    N = B * H * W * C
    if N == 0:
        return dx
    block = runtime.block(256, 1 << 16, many=runtime.quarter(N))
    with runtime.quiet():
        _col2im_kernel[(triton.cdiv(N, block),)](
            dcols, dx, H, W, C, OH, OW, kh, kw, sh, sw, ph, pw, N, kh * kw * C, BLOCK=block,
            WIDE=needs_int64(dcols, dx), num_warps=4,
        )
    return dx
