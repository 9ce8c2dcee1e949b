"""A `.grad` that is a view of a bigger array is written in place, as PyTorch writes it, on every backend.

PyTorch's zero_grad(set_to_none=False) zeroes `.grad` in place and AccumulateGrad adds into it
(`grad += new`) whatever its memory layout: with `w.grad = big[:, ::2]` both write into `big`.
The triton backend wrote in place only into a dense float32 `.grad` and made a new array for any
other layout, so `big` kept its old values there (numpy wrote into it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import assert_close, rand
from topgrad import Tensor
from topgrad.optim import SGD

TOL = 1e-6


def _permute(a: Any, *axes: int) -> Any:
    return a.permute(*axes) if isinstance(a, torch.Tensor) else a.transpose(axes)


# name -> (shape of `big`, the view of it that becomes `.grad`), for numpy arrays and torch tensors alike
VIEWS: dict[str, tuple[tuple[int, ...], Callable[[Any], Any]]] = {
    "strided": ((4, 6), lambda big: big[:, ::2]),
    "transposed": ((3, 4), lambda big: _permute(big, 1, 0)),
    "strided, transposed, offset": ((5, 9), lambda big: _permute(big[1::2, 2::3], 1, 0)),
    "3-d permuted": ((2, 3, 4), lambda big: _permute(big, 2, 0, 1)),
    "3-d every other row": ((3, 4, 2), lambda big: big[:, 1::2]),
    "rows with an offset (dense)": ((5, 3), lambda big: big[1:4]),
    "0-d": ((3, 4), lambda big: big[1, 2, ...]),
}


@pytest.mark.parametrize("name", list(VIEWS))
@pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract")
def test_a_grad_viewing_a_bigger_array_is_zeroed_and_accumulated_into_it_as_torch(name: str) -> None:
    shape, view = VIEWS[name]
    big_values = rand(shape, 1)
    big, big_t = topgrad.get_backend().asarray(big_values), torch.from_numpy(big_values.copy())
    g, g_t = view(big), view(big_t)
    init, x_np = rand(g_t.shape, 2), rand(g_t.shape, 3)
    w, tw = Tensor(init), torch.tensor(init, requires_grad=True)
    x, tx = Tensor(x_np), torch.from_numpy(x_np)
    w.grad, tw.grad = g, g_t
    opt, ref = SGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)

    opt.zero_grad(set_to_none=False)
    ref.zero_grad(set_to_none=False)
    assert w.grad is g and tw.grad is g_t
    assert_close(big, big_t, f"{name}: the viewed array after zero_grad(set_to_none=False)", TOL, TOL)

    (tw * tx).sum().backward()
    (tw * tw).sum().backward()
    (w * x).sum().backward()
    (w * w).sum().backward()
    assert w.grad is g and tw.grad is g_t
    assert_close(w.grad, tw.grad, f"{name}: .grad after two backwards", TOL, TOL)
    assert_close(big, big_t, f"{name}: the viewed array after two backwards", TOL, TOL)

    opt.step()
    ref.step()
    assert_close(w, tw, f"{name}: the parameter after a step", TOL, TOL)
    assert_close(big, big_t, f"{name}: the viewed array after a step", TOL, TOL)


def test_a_held_zero_dim_grad_sees_the_zeros_and_the_sum_as_torch() -> None:
    """A 0-d `.grad` array of its own (not a view), held as `g = w.grad`."""
    w, tw = Tensor(np.float32(1.5)), torch.tensor(1.5, requires_grad=True)
    (w * 3.0).backward()
    (tw * 3.0).backward()
    g, g_t = w.grad, tw.grad
    SGD([w], lr=0.1).zero_grad(set_to_none=False)
    torch.optim.SGD([tw], lr=0.1).zero_grad(set_to_none=False)
    assert_close(g, g_t, "a held 0-d .grad after zero_grad(set_to_none=False)", TOL, TOL)
    (w * w).backward()
    (tw * tw).backward()
    assert w.grad is g and tw.grad is g_t
    assert_close(g, g_t, "a held 0-d .grad after a backward", TOL, TOL)

