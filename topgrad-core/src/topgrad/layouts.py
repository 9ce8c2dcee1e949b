"""Hints for weights given in PyTorch's layout, which Topgrad's differs from (shared by backends)."""

from __future__ import annotations


def linear_weight_hint(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    """For a Linear whose w does not fit x: a hint when w is `F.linear`'s (out, in) weight, which
    x.linear takes transposed, as (in, out); else an empty string."""
    if len(x_shape) >= 1 and len(w_shape) == 2 and w_shape[1] == x_shape[-1] != w_shape[0]:
        return f"; w looks like PyTorch's (out, in) layout: pass w.T, of shape {(w_shape[1], w_shape[0])}"
    return ""
