"""Hints for weights given in PyTorch's layout, which Topgrad's differs from (shared by backends)."""

from __future__ import annotations


def linear_weight_hint(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> str:
    """For a Linear whose w does not fit x: a hint when w is `F.linear`'s (out, in) weight, which
    x.linear takes transposed, as (in, out); else an empty string."""
    if len(x_shape) >= 1 and len(w_shape) == 2 and w_shape[1] == x_shape[-1] != w_shape[0]:
        return (f"; w looks like PyTorch's (out, in) layout: pass w.T, of shape {(w_shape[1], w_shape[0])} "
                "(a weight that follows a flatten of feature maps also needs its inputs in NHWC's "
                "(H, W, C) order: from its numpy array a, "
                "a.reshape(out, C, H, W).transpose(2, 3, 1, 0).reshape(-1, out), not a.T)")
    if len(x_shape) >= 1 and len(w_shape) == 1 and w_shape[0] == x_shape[-1]:
        return (f"; a 1-d w (a matrix-vector product) is not taken: x @ w.reshape({w_shape[0]}, 1) has "
                f"shape {(*x_shape[:-1], 1)}")
    if len(x_shape) == len(w_shape) == 3 and x_shape[0] == w_shape[0] and x_shape[2] == w_shape[1]:
        b, t, d = x_shape
        m = w_shape[2]
        return (f"; a 3-d w (a batched matmul) is not taken: (x.reshape({b}, {t}, {d}, 1) * "
                f"w.reshape({b}, 1, {d}, {m})).sum(axis=2) computes it")
    return ""
