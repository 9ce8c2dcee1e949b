"""BatchNorm and LayerNorm: the shapes they accept, checked once for every backend.

Both normalize per feature of the last axis (channels last, as Topgrad's NHWC images), and every
per-feature parameter (gamma, beta, the running statistics) has one value per feature. Backends
call `feature_count` with shapes only, so the refusals read the same on all of them.
"""

from __future__ import annotations

import math


def feature_count(op: str, x_shape: tuple[int, ...], **params: tuple[int, ...] | None) -> int:
    """C, the length of x's last axis, after checking that every given parameter shape (None: not
    given) is (C,); ValueError naming `op` and the shapes, with a hint where x looks NCHW."""
    x_shape = tuple(x_shape)
    if not x_shape:
        raise ValueError(f"{op}: needs an input with a feature axis, got shape {x_shape}")
    C = x_shape[-1]
    if C == 0:
        raise ValueError(f"{op}: needs at least one feature on the last axis, got x of shape {x_shape}")
    for name, shape in params.items():
        if shape is None or tuple(shape) == (C,):
            continue
        shape = tuple(shape)
        hint = ""
        if len(x_shape) == 4 and len(shape) == 1 and x_shape[1] == shape[0]:
            hint = (f". x looks NCHW (its axis 1 has {shape[0]}): Topgrad's images are NHWC, channels "
                    "last; transpose with np.transpose(x, (0, 2, 3, 1))")
        elif 1 < len(shape) <= len(x_shape) and x_shape[-len(shape):] == shape:
            n = len(shape)
            hint = (f". {op} normalizes over the last axis only (PyTorch's normalized_shape={shape} is "
                    f"its last {n} axes): reshape x to {(*x_shape[:-n], math.prod(shape))} and {name} to "
                    f"({math.prod(shape)},), then the result back")
        raise ValueError(f"{op}: {name} must have shape ({C},) for x of shape {x_shape} (one value per "
                         f"feature of the last axis), got {shape}{hint}")
    return C


def eval_statistics_missing(op: str, x_shape: tuple[int, ...]) -> ValueError:
    """The ValueError of every backend for eval mode without running statistics (PyTorch refuses it
    too): there is nothing to normalize by but the batch, which is what training=True does."""
    return ValueError(f"{op}: eval mode (training=False) needs running_mean and running_var, got "
                      f"neither for x {tuple(x_shape)} (training=True normalizes by the batch's own "
                      "statistics instead)")
