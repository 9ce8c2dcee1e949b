"""`x.maxpool2d(...)` (the MaxPool2d op, beyond the contract's table) against PyTorch's
max_pool2d, forward and backward, on the backend under test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from helpers import (
    Sizes,
    check_against_torch,
    layouts,
    nchw_to_nhwc,
    nhwc_to_nchw,
    rand,
    to_numpy,
    topgrad_warns_nothing,
    torch_conv2d,
)
from hypothesis import assume, given
from hypothesis import strategies as st
from topgrad import Tensor

seeds = st.integers(0, 2**16)


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def torch_maxpool(x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> torch.Tensor:
    """PyTorch's max_pool2d of NHWC x (permuted to NCHW and back)."""
    return nchw_to_nhwc(nnf.max_pool2d(nhwc_to_nchw(x), kernel_size, stride, padding))


def check_pool(
    shape: tuple[int, ...], kernel: Any, stride: Any = None, padding: Any = 0, seed: int = 0,
    layout: Any = "contiguous",
) -> None:
    check_against_torch(lambda x: x.maxpool2d(kernel, stride, padding),
                        lambda t: torch_maxpool(t, kernel, stride, padding), [rand(shape, seed)], seed=seed,
                        layout=layout)


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [((2, 6, 6, 3), 2, None, 0),  # LeNet's pooling
     ((2, 7, 7, 2), 2, None, 0),  # a last row and column no window reaches
     ((2, 7, 5, 3), 3, 2, 1),  # ResNet's stem pooling: overlapping windows over -inf padding
     ((1, 5, 4, 2), (3, 2), 1, (1, 0)),  # overlapping, a window per axis of its own
     ((2, 4, 6, 1), (1, 3), (1, 3), 0),
     ((1, 5, 5, 2), 5, None, 0),  # global max pooling
     ((2, 3, 3, 2), 1, 1, 0),  # the identity
     ((0, 4, 4, 2), 2, None, 0)],  # no images
)
def test_maxpool_fixed(shape: tuple[int, ...], kernel: Any, stride: Any, padding: Any) -> None:
    check_pool(shape, kernel, stride, padding)


