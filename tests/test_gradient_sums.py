"""Gradients that reach one tensor from several consumers, summed by backward (`add_gradients`).

The numpy backend writes such a sum into the first gradient's array where nothing but backward
can reach it (a residual shortcut's gradient in deepconv: no new 6.4 MB array). These tests hold
it to PyTorch where the first gradient is shared (Add hands one array to both inputs), a view, or
kept by someone else, and check that the in-place path is taken where it may be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import check_against_torch, rand
from topgrad import Tensor

GRAPHS: dict[str, Callable[[Any, Any, Any], Any]] = {
    # a's gradients: the array Add also hands to b, and a product's; in both orders (backward's
    # order follows the graph's, so either may be the first to reach a and be summed into)
    "add, then a reused": lambda a, b, c: ((a + b) * c).sum() + (a * c * 2.0).sum(),
    "a used, then add": lambda a, b, c: (a * c * 2.0).sum() + ((a + b) * c).sum(),
    # a + a: one array reaches a twice at once, then a third gradient
    "a + a, then a reused": lambda a, b, c: ((a + a) * b).sum() + (a * c).sum(),
    "a used, then a + a": lambda a, b, c: (a * c).sum() + ((a + a) * b).sum(),
    # a reshaped view of a consumer's gradient
    "reshaped, then a reused": lambda a, b, c: (a.reshape(-1) * b.reshape(-1)).sum() + (a * c).sum(),
    "a used, then reshaped": lambda a, b, c: (a * c).sum() + (a.reshape(-1) * b.reshape(-1)).sum(),
    # a residual block, relu(a * b) + a, whose output is used twice as well
    "residual": lambda a, b, c: (((a * b).relu() + a) * c + ((a * b).relu() + a)).sum(),
    # three consumers: the second sum goes into the first sum's array
    "three uses": lambda a, b, c: (a * b + a * c + (a + b) * c).sum(),
    "three uses, reversed": lambda a, b, c: ((a + b) * c + a * c + a * b).sum(),
}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_a_tensor_used_several_times_gets_the_sum_of_its_gradients(name: str) -> None:
    """Every leaf's gradient against PyTorch at 1e-4, where the gradients that reach one tensor
    are shared with another tensor, views, or arrive in threes."""
    graph = GRAPHS[name]
    check_against_torch(graph, graph, [rand((3, 4), 1), rand((3, 4), 2), rand((3, 4), 3)])


def _nb() -> Any:
    backend = topgrad.get_backend()
    if backend.name != "numpy":
        pytest.skip("the numpy backend's in-place sums")
    return backend


def test_a_sum_goes_into_an_array_only_backward_holds() -> None:
    """add_gradients writes into `total` where backward hands over its only reference, and where
    `total` is a view of an array only it refers to (an op's reshaped gradient)."""
    backend = _nb()
    part = np.full((2, 3), 2.0, np.float32)
    for make in (lambda: np.ones((2, 3), np.float32), lambda: np.ones(6, np.float32).reshape(2, 3)):
        grads = {0: make()}
        address = grads[0].ctypes.data
        total = backend.add_gradients(grads.pop(0), part)
        assert total.ctypes.data == address, "the sum went into a new array"
        np.testing.assert_array_equal(total, np.full((2, 3), 3.0, np.float32))


HOLDERS: dict[str, Callable[[np.ndarray], Any]] = {
    "a variable": lambda a: a,
    "a second gradient entry": lambda a: {1: a},
    "a view": lambda a: a[:1],
    "a Tensor": lambda a: Tensor(a, requires_grad=False),
}


@pytest.mark.parametrize("holder", list(HOLDERS))
def test_a_sum_leaves_an_array_someone_else_holds_as_it_was(holder: str) -> None:
    """Where another object refers to `total` (or to the array owning its memory), the sum is a
    new array and the held values stay."""
    backend = _nb()
    grads = {0: np.ones((2, 3), np.float32)}
    kept = HOLDERS[holder](grads[0])
    total = backend.add_gradients(grads.pop(0), np.full((2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(total, np.full((2, 3), 3.0, np.float32))
    seen = kept.data if isinstance(kept, Tensor) else kept[1] if isinstance(kept, dict) else kept
    np.testing.assert_array_equal(seen, np.ones(seen.shape, np.float32))


def test_a_sum_leaves_the_owner_of_a_view_that_is_held_as_it_was() -> None:
    backend = _nb()
    owner = np.ones(6, np.float32)
    grads = {0: owner.reshape(2, 3)}
    backend.add_gradients(grads.pop(0), np.full((2, 3), 2.0, np.float32))
    np.testing.assert_array_equal(owner, np.ones(6, np.float32))


@pytest.mark.parametrize("case", ["read-only", "float64 part", "broadcast part"])
def test_a_sum_that_cannot_go_in_place_is_a_new_array(case: str) -> None:
    """A read-only array, another dtype or shape: `add`'s new array, `total` unchanged."""
    backend = _nb()
    total, part = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    if case == "read-only":
        total.flags.writeable = False
    elif case == "float64 part":
        part = part.astype(np.float64)
    else:
        part = np.full(3, 2.0, np.float32)
    grads = {0: total}
    address = total.ctypes.data
    del total
    out = backend.add_gradients(grads.pop(0), part)
    assert out.ctypes.data != address
    np.testing.assert_array_equal(out, np.full((2, 3), 3.0, np.float32))
    assert out.dtype == np.float32


def test_backward_sums_a_residual_shortcut_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a residual graph every sum of two gradients goes in place: `add`, the fallback, is never
    called. (The reference counts `add_gradients` relies on are measured at import; this fails if
    a Python's call rules left them out of step, rather than the sums quietly making arrays.)"""
    backend = _nb()
    calls: list[tuple[int, ...]] = []
    real_add = backend.add

    def counted(a: Any, b: Any) -> Any:
        calls.append(np.shape(a))
        return real_add(a, b)

    x, w = Tensor(rand((4, 6), 1)), Tensor(rand((6, 6), 2))
    h = (x @ w).relu() + x  # x: the shortcut and the block's input
    y = (h @ w).relu() + h  # h too
    monkeypatch.setattr(backend, "add", counted)
    y.sum().backward()
    assert calls == []
    xt = torch.tensor(rand((4, 6), 1), requires_grad=True)
    wt = torch.tensor(rand((6, 6), 2), requires_grad=True)
    ht = (xt @ wt).relu() + xt
    ((ht @ wt).relu() + ht).sum().backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w.grad, wt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_without_reference_counts_every_sum_is_a_new_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an interpreter without sys.getrefcount (PyPy) the calibration is 0: no sum in place."""
    from topgrad_numpy import unshared

    backend = _nb()
    monkeypatch.setattr(unshared, "ARGUMENT_REFS", 0)
    grads = {0: np.ones((2, 3), np.float32)}
    address = grads[0].ctypes.data
    total = backend.add_gradients(grads.pop(0), np.full((2, 3), 2.0, np.float32))
    assert total.ctypes.data != address
    np.testing.assert_array_equal(total, np.full((2, 3), 3.0, np.float32))
