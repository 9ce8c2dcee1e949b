"""`x.maxpool2d(...)`: the geometry of max pooling, checked once for every backend.

Kept apart from the engine so that the Tensor method and every backend's MaxPool2d op take the
same arguments and refuse the same ones in the same words, with PyTorch's rules: a stride that
defaults to the window, padding at most half the window, an output of at least one position.
"""

from __future__ import annotations

from typing import Any

from topgrad import pytorch_names
from topgrad.pairs import Pair, output_size, pair


def pool_geometry(
    shape: tuple[int, ...], kernel_size: Any, stride: Any = None, padding: Any = 0
) -> tuple[Pair, Pair, Pair, Pair]:
    """(kernel, stride, padding, output size) as (h, w) pairs for an NHWC `shape`; ValueError
    naming MaxPool2d for what torch.nn.functional.max_pool2d refuses."""
    if len(shape) != 4:
        raise ValueError(f"MaxPool2d: needs x of shape (B, H, W, C) (NHWC), got shape {tuple(shape)}")
    kernel = pair("MaxPool2d", "kernel_size", kernel_size, 1)
    step = kernel if stride is None else pair("MaxPool2d", "stride", stride, 1)
    pad = pair("MaxPool2d", "padding", padding, 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(f"MaxPool2d: padding {pad} is more than half the window {kernel}, as PyTorch "
                         "refuses (a window could then hold only padding)")
    out = output_size((shape[1], shape[2]), kernel, step, pad)
    if min(out) < 1:
        raise ValueError(f"MaxPool2d: the window {kernel} does not fit x of shape {tuple(shape)} "
                         f"with padding {pad} (H and W are axes 1 and 2, NHWC)")
    return kernel, step, pad, out


def first_inside(out_index: int, stride: int, pad: int) -> int:
    """The first tap of a window (along one axis) that lies inside the image, not in the padding:
    where PyTorch puts a window's gradient when every value in it is -inf."""
    return max(0, pad - out_index * stride)


def refuse_pool_options(dilation: Any, ceil_mode: Any, return_indices: Any) -> None:
    """TypeError for PyTorch's max_pool2d options that Topgrad's MaxPool2d does not take (any value
    but the default), saying what to write instead."""
    if pair("MaxPool2d", "dilation", dilation, 1) != (1, 1):
        raise pytorch_names.not_taken("Tensor.maxpool2d", "dilation", dilation, "dilated windows",
                                      "Topgrad's windows are dense; drop dilation=")
    if ceil_mode is not False:
        raise pytorch_names.not_taken(
            "Tensor.maxpool2d", "ceil_mode", ceil_mode, "last window running past the edge",
            "every window must fit (floor mode); for that last window, extend x at the bottom and right "
            "with -inf (topgrad.cat with a constant Tensor) before pooling")
    if return_indices is not False:
        raise pytorch_names.not_taken(
            "Tensor.maxpool2d", "return_indices", return_indices, "argmax of each window",
            "the maximum values alone are returned; where they are is x.numpy()'s argmax over each window "
            "(no gradient flows through an index)")
