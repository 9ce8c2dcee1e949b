"""Fused optimizer updates: one kernel per SGD or Adam step of a parameter, torch.optim's rules.

Each step writes into the parameter and its state in place, as torch.optim does (and the numpy
backend): a `detach()` of the parameter sees the new values. Every element is read before it
is written by the same program, so in place is safe."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from topgrad_triton import runtime
from topgrad_triton.kernels.indexing import needs_int64, widen


@triton.jit
def _sgd_kernel(p_ptr, g_ptr, buf_ptr, p_out, buf_out, n, lr, momentum, dampening, weight_decay,
                HAS_BUF: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                HAS_WD: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """One program updates BLOCK elements: g += wd*p; buf = m*buf + (1-d)*g (or g first); p -= lr*step.
    Without weight decay the term is skipped, as torch skips it (0 * an inf parameter is NaN)."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask)
    if HAS_WD:
        g = g + weight_decay * p
    if MOMENTUM:
        if HAS_BUF:
            buf = momentum * tl.load(buf_ptr + offs, mask=mask) + (1.0 - dampening) * g
        else:
            buf = g
        tl.store(buf_out + offs, buf, mask=mask)
        if NESTEROV:
            g = g + momentum * buf
        else:
            g = buf
    tl.store(p_out + offs, p - lr * g, mask=mask)


@triton.jit
def _adam_kernel(p_ptr, g_ptr, m_ptr, v_ptr, p_out, m_out, v_out, n,
                 lr, beta1, beta2, eps, weight_decay, step_size, bias2_sqrt,
                 DECOUPLED: tl.constexpr, HAS_WD: tl.constexpr, BLOCK: tl.constexpr, WIDE: tl.constexpr):
    """One program updates BLOCK elements of p, m, v by one Adam (or AdamW) step; weight decay
    only when it is not 0, as torch (0 * an inf parameter is NaN)."""
    offs = widen(tl.program_id(0), WIDE) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    p = tl.load(p_ptr + offs, mask=mask)
    g = tl.load(g_ptr + offs, mask=mask)
    if HAS_WD:
        if DECOUPLED:
            p = p * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = beta1 * tl.load(m_ptr + offs, mask=mask) + (1.0 - beta1) * g
    v = beta2 * tl.load(v_ptr + offs, mask=mask) + (1.0 - beta2) * g * g
    denom = tl.sqrt(v) / bias2_sqrt + eps
    tl.store(p_out + offs, p - step_size * (m / denom), mask=mask)
    tl.store(m_out + offs, m, mask=mask)
    tl.store(v_out + offs, v, mask=mask)


def _grid(n: int) -> tuple[tuple[int], int]:
    block = runtime.block(1024, 1 << 16, many=runtime.quarter(n))
    return (triton.cdiv(n, block),), block


def sgd(p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor | None, *, lr: float, momentum: float,
        dampening: float, weight_decay: float, nesterov: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One SGD step on dense arrays, in place; returns (param, momentum buffer or None): the first
    step's buffer is a new array (torch clones the gradient), later ones are `buf` itself."""
    n = math.prod(p.shape)
    p_out = p
    buf_out = (buf if buf is not None else torch.empty_like(p)) if momentum else None
    if n:
        grid, block = _grid(n)
        with runtime.quiet():
            _sgd_kernel[grid](
                p, g, buf if buf is not None else p, p_out, buf_out if buf_out is not None else p_out, n,
                float(lr), float(momentum), float(dampening), float(weight_decay),
                HAS_BUF=buf is not None, MOMENTUM=bool(momentum), NESTEROV=bool(nesterov),
                HAS_WD=weight_decay != 0, BLOCK=block, WIDE=needs_int64(n),
            )
    return p_out, buf_out


def adam(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, *, step: int, lr: float,
         beta1: float, beta2: float, eps: float, weight_decay: float,
         decoupled: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step (AdamW when `decoupled`) on dense arrays, in place; returns (param, m, v)."""
    n = math.prod(p.shape)
    p_out, m_out, v_out = p, m, v
    if n:
        grid, block = _grid(n)
        with runtime.quiet():
            _adam_kernel[grid](
                p, g, m, v, p_out, m_out, v_out, n, float(lr), float(beta1), float(beta2), float(eps),
                float(weight_decay), lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step),
                DECOUPLED=bool(decoupled), HAS_WD=weight_decay != 0, BLOCK=block, WIDE=needs_int64(n),
            )
    return p_out, m_out, v_out
