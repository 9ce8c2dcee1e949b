"""`topgrad.cat` and `topgrad.stack` (the Concat op, beyond the contract's table) against
torch.cat and torch.stack, forward and backward, on the backend under test."""

from __future__ import annotations

from typing import Any

import pytest
import topgrad
import torch
from helpers import Sizes, check_against_torch, layouts, rand, to_numpy, torch_conv2d
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from topgrad import Tensor

seeds = st.integers(0, 2**16)


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def check_cat(shapes: list[tuple[int, ...]], axis: int, seed: int = 0,
              constants: tuple[int, ...] = (), layout: Any = "contiguous") -> None:
    check_against_torch(lambda *xs: topgrad.cat(list(xs), axis=axis), lambda *ts: torch.cat(ts, dim=axis),
                        [rand(s, seed + i) for i, s in enumerate(shapes)], seed=seed, constants=constants,
                        layout=layout)


@pytest.mark.parametrize(
    ("shapes", "axis"),
    [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 5)], 1), ([(2, 3), (2, 5)], -1), ([(3,), (0,), (2,)], 0),
     ([(2, 1, 4), (2, 3, 4), (2, 2, 4)], 1), ([(2, 3)], 0), ([(2, 3, 4), (2, 3, 4)], -3),
     # a DenseNet-style join of NHWC feature maps along channels
     ([(2, 5, 5, 3), (2, 5, 5, 4)], 3)],
)
def test_cat_fixed(shapes: list[tuple[int, ...]], axis: int) -> None:
    check_cat(shapes, axis)


@given(data=st.data(), seed=seeds)
def test_cat_drawn(data: st.DataObject, seed: int, sizes: Sizes) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=sizes.batch),
                      label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    lengths = data.draw(st.lists(st.integers(0, sizes.batch), min_size=1, max_size=4), label="lengths")
    shapes = [(*shape[:axis % len(shape)], n, *shape[axis % len(shape) + 1:]) for n in lengths]
    # some inputs constant (not all: then PyTorch has no backward to run), each in a drawn layout
    constants = tuple(data.draw(st.sets(st.integers(0, len(shapes) - 1), max_size=len(shapes) - 1),
                                label="constants"))
    check_cat(shapes, axis, seed, constants, data.draw(layouts(len(shapes)), label="layouts"))
    # topgrad.stack of len(lengths) tensors of `shape`, along an axis of the result (one more)
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)), label="stack axis")
    check_against_torch(lambda *xs: topgrad.stack(list(xs), axis=axis), lambda *ts: torch.stack(ts, dim=axis),
                        [rand(shape, seed + i) for i in range(len(lengths))], seed=seed)


def test_cat_of_a_constant_gives_it_no_gradient() -> None:
    check_cat([(2, 3), (2, 4)], 1, constants=(1,))


def test_cat_of_one_tensor_twice_adds_its_gradients() -> None:
    check_against_torch(lambda x: topgrad.cat([x, x * 2.0, x], axis=0), lambda t: torch.cat([t, t * 2.0, t]),
                        [rand((2, 3), 6)])


@pytest.mark.parametrize(("shape", "count", "axis"), [((2, 3), 3, 0), ((2, 3), 2, 1), ((2, 3), 2, -1),
                                                      ((4,), 1, 0), ((), 3, 0), ((2, 0), 2, 1)])
def test_stack(shape: tuple[int, ...], count: int, axis: int) -> None:
    check_against_torch(lambda *xs: topgrad.stack(list(xs), axis=axis), lambda *ts: torch.stack(ts, dim=axis),
                        [rand(shape, i) for i in range(count)])


def test_a_densenet_block_as_in_pytorch() -> None:
    """y = [x, relu(conv(x))] joined along channels, then a 1x1 convolution over both."""

    def top(x: Tensor, w: Tensor, w2: Tensor) -> Tensor:
        return topgrad.cat([x, x.conv2d(w, padding=1).relu()], axis=-1).conv2d(w2)

    def ref(x: torch.Tensor, w: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return torch_conv2d(torch.cat([x, torch.relu(torch_conv2d(x, w, padding=1))], dim=-1), w2)

    check_against_torch(top, ref, [rand((2, 5, 5, 3), 1), rand((3, 3, 3, 4), 2), rand((1, 1, 7, 2), 3)])


def test_concat_saves_no_array() -> None:
    y = topgrad.cat([Tensor(rand((2, 3), 0)), Tensor(rand((2, 3), 1))], axis=1)
    assert y._op is not None and type(y._op).__name__ == "Concat" and y._op.saved == ()
    y.backward()
    assert to_numpy(y._op.parents[0].grad).shape == (2, 3)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [(lambda a: topgrad.cat([a, Tensor(rand((3, 3), 1))], axis=1), ValueError,
      r"cat: tensor 1 has shape \(3, 3\) and tensor 0 \(2, 3\); joined along axis 1, they must match"),
     (lambda a: topgrad.cat([a, Tensor(rand((2,), 1))]), ValueError, r"tensor 1 has shape \(2,\)"),
     (lambda a: topgrad.cat([]), ValueError, "cat: needs at least one tensor"),
     (lambda a: topgrad.stack([]), ValueError, "stack: needs at least one tensor"),
     (lambda a: topgrad.cat(a), TypeError, "cat: takes a list or tuple of Tensors, got Tensor .*in a list"),
     (lambda a: topgrad.cat([a, rand((2, 3), 1)]), TypeError, "cat: tensor 1 must be a Tensor, got numpy.nd"),
     (lambda a: topgrad.cat([Tensor(1.0), Tensor(2.0)]), ValueError, "cat: tensor 0 is 0-d.*topgrad.stack"),
     (lambda a: topgrad.cat([a, Tensor(2.0)]), ValueError, r"cat: tensor 1 is 0-d.*x\.reshape\(1\)"),
     (lambda a: topgrad.cat([a, a], axis=2), ValueError, "cat: axis 2 is out of range for tensors of 2 axes"),
     (lambda a: topgrad.cat([a, a], axis=1.0), TypeError, "cat: axis must be an int, got 1.0"),
     (lambda a: topgrad.stack([a, a], axis=3), ValueError, "stack: axis 3 is out of range for tensors of 3"),
     (lambda a: topgrad.stack([a, a.T]), ValueError,
      r"stack: tensor 1 has shape \(3, 2\) and tensor 0 \(2, 3\); stack needs one shape")],
)
def test_what_joining_refuses(call: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(Tensor(rand((2, 3), 0)))


def test_the_op_applied_directly_checks_shapes_too() -> None:
    """A backend's Concat refuses what topgrad.cat refuses, in the same words (the kit applies it so)."""
    concat = topgrad.get_backend().ops.Concat
    with pytest.raises(ValueError, match=r"Concat: tensor 1 has shape \(3, 3\) and tensor 0 \(2, 3\)"):
        concat.apply(Tensor(rand((2, 3), 0)), Tensor(rand((3, 3), 1)), axis=1)
