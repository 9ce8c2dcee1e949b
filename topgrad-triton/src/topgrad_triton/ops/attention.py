"""Attention op of the Triton backend: single head, softmax(q kᵀ / √D) v (kernels in
`topgrad_triton.kernels.attention`). Inputs are (B, T, D), as the contract fixes."""

from __future__ import annotations

from typing import Any

from topgrad_triton.kernels import attention as kernels
from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.ops.base import TritonOp


def _as_btd(x: Any) -> Any:
    """x (..., T, D) viewed as (B, T, D); a dense copy (Triton kernel) if no such view exists."""
    shape = (-1, *x.shape[-2:]) if x.ndim != 2 else (1, *x.shape)
    try:
        return x.view(shape)
    except RuntimeError:
        return contiguous(x).view(shape)


class Attention(TritonOp):
    """softmax(q kᵀ / √D) v for q (B, T, D), k and v (B, S, D); `causal` masks key j > query i."""

    def forward(self, q: Any, k: Any, v: Any, causal: bool = False) -> Any:
        if q.ndim != 3 or q.ndim != k.ndim or k.shape != v.shape or q.shape[:-2] != k.shape[:-2] \
                or q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"Attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit "
                "(expected q (B, T, D), k and v (B, S, D))"
            )
        if k.shape[-2] == 0 and q.shape[-2] > 0:
            raise ValueError(f"Attention: no keys to attend to (k of shape {tuple(k.shape)})")
        q3, k3, v3 = _as_btd(q), _as_btd(k), _as_btd(v)
        o, lse = kernels.attention_forward(q3, k3, v3, causal)
        self.causal, self.shapes = bool(causal), (tuple(q.shape), tuple(k.shape))
        self.save_for_backward(q3, k3, v3, o, lse)
        return o.view(q.shape)

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        q3, k3, v3, o, lse = self.saved
        dq, dk, dv = kernels.attention_backward(q3, k3, v3, o, lse, _as_btd(grad), self.causal)
        q_shape, k_shape = self.shapes
        return dq.view(q_shape), dk.view(k_shape), dv.view(k_shape)
