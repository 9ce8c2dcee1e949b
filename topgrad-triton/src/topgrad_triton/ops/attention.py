"""Attention op of the Triton backend: single head, softmax(q kᵀ / √D) v (kernels in
`topgrad_triton.kernels.attention`). Inputs are (B, T, D), as the contract fixes."""

from __future__ import annotations

from typing import Any

import torch

from topgrad_triton.kernels import attention as kernels
from topgrad_triton.ops.base import OTHER_BACKEND_HINT, TritonOp


class Attention(TritonOp):
    """softmax(q kᵀ / √D) v for q (B, T, D), k and v (B, S, D); `causal` masks key j > query i."""

    def forward(self, q: Any, k: Any, v: Any, causal: bool = False) -> Any:
        for name, a in (("q", q), ("k", k), ("v", v)):
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"Attention: {name} must be a Tensor, got {type(a).__name__}: wrap an "
                                f"array as Tensor({name}); {OTHER_BACKEND_HINT}")
        if q.ndim != 3 or q.ndim != k.ndim or k.shape != v.shape or q.shape[:-2] != k.shape[:-2] \
                or q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"Attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit "
                "(expected q (B, T, D), k and v (B, S, D))"
            )
        if k.shape[-2] == 0 and q.shape[-2] > 0:
            raise ValueError(f"Attention: no keys to attend to (k of shape {tuple(k.shape)})")
        o, lse = kernels.attention_forward(q, k, v, causal)
        self.causal = bool(causal)
        self.save_for_backward(q, k, v, o, lse)
        return o

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        q, k, v, o, lse = self.saved
        return kernels.attention_backward(q, k, v, o, lse, grad, self.causal)
