"""`x.conv2d(...)`: the geometry of a 2-d convolution, checked once for every backend.

Every backend's Conv2d op calls `conv_geometry` first, so that all of them refuse the same
inputs in the same words, with PyTorch's rules: NHWC x and HWIO w (Topgrad's layouts, not
PyTorch's), a kernel and an image of at least one row and column, a kernel that fits the
padded image. Shapes only: a backend's own array types never reach this module.
"""

from __future__ import annotations

from typing import Any

from topgrad import pytorch_names
from topgrad.arguments import LARGEST_ARRAY, is_whole
from topgrad.pairs import Pair, output_size, pair


def conv_geometry(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], b_shape: tuple[int, ...] | None = None,
    stride: Any = 1, padding: Any = 0,
) -> tuple[Pair, Pair, Pair]:
    """(stride, padding, output size) as (h, w) pairs for x of shape (B, H, W, Cin), w of shape
    (kh, kw, Cin, Cout) and a bias of shape (Cout,) (None: no bias); ValueError naming Conv2d
    and the shapes for what torch.nn.functional.conv2d refuses."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    shapes = f"x of shape {x_shape} and w of shape {w_shape}"
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"Conv2d: needs x of shape (B, H, W, Cin) and w of shape (kh, kw, Cin, Cout); "
                         f"got {shapes}")
    if x_shape[3] != w_shape[2]:
        raise ValueError(
            f"Conv2d: channel mismatch, x of shape {x_shape} has Cin={x_shape[3]} but w of shape {w_shape} "
            f"expects Cin={w_shape[2]} (x is NHWC and w is (kh, kw, Cin, Cout); PyTorch's NCHW x and "
            "(Cout, Cin, kh, kw) w need a transpose of their arrays before they become Tensors: "
            "np.transpose(x, (0, 2, 3, 1)), np.transpose(w, (2, 3, 1, 0)))"
        )
    if 0 in w_shape[:2] or w_shape[3] == 0:
        raise ValueError(f"Conv2d: the kernel needs kh, kw and Cout of at least 1 (as in PyTorch), "
                         f"got {shapes}")
    if b_shape is not None and tuple(b_shape) != (w_shape[3],):
        oihw = tuple(b_shape) == (w_shape[0],) and w_shape[1] == x_shape[3]
        hint = (f"; w looks like PyTorch's (Cout, Cin, kh, kw) layout (Cin={w_shape[1]}, as x's, and "
                f"Cout={w_shape[0]}, as the bias's): pass np.transpose(w, (2, 3, 1, 0)), of shape "
                f"{(w_shape[2], w_shape[3], w_shape[1], w_shape[0])}") if oihw else ""
        raise ValueError(f"Conv2d: bias must have shape ({w_shape[3]},) for w of shape {w_shape}, "
                         f"got {tuple(b_shape)}{hint}")
    if 0 in x_shape[1:3]:
        raise ValueError(f"Conv2d: x of shape {x_shape} is an image with no rows or columns; as in "
                         "PyTorch only the batch or channel axis may be empty")
    step = pair("Conv2d", "stride", stride, 1)
    pad = named_padding(padding, step, (w_shape[0], w_shape[1])) if isinstance(padding, str) else \
        pair("Conv2d", "padding", padding, 0)
    out = output_size((x_shape[1], x_shape[2]), (w_shape[0], w_shape[1]), step, pad)
    if min(out) < 1:
        raise ValueError(f"Conv2d: the kernel is larger than the padded image, {shapes}, padding {pad} "
                         "(H and W are axes 1 and 2 of x, NHWC)")
    padded = x_shape[0] * (x_shape[1] + 2 * pad[0]) * (x_shape[2] + 2 * pad[1]) * max(x_shape[3], w_shape[3])
    if padded > LARGEST_ARRAY:  # torch's overflow text came through with its C++ frames
        raise ValueError(f"Conv2d: padding {pad} makes {padded:.3g} values of padded images, more than any "
                         f"array can hold, for {shapes}")
    return step, pad, out


def named_padding(padding: str, stride: Pair, kernel: Pair) -> Pair:
    """PyTorch's padding='valid' (none) and 'same' (the output keeps the image's size: stride 1, and
    here an odd kernel, since Topgrad pads both sides alike) as an (h, w) pair; ValueError else."""
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ValueError(f"Conv2d: padding must be an int >= 0, an (h, w) pair of them, 'valid' or 'same', "
                         f"got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"Conv2d: padding='same' needs stride 1, as in PyTorch, got stride {stride}; "
                         "give the padding as numbers instead")
    even = [name for name, k in zip(("row", "column"), kernel) if k % 2 == 0]
    if even:
        raise ValueError(
            f"Conv2d: padding='same' with a kernel of size {kernel} pads one side more than the other "
            "in PyTorch, and Topgrad pads both sides alike; padding=(kh // 2, kw // 2) gives one more "
            f"output {' and '.join(even)} than the image: drop the output's first {' and first '.join(even)} "
            "to get PyTorch's result")
    return kernel[0] // 2, kernel[1] // 2


def refuse_conv_options(dilation: Any, groups: Any) -> None:
    """TypeError for PyTorch's conv2d options at a value other than 1, which Topgrad's Conv2d does
    not take, saying how to compose them from dense convolutions."""
    d = pair("Conv2d", "dilation", dilation, 1)
    if d != (1, 1):
        raise pytorch_names.not_taken(
            "Tensor.conv2d", "dilation", dilation, "dilated kernel",
            f"Topgrad's kernels are dense. A kernel w of shape (kh, kw, Cin, Cout) at dilation {d} is the "
            f"dense kernel of shape ({d[0]}*(kh-1)+1, {d[1]}*(kw-1)+1, Cin, Cout) holding w's taps "
            f"{d[0]} rows and {d[1]} columns apart, zeros between: build it with topgrad.cat of w's slices "
            "and constant zeros (its gradient flows back to w) and convolve with that")
    if not (is_whole(groups) and int(groups) >= 1):
        raise ValueError(f"Conv2d: groups must be an int >= 1, got {groups!r}")
    if groups != 1:
        raise pytorch_names.not_taken(
            "Tensor.conv2d", "groups", groups, "grouped convolution",
            f"convolve each group apart and join them: with c = Cin // {groups}, o = Cout // {groups} and w "
            f"of shape (kh, kw, c, Cout), topgrad.cat([x[..., i*c:(i+1)*c].conv2d(w[..., i*o:(i+1)*o], "
            f"stride=stride, padding=padding) for i in range({groups})], axis=3), plus b")
