"""ReLU's dL/dx written over its saved output, where nothing but the op can reach that array.

The numpy backend does this in a training step (the output's Tensor is gone and the next op has
released its copy by the time ReLU's backward runs). These tests hold ReLU to PyTorch where the
output is kept, viewed, used twice or reached by hand, and check that the saved output is only
written where nothing else sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import check_against_torch, rand
from topgrad import Tensor

SHAPES = [(3, 4), (64, 128)]  # a small output, and one the fast forward makes as a reshaped view

GRAPHS: dict[str, Callable[[Any, Any], Any]] = {
    "relu between products": lambda a, b: ((a * b).relu() * b).sum(),
    "relu output used twice": lambda a, b: (lambda h: (h * b + h * h).sum())((a * b).relu()),
    "relu of a leaf": lambda a, b: (a.relu() * b).sum(),
    "relu output reshaped": lambda a, b: ((a * b).relu().reshape(-1) * b.reshape(-1)).sum(),
    "two relus in a row": lambda a, b: ((a * b).relu().relu() * b).sum(),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_relu_gradients_match_pytorch_when_written_in_place(name: str, shape: tuple[int, ...]) -> None:
    """Every leaf's gradient against PyTorch at 1e-4, whether ReLU writes over its output or not."""
    graph = GRAPHS[name]
    check_against_torch(graph, graph, [rand(shape, 1), rand(shape, 2)])


def _nb() -> None:
    if topgrad.get_backend().name != "numpy":
        pytest.skip("the numpy backend's in-place ReLU backward")


def _relu_and_loss(shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Any]:
    """A leaf x, loss = sum(relu(x) * 3), and ReLU's op (found from the loss, holding nothing)."""
    x = Tensor(rand(shape, 1))
    loss = (x.relu() * 3.0).sum()
    relu_op = loss.op.parents[0].parents[0]
    assert type(relu_op).__name__ == "ReLU"
    return x, loss, relu_op


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_writes_over_an_output_nothing_else_holds(shape: tuple[int, ...]) -> None:
    """In a plain chain the gradient of ReLU's input lands in the saved output's memory. (The
    reference counts this relies on are measured at import; this fails if a Python's call rules
    left them out of step, rather than ReLU quietly making new arrays.)"""
    _nb()
    x, loss, relu_op = _relu_and_loss(shape)
    address = relu_op.saved[0].ctypes.data
    loss.backward()
    assert x.grad.ctypes.data == address
    np.testing.assert_array_equal(x.grad, np.where(x.data > 0, 3.0, 0.0).astype(np.float32))


HOLDERS: dict[str, Callable[[Tensor], Any]] = {
    "its Tensor": lambda y: y,
    "a view of it": lambda y: y.data.reshape(-1)[1:],
    "the output array": lambda y: y.data,
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("holder", list(HOLDERS))
def test_relu_leaves_an_output_someone_holds_as_it_was(holder: str, shape: tuple[int, ...]) -> None:
    """A kept output Tensor, its array or a view of it: backward writes a new array, and what
    is held keeps the forward's values."""
    _nb()
    x = Tensor(rand(shape, 1))
    y = x.relu()
    kept = HOLDERS[holder](y)
    expected = HOLDERS[holder](Tensor(np.maximum(x.data, 0.0), requires_grad=False))
    loss = (y * 3.0).sum()
    del y
    loss.backward()
    read = lambda held: held.data if isinstance(held, Tensor) else held  # noqa: E731
    np.testing.assert_array_equal(read(kept), read(expected))
    np.testing.assert_array_equal(x.grad, np.where(x.data > 0, 3.0, 0.0).astype(np.float32))


def test_relu_backward_by_hand_leaves_its_saved_output() -> None:
    """Outside the engine (a learner calling backward) the saved arrays are not scratch: the
    output keeps its values and a second call gives the same gradient."""
    _nb()
    from topgrad_numpy.ops.activation import ReLU

    op = ReLU()
    x = rand((64, 128), 1)
    out = op.forward(x)
    del out
    (saved,) = op.saved
    before = saved.copy()
    del saved
    g = rand((64, 128), 2)
    first = op.backward(g)[0]
    np.testing.assert_array_equal(op.saved[0], before)
    np.testing.assert_array_equal(op.backward(g)[0], first)


def test_without_reference_counts_relu_makes_a_new_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an interpreter without sys.getrefcount (PyPy) the calibration is 0: never in place."""
    _nb()
    from topgrad_numpy import unshared

    monkeypatch.setattr(unshared, "SAVED_REFS", 0)
    x, loss, relu_op = _relu_and_loss((64, 128))
    address = relu_op.saved[0].ctypes.data
    loss.backward()
    assert x.grad.ctypes.data != address
    np.testing.assert_array_equal(x.grad, np.where(x.data > 0, 3.0, 0.0).astype(np.float32))
