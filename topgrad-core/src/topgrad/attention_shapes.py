"""`topgrad.attention(q, k, v)`: the shapes it takes, checked once for every backend.

Topgrad's Attention is single-head, on (B, T, D) queries and (B, S, D) keys with (B, S, Dv)
values. PyTorch's scaled_dot_product_attention also takes heads as a fourth axis; those fold
into the batch. Shapes only: a backend's own array types never reach this module.
"""

from __future__ import annotations


def check_attention_shapes(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> None:
    """ValueError naming Attention and the three shapes unless q is (B, T, D), k (B, S, D) and v
    (B, S, Dv) with at least one key; 4-d inputs get the reshape that folds heads into B."""
    shapes = f"q {tuple(q)}, k {tuple(k)}, v {tuple(v)}"
    if len(q) == len(k) == len(v) == 4:
        b, h, t, d = q
        raise ValueError(
            f"Attention: q, k and v must be 3-d (B, T, D), got {shapes}. Topgrad's attention is "
            f"single-head: fold (B, H) heads into the batch, q.reshape({b * h}, {t}, {d}) (likewise k "
            f"and v), and reshape the output back to ({b}, {h}, {t}, Dv)"
        )
    if not len(q) == len(k) == len(v) == 3:
        raise ValueError(f"Attention: q, k and v must be 3-d (B, T, D), got {shapes}")
    if k[0] != q[0] or k[2] != q[2] or v[:2] != k[:2]:
        raise ValueError(f"Attention: q (B, T, D), k (B, S, D) and v (B, S, Dv) do not match: {shapes}")
    if k[1] == 0 and q[1] > 0:
        raise ValueError(f"Attention: needs at least one key, got k {tuple(k)} (softmax over nothing)")
