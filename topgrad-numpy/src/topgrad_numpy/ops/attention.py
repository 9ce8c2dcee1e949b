"""Single-head scaled dot-product attention, softmax(q kᵀ / √D) v, on batched BLAS GEMMs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from topgrad.arguments import flag
from topgrad.attention_shapes import check_attention_shapes

from topgrad_numpy.ops._util import NumpyOp, rowmax, rowsum
from topgrad_numpy.ops.gemm_operands import computed


class Attention(NumpyOp):
    """softmax(q kᵀ/√D [+ causal mask]) v; saves q, k, v and the probabilities (B*T*S floats,
    the only extra memory). A query whose scores are all -inf (keys of -inf in
    the data) gets probabilities 0 and output 0, as PyTorch's scaled_dot_product_attention."""

    def forward(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool = False) -> np.ndarray:
        """softmax(q kᵀ/√D) v, batched over the first axis, the causal mask applied when asked;
        raw arrays in the dtype they count as (`computed`: float32 or float64)."""
        q, k, v = computed("Attention", ("q", "k", "v"), q, k, v)
        causal = flag("Attention", "causal", causal)  # "no" would mask as True does
        check_attention_shapes(q.shape, k.shape, v.shape)
        T, S = q.shape[1], k.shape[1]
        self.scale = scale = 1.0 / math.sqrt(q.shape[2]) if q.shape[2] else 1.0
        self.causal = causal  # shown by graph(), as the triton op's
        # q scaled before the product, as PyTorch's math path scales: q kᵀ may pass float32's
        # 3.4e38 where q kᵀ/√D does not, and a row of inf scores gives NaN (inf - inf).
        p = np.matmul(q * scale, k.transpose(0, 2, 1))
        if causal:  # top-left aligned, as torch's is_causal: query i sees keys j <= i
            p[:, np.triu(np.ones((T, S), dtype=bool), k=1)] = -np.inf
        if S:  # no keys is only allowed for no queries: nothing to normalize
            top = rowmax(p)  # a few dozen keys: by columns (`rowmax`), numpy's reduce pays per row
            top[top == -np.inf] = 0.0  # a row of -inf scores: exp gives 0s, not -inf - -inf
            p -= top
            np.exp(p, out=p)
            total = rowsum(p)
            total[total == 0.0] = 1.0  # only such a row sums to 0: its probabilities stay 0
            p /= total
        out = np.matmul(p, v)
        self.save_for_backward(q=q, k=k, v=v, probs=p)
        return out

    def backward(self, grad: np.ndarray) -> tuple[Any, Any, Any]:
        """The gradients of q, k and v from the saved probabilities (softmax's Jacobian-vector product)."""
        q, k, v, p = self._intermediate
        gv = np.matmul(p.transpose(0, 2, 1), grad)
        gs = np.matmul(grad, v.transpose(0, 2, 1))
        # d softmax: p * (gp - sum_j gp_j p_j). The sum is taken over gp * p, not as grad · out
        # (equal in exact arithmetic): a query that sees one key (p = [1, 0, ...], the first of a
        # causal row) then gets exactly 0, as in PyTorch, not float32 noise times |grad| |v|.
        gs -= np.einsum("bts,bts->bt", gs, p)[..., None]
        gs *= p
        gs *= self.scale
        gq = np.matmul(gs, k)  # 0 * a key of -inf: NaN, as PyTorch's
        gk = np.matmul(gs.transpose(0, 2, 1), q)
        return gq, gk, gv