@given(data=st.data(), seed=seeds)
def test_maxpool_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    kernel = (data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw"))
    # stride None: the window's own size, as max_pool2d's default
    stride = data.draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)), label="stride")
    padding = tuple(data.draw(st.integers(0, k // 2), label="padding") for k in kernel)
    shape = (data.draw(st.integers(1, sizes.batch), label="B"),
             data.draw(st.integers(1, sizes.image), label="H"),
             data.draw(st.integers(1, sizes.image), label="W"),
             data.draw(st.integers(1, sizes.channels), label="C"))
    assume(all(n + 2 * p >= k for n, k, p in zip(shape[1:3], kernel, padding)))
    check_pool(shape, kernel, stride, padding, seed, data.draw(layouts(1), label="layout"))


def test_maxpool_ties_nan_and_minus_inf_as_pytorch() -> None:
    """Ties give the gradient to the window's first maximum, a NaN wins (the window's last NaN),
    a window of -inf gives it to its first position inside the image (not the padding), and a
    NaN or inf upstream gradient reaches only the chosen position: bit for bit as PyTorch's."""
    x = np.array([[2, 2, -1, 0, 7], [1, 2, -1, -1, 7], [np.nan, 0, 3, 3, 0], [0, np.nan, 3, 3, 0],
                  [-np.inf, -np.inf, 1, 1, 1]], np.float32).reshape(1, 5, 5, 1)
    for kernel, stride, padding in ((2, 2, 0), (3, 2, 1), (2, 1, 1), (3, 1, 0)):
        top = Tensor(x)
        want = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        with topgrad_warns_nothing():
            out = top.maxpool2d(kernel, stride, padding)
        ref = torch_maxpool(want, kernel, stride, padding)
        g = np.arange(1, ref.numel() + 1, dtype=np.float32).reshape(tuple(ref.shape))
        g.flat[0], g.flat[-1] = np.nan, np.inf
        out.backward(g)
        ref.backward(torch.tensor(g, dtype=torch.float64))
        np.testing.assert_array_equal(to_numpy(out), ref.detach().numpy())
        np.testing.assert_array_equal(to_numpy(top.grad), want.grad.numpy())
    corner = np.full((1, 3, 3, 1), -np.inf, np.float32)  # every window -inf, padding included
    check_top, check_ref = Tensor(corner), torch.tensor(corner, requires_grad=True)
    check_top.maxpool2d(3, 2, 1).sum().backward()
    torch_maxpool(check_ref, 3, 2, 1).sum().backward()
    np.testing.assert_array_equal(to_numpy(check_top.grad), check_ref.grad.numpy())


def test_a_lenet_matches_pytorch() -> None:
    """conv, ReLU, pool, conv, ReLU, pool, linear: LeNet's shape at 12x12, forward and backward."""
    def top(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
        h = x.conv2d(w1, padding=1).relu().maxpool2d(2)
        h = h.conv2d(w2, padding=1).relu().maxpool2d(2)
        return h.flatten().linear(w3).logsoftmax()

    def ref(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
        h = torch_maxpool(torch_conv2d(x, w1, padding=1).relu(), 2)
        h = torch_maxpool(torch_conv2d(h, w2, padding=1).relu(), 2)
        return (h.reshape(h.shape[0], -1) @ w3).log_softmax(-1)

    weights = [rand((3, 3, 1, 4), 2), rand((3, 3, 4, 6), 3) * 0.3, rand((54, 10), 4) * 0.2]
    check_against_torch(top, ref, [rand((2, 12, 12, 1), 1), *weights])


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [((1, 4, 4, 2), {"kernel_size": 2, "padding": 2},
      r"padding \(2, 2\) is more than half the window \(2, 2\)"),
     ((1, 1, 3, 2), {"kernel_size": 2}, r"the window \(2, 2\) does not fit x of shape \(1, 1, 3, 2\)"),
     ((4, 4, 2), {"kernel_size": 2}, r"needs x of shape \(B, H, W, C\) \(NHWC\), got shape \(4, 4, 2\)"),
     ((1, 4, 4, 2), {"kernel_size": 0},
      r"kernel_size must be an int >= 1 or an \(h, w\) pair of them, got 0"),
     ((1, 4, 4, 2), {"kernel_size": True}, r"kernel_size must be an int >= 1 .* got True"),
     ((1, 4, 4, 2), {"kernel_size": (2, 2, 2)}, r"kernel_size must be .* got \(2, 2, 2\)"),
     ((1, 4, 4, 2), {"kernel_size": 2, "stride": 0}, r"stride must be an int >= 1 .* got 0"),
     ((1, 4, 4, 2), {"kernel_size": 2, "padding": -1}, r"padding must be an int >= 0 .* got -1")],
)
def test_maxpool_refuses_what_pytorch_refuses(
    shape: tuple[int, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^MaxPool2d: {message}"):
        Tensor(rand(shape, 0)).maxpool2d(**kwargs)


def test_the_op_checks_its_arguments_when_applied_directly() -> None:
    """A backend's op refuses through the same checks when called without the Tensor method, and
    takes an int for a pair; graph() shows the window as the op kept it."""
    x = Tensor(rand((1, 4, 4, 2), 0))
    op = type(x.maxpool2d(2)._op)
    with pytest.raises(ValueError, match=r"^MaxPool2d: padding \(2, 2\) is more than half"):
        op.apply(x, kernel_size=2, padding=2)
    out = op.apply(x, kernel_size=2)
    assert out.shape == (1, 2, 2, 2)
    assert "kernel_size=(2, 2) stride=(2, 2) padding=(0, 0)" in str(out.graph())
