"""Attention op of the Triton backend: single head, softmax(q kᵀ / √D) v (kernels in
`topgrad_triton.kernels.attention`). q and k are (B, T, D) and (B, S, D); v may be as wide as
it likes, (B, S, Dv), as in PyTorch's scaled_dot_product_attention."""

from __future__ import annotations

from typing import Any

import torch
from topgrad.arguments import flag
from topgrad.attention_shapes import check_attention_shapes

from topgrad_triton.kernels import attention as kernels
from topgrad_triton.kernels.elementwise import contiguous
from topgrad_triton.ops.base import TritonOp, check_tensors


class Attention(TritonOp):
    """softmax(q kᵀ / √D) v for q (B, T, D), k (B, S, D), v (B, S, Dv); `causal` masks key j > query i."""

    def forward(self, q: Any, k: Any, v: Any, causal: bool = False) -> Any:
        """The fused attention kernel's output; saves q, k, v and each query row's max and log-sum."""
        check_tensors("Attention", q=q, k=k, v=v)
        causal = flag("Attention", "causal", causal)  # "no" would mask as True does
        check_attention_shapes(tuple(q.shape), tuple(k.shape), tuple(v.shape))
        # a raw torch operand of another dtype is cast, as Linear's weight is (the kernels read any
        # strides, so a float32 one is used as it is)
        q, k, v = (a if a.dtype == torch.float32 else contiguous(a, "Attention") for a in (q, k, v))
        o, stats = kernels.attention_forward(q, k, v, causal)
        self.causal = causal
        # stats: each query row's max score and log-sum (backward needs no o: see its delta kernel)
        self.save_for_backward(q=q, k=k, v=v, stats=stats)
        return o

    def backward(self, grad: Any) -> tuple[Any, Any, Any]:
        """dq, dk and dv by the backward kernels, from the saved inputs and row statistics."""
        q, k, v, stats = self.saved
        return kernels.attention_backward(q, k, v, stats, grad, self.causal)
