"""The autograd engine: graph shapes (shared parents, diamonds, residuals), depth, accumulation,
no_grad, the release of saved arrays, and the forms `backward(grad)` accepts.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import subprocess
import sys
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import (
    Sizes,
    assert_close,
    check_against_torch,
    float64_tensor,
    rand,
    to_numpy,
    topgrad_warns_nothing,
    torch_attention,
)
from topgrad import Op, Tensor
from topgrad.optim import SGD


@pytest.fixture(scope="module")
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def _graph_ops(root: Tensor) -> list[Op]:
    """Every op reachable from `root` (each once)."""
    ops: dict[int, Op] = {}
    stack = [root._op] if root._op is not None else []
    while stack:
        op = stack.pop()
        if id(op) not in ops:
            ops[id(op)] = op
            stack.extend(p for p in op.parents if isinstance(p, Op))
    return list(ops.values())


# ---- Tensor basics ---------------------------------------------------------------------------
def test_tensor_from_nested_lists_and_numpy() -> None:
    t = Tensor([[1, 2, 3], [4, 5, 6]])
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6
    assert str(np.dtype(t.numpy().dtype)) == "float32"
    assert_close(t, np.arange(1, 7, dtype=np.float32).reshape(2, 3), "data", rtol=0, atol=0)
    assert t.grad is None and t._op is None
    assert Tensor(np.float64(2.5)).shape == ()


@pytest.mark.parametrize("data", [np.array([1 + 2j, 3.0]), 2j, torch.tensor([1j, 2.0])])
def test_complex_values_are_refused_not_cut_to_their_real_part(data: Any) -> None:
    """numpy would drop the imaginary part with only a ComplexWarning; every backend refuses."""
    with pytest.raises(TypeError, match=r"complex values are not supported.*a\.real"):
        Tensor(data)


@pytest.mark.parametrize("dtype", ["float32", "f4", "single", np.float32, np.dtype("float32"), torch.float32])
def test_every_spelling_of_float32_is_taken(dtype: Any) -> None:
    """numpy's spellings and torch's, on every backend (triton took only two, numpy no torch one)."""
    t = Tensor([1.5, 2.0], dtype=dtype)
    assert str(np.dtype(t.numpy().dtype)) == "float32" and t.numpy().tolist() == [1.5, 2.0]


def test_numpy_returns_a_copy() -> None:
    t = Tensor([1.0, 2.0])
    a = t.numpy()
    a[0] = 100.0
    assert t.numpy()[0] == 1.0


def test_a_trainable_tensor_never_shares_the_callers_array() -> None:
    """Tensor(a) copies where it would share a's memory (as torch.tensor does), so an
    optimizer's in-place step changes neither the caller's array nor another Tensor's."""
    a = rand((3,), 70)
    before = a.copy()
    t = Tensor(a)
    u = Tensor(t)
    (t * 2.0).sum().backward()
    topgrad.optim.SGD([t], lr=0.1).step()
    assert_close(t, before - 0.2, "the trained tensor")
    np.testing.assert_array_equal(a, before)
    assert_close(u, before, "a Tensor made from the trained one before its step", rtol=0, atol=0)


def test_a_trainable_tensor_of_a_torch_tensor_does_not_train_it(backend_name: str) -> None:
    """numpy wraps a torch tensor's memory without copying: a Topgrad step must not change the
    PyTorch model it was read from (the side-by-side comparisons would compare one model twice);
    a constant still shares (no copy of a dataset)."""
    layer = torch.nn.Linear(3, 2, bias=False)
    before = layer.weight.detach().clone()
    w = Tensor(layer.weight.detach())
    (w * w).sum().backward()
    topgrad.optim.SGD([w], lr=0.1).step()
    assert torch.equal(layer.weight.detach(), before)
    if backend_name == "numpy":
        batch = torch.ones(4)
        assert np.shares_memory(Tensor(batch, requires_grad=False).data, batch.numpy())


def test_constructors() -> None:
    assert_close(Tensor.zeros(2, 3), np.zeros((2, 3), np.float32), "zeros", rtol=0, atol=0)
    assert_close(Tensor.ones((4,)), np.ones(4, np.float32), "ones", rtol=0, atol=0)
    a, b = Tensor.randn(3, 4, seed=7).numpy(), Tensor.randn(3, 4, seed=7).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 4) and not np.array_equal(a, Tensor.randn(3, 4, seed=8).numpy())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Tensor.zeros(2.5, 2), "whole number >= 0"),
        (lambda: Tensor.ones(-1, 2), "whole number >= 0"),
        (lambda: Tensor.randn("3", seed=0), "whole number >= 0"),
        (lambda: Tensor.zeros(2, 3).reshape(1.5, 4), "whole number"),
        (lambda: Tensor.He(0, 3), "fan-in"),
        (lambda: Tensor.He(), "fan-in"),
    ],
)
def test_bad_shapes_are_value_errors_not_truncations(make: Callable[[], Tensor], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_ops_record_their_op_and_parents() -> None:
    """The graph is made of ops: a parent is the op that made it, or the leaf Tensor itself."""
    x = Tensor([1.0, -2.0])
    h = x * 2.0
    y = h.relu()
    assert y._op is not None and y._op.parents[0] is h._op
    assert h._op is not None and h._op.parents == (x, 2.0)
    assert y._op.output() is y and tuple(y._op._out_shape) == (2,)
    assert y.sum().item() == 2.0


def test_the_graph_does_not_keep_intermediate_outputs_alive() -> None:
    """An output that no op saved is freed once the model's code drops it, as in PyTorch."""
    x = Tensor.randn(4, 3, seed=0)
    h = x * 2.0  # Mul saves its operands, not its output
    ref = weakref.ref(h)
    loss = (h + 1.0).sum()  # Add saves nothing
    del h
    assert ref() is None, "the graph kept an intermediate output alive"
    loss.backward()
    assert_close(x.grad, np.full((4, 3), 2.0, np.float32), "x.grad", rtol=0, atol=0)


# ---- graph shapes --------------------------------------------------------------------------
def test_shared_parent_in_mul() -> None:
    """x * x: both positional arguments are one tensor; its gradient is 2x."""
    check_against_torch(lambda x: x * x, lambda x: x * x, [rand((3, 4), 0)])


def test_shared_parent_in_add() -> None:
    check_against_torch(lambda x: x + x, lambda x: x + x, [rand((3, 4), 1)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Triton's interpreter computes in numpy; not Topgrad
def test_infinite_gradients_of_a_shared_parent_sum_to_nan_unwarned() -> None:
    """x feeds two products whose gradients reach it as +inf and -inf: their sum is NaN, as in
    PyTorch, and numpy warns of nothing while the engine adds them."""
    a_np = np.array([np.inf, 1.0, 2.0], np.float32)
    x, a = Tensor(np.ones(3, np.float32)), Tensor(a_np)
    with topgrad_warns_nothing():
        (x * a + x * -a).sum().backward()
    xt = torch.ones(3, requires_grad=True)
    at = torch.from_numpy(a_np)
    (xt * at + xt * -at).sum().backward()
    np.testing.assert_array_equal(np.asarray(topgrad.get_backend().to_numpy(x.grad)), xt.grad.numpy())


def test_diamond() -> None:
    """x feeds two branches that meet again; both contributions reach x."""

    def graph(x: Any, w: Any) -> Any:
        a = (x @ w).relu()
        b = x * 3.0 - 1.0
        return (a * b).sum(axis=-1)

    check_against_torch(graph, graph, [rand((4, 5), 2), rand((5, 5), 3)])


def test_residual_block() -> None:
    """y = relu(x w1 + b1) w2 + x: the skip path and the block path both reach x."""

    def top(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
        return x.linear(w1, b1).relu() @ w2 + x

    def ref(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return (x @ w1 + b1).relu() @ w2 + x

    check_against_torch(top, ref, [rand((4, 6), 4), rand((6, 8), 5), rand((8,), 6), rand((8, 6), 7)])


def test_reused_intermediate_many_times() -> None:
    """One intermediate consumed by several later ops, including itself."""

    def graph(x: Any) -> Any:
        h = x * 2.0 + 1.0
        return (h * h + h * 3.0 - h).mean()

    check_against_torch(graph, graph, [rand((5,), 8)])


def test_qkv_from_one_input_through_attention(sizes: Sizes) -> None:
    """q, k and v are projections of one x: three paths through attention sum into x's gradient."""
    b, t, d = min(2, sizes.batch), min(5, sizes.tokens), min(8, sizes.dim)

    def top(x: Tensor, wq: Tensor, wk: Tensor, wv: Tensor) -> Tensor:
        return topgrad.attention(x @ wq, x @ wk, x @ wv, causal=True)

    def ref(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor) -> torch.Tensor:
        return torch_attention(x @ wq, x @ wk, x @ wv, causal=True)

    weights = [rand((d, d), 10 + i, scale=d**-0.5) for i in range(3)]
    check_against_torch(top, ref, [rand((b, t, d), 9), *weights])


def test_self_attention_with_x_as_q_k_and_v() -> None:
    """attention(x, x, x): one tensor in all three positions."""
    check_against_torch(
        lambda x: topgrad.attention(x, x, x), lambda x: torch_attention(x, x, x), [rand((2, 4, 3), 13)]
    )


def test_deep_chain_has_no_recursion_limit() -> None:
    """A 10,000-op chain (ten times Python's default recursion limit) runs backward."""
    depth = 10_000
    x = Tensor(rand((3,), 14))
    y = x
    for i in range(depth):
        y = y.reshape(1, 3) if i % 2 == 0 else y.reshape(3)
    y.backward([1.0, 2.0, 3.0])
    assert_close(x.grad, np.array([1.0, 2.0, 3.0], np.float32), "gradient through 10,000 reshapes")


def test_deep_arithmetic_chain(interpreted: bool) -> None:
    """A long chain of Add ops: the gradient passes through every node unchanged."""
    depth = 1_100 if interpreted else 10_000  # interpreted: just past the recursion limit
    x = Tensor(rand((2,), 15))
    y = x
    for _ in range(depth):
        y = y + 1.0
    # float32 drops a bit of x's fraction each time the sum crosses a power of two (its spacing is
    # ~1e-3 near 1e4): the forward's slack is that round-off; the gradient, the point, is exact
    assert_close(y, x.numpy() + depth, "forward of the chain", rtol=1e-5, atol=1e-2)
    y.backward()
    assert_close(x.grad, np.ones(2, np.float32), "gradient of the chain")


# ---- accumulation and reset -------------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls() -> None:
    x_np = rand((3,), 16)
    x = Tensor(x_np)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    assert_close(x.grad, 2 * x_np + 3.0, "accumulated gradient")


def test_gradients_accumulate_into_the_grad_array_as_in_pytorch(backend_name: str) -> None:
    """PyTorch adds a new gradient into the `.grad` array itself: a reference to it (`g = w.grad`,
    a buffer set with `w.grad = buf`) sees the sum. Topgrad made a new array each time, so such a
    reference kept the first gradient. Also for a leaf seeded directly (`w.backward(g)`)."""
    x_np = rand((3,), 16)
    w, wt = Tensor(x_np), torch.tensor(x_np, requires_grad=True)
    (w * w).sum().backward()
    (wt * wt).sum().backward()
    g, gt = w.grad, wt.grad
    (w * 3.0).sum().backward()
    (wt * 3.0).sum().backward()
    assert w.grad is g and wt.grad is gt
    assert_close(g, gt.numpy(), "a held .grad after a second backward")
    buffer = Tensor(np.ones(3, np.float32)).data
    w.grad = buffer
    (w * 2.0).sum().backward()
    w.backward(Tensor(np.full(3, 0.5, np.float32)).data)  # the leaf's own branch of backward
    assert w.grad is buffer
    assert_close(buffer, np.full(3, 3.5, np.float32), "a buffer set as .grad")
    if backend_name == "numpy":  # an array that cannot be written keeps its values: a new sum
        frozen = np.ones(3, np.float32)
        frozen.flags.writeable = False
        w.grad = frozen
        (w * 2.0).sum().backward()
        assert_close(w.grad, np.full(3, 3.0, np.float32), "a read-only .grad")
        np.testing.assert_array_equal(frozen, np.ones(3, np.float32))


def test_an_op_that_saved_a_grad_refuses_backward_once_a_backward_added_into_it() -> None:
    """A constant shares the array it is made from, `.grad` too; since backward adds into .grad in
    place, a graph that saved such a constant would compute with the new sum, silently ([5, 5, 5]
    for [2, 2, 2]). As PyTorch's version counter does, its backward is refused, in a later
    backward and within the same one; a copy of the gradient, or a new forward, goes on."""
    w, x = Tensor(np.ones(3, np.float32)), Tensor(np.full(3, 2.0, np.float32))
    (w * w).sum().backward()
    shared = Tensor(w.grad, requires_grad=False)
    y = (x * shared).sum()
    (w * 3.0).sum().backward()
    says = r"^Mul: an array it saved is the memory of the .grad of a leaf of shape \(3,\), which was written"
    with pytest.raises(RuntimeError, match=says):
        y.backward()
    with pytest.raises(RuntimeError, match=says):  # the add into w.grad comes first in this walk
        ((x * Tensor(w.grad, requires_grad=False)).sum() + (w * 5.0).sum() * 1.0).backward()
    x.grad = None
    copied = Tensor(topgrad.get_backend().copy(w.grad), requires_grad=False)
    values = copied.numpy()
    y = (x * copied).sum()
    (w * 3.0).sum().backward()
    y.backward()
    assert_close(x.grad, values, "from a copy of the gradient")


def test_the_check_runs_after_a_step_that_moved_the_clock_and_an_add_in_the_same_walk() -> None:
    """Another leaf's step between forward and backward makes the walk check its ops against the
    clock's writes from its first op that saved arrays; an add into w.grad later in that walk must
    still reach the check of an op that saved w.grad's memory."""
    w, z = Tensor(np.ones(3, np.float32)), Tensor(np.ones(4, np.float32))
    x = Tensor(np.full(3, 2.0, np.float32))
    (w.sum() + z.sum()).backward()
    loss = ((x * Tensor(w.grad, requires_grad=False)).sum() * 1.0).exp() + w.exp().sum()
    SGD([z], lr=0.1).step()
    with pytest.raises(RuntimeError, match=r"^Mul: an array it saved is the memory of the .grad"):
        loss.backward()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_backward_checks_each_op_at_the_cost_of_its_saved_arrays(monkeypatch, set_to_none: bool) -> None:
    """The overwrite check looked at every clocked parameter for every op once the clock moved (an
    add into a .grad, a step): zero_grad(set_to_none=False) and gradient accumulation made backward
    cost ops x parameters (95 against 15 ms at 200 layers). Its memory lookups now grow with the model."""
    backend = topgrad.get_backend()
    lookups = []
    memory_key = backend.memory_key

    def counted(a: Any) -> Any:
        lookups.append(1)
        return memory_key(a)

    def second_backward_lookups(layers: int) -> int:
        ws = [Tensor(rand((4, 4), i) * 0.5) for i in range(layers)]
        opt = SGD(ws, lr=0.01)
        for _ in range(2):
            h = Tensor(rand((2, 4), 99), requires_grad=False)
            for w in ws:
                h = (h @ w).tanh()
            lookups.clear()
            h.sum().backward()
            opt.step()
            opt.zero_grad(set_to_none=set_to_none)
        return len(lookups)

    monkeypatch.setattr(backend, "memory_key", counted)
    small, large = second_backward_lookups(10), second_backward_lookups(40)
    assert large <= 4.5 * small, (small, large)  # four times the layers: linear, not sixteen times


def test_grad_reset_with_none() -> None:
    x_np = rand((3,), 17)
    x = Tensor(x_np)
    (x * x).sum().backward()
    x.grad = None
    (x * 3.0).sum().backward()
    assert_close(x.grad, np.full(3, 3.0, np.float32), "gradient after reset")


def test_leaf_gradient_starts_as_none() -> None:
    x = Tensor(rand((2,), 18))
    y = x * 2.0
    assert x.grad is None
    with pytest.warns(UserWarning, match=r"not a leaf \(computed by Mul\)"):
        assert y.grad is None


def test_gradient_has_the_leaf_shape_and_is_a_backend_array() -> None:
    x = Tensor(rand((2, 3), 19))
    (x * 2.0).sum().backward()
    assert tuple(x.grad.shape) == (2, 3)
    assert not isinstance(x.grad, Tensor)


def test_backward_of_a_scalar_seeds_ones() -> None:
    x_np = rand((4,), 20)
    x = Tensor(x_np)
    (x * 5.0).sum().backward()
    assert_close(x.grad, np.full(4, 5.0, np.float32), "gradient with implicit seed")


def test_backward_on_a_leaf() -> None:
    x = Tensor(rand((2,), 21))
    x.backward([1.0, -1.0])
    assert_close(x.grad, np.array([1.0, -1.0], np.float32), "leaf seeded directly")


def test_unused_parameter_keeps_no_gradient() -> None:
    x, unused = Tensor(rand((2,), 22)), Tensor(rand((2,), 23))
    (x * 2.0).sum().backward()
    assert unused.grad is None


# ---- each leaf owns its gradient -------------------------------------------------------------
def test_leaves_summed_together_get_gradients_of_their_own() -> None:
    """Add hands one gradient array to both inputs; as in PyTorch, each leaf's `.grad` is its own,
    so an in-place edit of one (clipping, scaling) leaves the other alone."""
    a, b = Tensor(rand((2, 3), 60)), Tensor(rand((2, 3), 61))
    (a + b).sum().backward()
    a.grad[...] = 0.0
    assert_close(b.grad, np.ones((2, 3), np.float32), "b.grad after zeroing a.grad in place")


def test_a_view_of_another_leafs_gradient_is_copied() -> None:
    """a's gradient comes back through Reshape as a view of the array b keeps: not the same
    object, the same memory."""
    a, b = Tensor(rand((6,), 62)), Tensor(rand((2, 3), 63))
    ((a.reshape(2, 3) + b) * 2.0).sum().backward()
    b.grad[...] = 0.0
    assert_close(a.grad, np.full(6, 2.0, np.float32), "a.grad after zeroing b.grad in place")


class _ProductHandingBackItsInputs(Op):
    """x * w whose backward, for a seed of ones, returns the saved w and x themselves (right values)."""

    def forward(self, x: Any, w: Any) -> Any:
        self.save_for_backward(x, w)
        return topgrad.get_backend().mul(x, w)

    def backward(self, grad: Any) -> Any:
        x, w = self.saved
        return w, x


def test_a_gradient_sharing_another_leafs_values_is_copied() -> None:
    """x.grad was w's own array: x.grad[0] = 100 changed w, and an SGD step then moved w by the
    update of x's gradient it had just been given (2.93 for 2.9). PyTorch's leaves own theirs."""
    x, w = Tensor([1.0, 2.0]), Tensor([3.0, 4.0])
    _ProductHandingBackItsInputs.apply(x, w).backward(topgrad.get_backend().ones((2,)))
    x.grad[0] = 100.0
    assert w.numpy().tolist() == [3.0, 4.0] and w.grad.tolist() == [1.0, 2.0]
    topgrad.optim.SGD([x, w], lr=0.1).step()
    assert_close(w, np.array([2.9, 3.8], np.float32), "w after the step")


@pytest.mark.parametrize("through", ["an op", "a leaf"])
def test_the_callers_seed_is_not_kept_as_a_gradient(through: str) -> None:
    seed = topgrad.get_backend().asarray(rand((2, 3), 64))
    expected = topgrad.get_backend().to_numpy(seed)
    x = Tensor(rand((2, 3), 65))
    (x + 0.0 if through == "an op" else x).backward(seed)
    seed[...] = 0.0
    assert_close(x.grad, expected, f"gradient seeded through {through}, after the seed changed")


# ---- backward(grad) -----------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["tensor", "backend array", "list", "numpy"])
def test_backward_accepts_several_grad_forms(form: str) -> None:
    x_np, g_np = rand((2, 3), 24), rand((2, 3), 25)
    grad: Any = {
        "tensor": lambda: Tensor(g_np),
        "backend array": lambda: topgrad.get_backend().asarray(g_np),
        "list": lambda: g_np.tolist(),
        "numpy": lambda: g_np,
    }[form]()
    x = Tensor(x_np)
    (x * 2.0).backward(grad)
    assert_close(x.grad, 2.0 * g_np, f"gradient seeded with a {form}")


@pytest.mark.parametrize("bad_shape", [(3, 2), (6,), (2, 3, 1), ()])
def test_backward_with_a_grad_of_the_wrong_shape(bad_shape: tuple[int, ...]) -> None:
    y = Tensor(rand((2, 3), 26)) * 2.0
    with pytest.raises(ValueError, match=r"backward: grad of shape .* for a tensor of shape \(2, 3\)"):
        y.backward(np.ones(bad_shape, np.float32))


# ---- released graphs -------------------------------------------------------------------------
def test_saved_intermediates_are_released_after_backward() -> None:
    x, w, b = Tensor(rand((4, 5), 27)), Tensor(rand((5, 3), 28)), Tensor(rand((3,), 29))
    y = (x.linear(w, b).relu().logsoftmax() * 2.0).mean()
    ops = _graph_ops(y)
    assert any(op.saved for op in ops), "the forward pass saved nothing for backward"
    y.backward()
    for op in ops:
        assert op._intermediate == (), f"{op!r} still holds saved arrays"


def test_second_backward_through_a_released_graph_fails_clearly() -> None:
    x = Tensor(rand((3,), 30))
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"(released|again)"):
        y.backward()


def test_a_backward_run_by_hand_after_release_says_the_arrays_were_released() -> None:
    """`op.backward(g)` by hand (docs/inspecting.md) after loss.backward(): every op of the graph
    says its arrays were released, not "not enough values to unpack" from inside its backward;
    `op.saved` is still empty to look at. Mul of two arrays too (its backward took the empty saves
    for the `x * 2.0` case and asked for a number it never kept)."""
    x, w, b = Tensor(rand((4, 5), 27)), Tensor(rand((5, 3), 28)), Tensor(rand((3,), 29))
    c = Tensor(rand((4, 3), 30))
    y = (x.linear(w, b).relu().logsoftmax() * 2.0 * c).mean()
    y.backward()
    released = [op for op in _graph_ops(y) if op._released]
    assert {type(op).__name__ for op in released} >= {"Linear", "ReLU", "LogSoftmax", "Mul"}, released
    for op in released:
        assert op.saved == () and len(op.saved) == 0 and not op.saved and repr(op.saved) == "()"
        name = type(op).__name__
        with pytest.raises(RuntimeError, match=rf"^{name}: backward through this graph ran already and its "
                           "saved arrays were released; run the forward pass again"):
            op.backward(topgrad.get_backend().ones(op._out_shape))


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_a_backward_run_by_hand_leaves_the_saved_arrays_for_the_engines(norm: str) -> None:
    """docs/inspecting.md: backward calls made by hand release nothing, so y.backward() still runs
    after them. numpy's BatchNorm (training) and LayerNorm wrote dL/dx over their saved x - mean:
    a second hand call gave other values, and y.backward() a wrong x.grad (off by 150 and 5e6),
    silently. They write over it only in the engine's backward (`op.saved_are_scratch`)."""
    x_np, r = rand((6, 4), 31), rand((6, 4), 32)

    def loss(x: Tensor) -> Tensor:
        gamma, beta = Tensor(np.ones(4, np.float32)), Tensor(np.zeros(4, np.float32))
        return (getattr(x, norm)(gamma, beta) * Tensor(r, requires_grad=False)).sum()

    x = Tensor(x_np)
    y = loss(x)
    op = y.op.parents[0].parents[0]
    assert type(op).__name__ == {"batchnorm": "BatchNorm", "layernorm": "LayerNorm"}[norm]
    g = Tensor(r, requires_grad=False).data
    to_numpy = topgrad.get_backend().to_numpy
    first, second = (to_numpy(op.backward(g)[0]) for _ in range(2))
    np.testing.assert_array_equal(first, second)
    y.backward()
    fresh = Tensor(x_np)
    loss(fresh).backward()
    np.testing.assert_array_equal(to_numpy(x.grad), to_numpy(fresh.grad))
    assert_close(first, to_numpy(fresh.grad), "the hand call's dL/dx")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NaN seed is the point
def test_an_op_whose_backward_ran_before_the_engine_stopped_releases_its_saved_arrays() -> None:
    """The engine marks the op it runs backward on (`saved_are_scratch`) and releases its saved
    arrays after; where an observer (detect_anomaly) stopped it after that backward, the flag
    stayed set and the arrays, maybe used as scratch, stayed for hand calls to read. Now they are
    released, and the flag never outlives the call (graph() listed it as a setting of every op)."""
    x = Tensor(rand((6, 4), 33))
    y = x.layernorm(Tensor(np.ones(4, np.float32)), Tensor(np.zeros(4, np.float32)))
    op = y.op
    seed = np.ones((6, 4), np.float32)
    seed[0, 0] = np.nan
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError):
        y.backward(seed)
    assert op._released and "saved_are_scratch" not in vars(op)
    with pytest.raises(RuntimeError, match=r"^LayerNorm: backward through this graph ran already"):
        op.backward(topgrad.get_backend().ones((6, 4)))
    z = (Tensor(rand((3, 2), 34)) * 2.0).relu().sum()
    z.backward()
    assert "saved_are_scratch" not in str(z.graph()), str(z.graph())


class _StartsAnotherWalk(Op):
    """A copy whose backward, while it runs, starts `then`'s backward (a second loss over it),
    as a second thread's walk reaches the op the first is running."""

    then: Tensor | None = None

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> tuple[Any]:
        (_x,) = self.saved  # read, as a backward that uses its saved arrays does
        if _StartsAnotherWalk.then is not None:
            then, _StartsAnotherWalk.then = _StartsAnotherWalk.then, None
            with pytest.raises(RuntimeError, match=r"^_StartsAnotherWalk: backward through this graph ran"):
                then.backward()
        return (topgrad.get_backend().copy(grad),)


def test_two_walks_through_a_shared_graph_cannot_run_an_ops_backward_at_once() -> None:
    """Two threads' backward through losses of one forward pass ran LayerNorm's backward at once,
    one writing dL/dx over the x - mean the other read: the thread that "succeeded" had gradients
    off by 10x, the other an AttributeError. The first walk now claims the op; the second is
    refused as by a released op (PyTorch's "backward through the graph a second time")."""
    w = Tensor(rand((2, 3), 44))
    y = _StartsAnotherWalk.apply(w)
    first, _StartsAnotherWalk.then = y.sum(), (y * 2.0).sum()
    first.backward()
    assert _StartsAnotherWalk.then is None and np.array_equal(to_numpy(w.grad), np.ones((2, 3), np.float32))


def test_a_tensor_handed_to_an_op_by_hand_says_to_pass_its_data() -> None:
    """docs/inspecting.md calls `op.backward(g)` by hand; g must be the backend's array. A Tensor
    there (or as a forward's input) says so on every backend, not "item() needs one element"."""
    x = Tensor(rand((2, 3), 32))
    y = x.relu()
    for call in (lambda: y.op.backward(Tensor(np.ones((2, 3), np.float32))),
                 lambda: (x * x).op.backward(Tensor(np.ones((2, 3), np.float32))),
                 lambda: y.op.forward(Tensor(rand((2, 3), 33)))):
        with pytest.raises((RuntimeError, TypeError), match=r"called by hand, take the backend's arrays: "
                           r"pass t\.data"):
            call()


def test_subtracting_an_int_zero_keeps_the_sign_of_a_negative_zero(backend_name: str) -> None:
    """x - 0 ran as x + (-0) = x + 0.0, which turns -0.0 into +0.0; PyTorch (and x - 0.0) keep it.
    On triton the kernels broadcast a number as 0.0 + number, which lost the sign of -0.0 itself."""
    zeros: tuple[Any, ...] = (0, 0.0, np.int64(0)) + ((np.array(0), np.array([0, 0]))
                                                      if backend_name == "numpy" else ())
    for zero in zeros:
        out = (Tensor([-0.0, 1.0]) - zero).numpy()
        assert np.signbit(out[0]) and out[1] == 1.0, (zero, out)
    x = Tensor([-0.0, 1.0, -2.0])
    for got, want in (((x + (-0.0)).numpy(), [-0.0, 1.0, -2.0]), (((-0.0) + x).numpy(), [-0.0, 1.0, -2.0]),
                      ((x * -0.0).numpy(), [0.0, -0.0, 0.0]), ((x - (-0.0)).numpy(), [0.0, 1.0, -2.0])):
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=str(got))
        np.testing.assert_array_equal(got, want)


def test_numpys_bool_is_a_number_operand_as_pythons_is() -> None:
    """`x * np.True_` is x on numpy and in PyTorch; triton refused it as "got bool; wrap an array"
    (numpy's bool scalar is no numbers.Real)."""
    x_np = rand((3,), 35)
    x = Tensor(x_np)
    for got, want in (((x * np.True_).numpy(), x_np), ((x + np.False_).numpy(), x_np),
                      ((np.True_ * x).numpy(), x_np), ((x * np.False_).numpy(), 0 * x_np)):
        np.testing.assert_array_equal(got, want)


def test_a_backend_fills_with_a_negative_zero() -> None:
    """backend.full(shape, -0.0) holds -0.0, as torch.full does (triton's fill kernel gave +0.0)."""
    backend = topgrad.get_backend()
    out = Tensor._from_array(backend.full((5,), -0.0), None).numpy()
    assert np.signbit(out).all(), out


def test_a_new_forward_pass_can_run_backward_again() -> None:
    x_np = rand((3,), 31)
    x = Tensor(x_np)
    for _ in range(2):
        (x * x).sum().backward()
    assert_close(x.grad, 4 * x_np, "two graphs, one leaf")


def test_ops_that_saved_nothing_can_run_backward_again() -> None:
    """As in PyTorch, where Add and Sum keep no tensors: a second backward through them adds up."""
    a, b = Tensor(rand((2, 3), 32)), Tensor(rand((2, 3), 33))
    s = (a + b).sum()
    s.backward()
    s.backward()
    assert_close(a.grad, np.full((2, 3), 2.0, np.float32), "two backward calls through Add and Sum")


def test_negation_and_subtraction_can_run_backward_again() -> None:
    """-x and x - y compose Mul by -1.0, a number, not a saved array: PyTorch runs these twice too."""
    a, b = Tensor(rand((2, 3), 34)), Tensor(rand((2, 3), 35))
    s = (a - b).sum() + (-a).sum()
    s.backward()
    s.backward()
    assert_close(a.grad, np.zeros((2, 3), np.float32), "a: twice (1 - 1)")
    assert_close(b.grad, np.full((2, 3), -2.0, np.float32), "b: twice -1")


# ---- mistakes in an Op, caught by the engine --------------------------------------------------
class _MulWithoutUnbroadcast(Op):
    def forward(self, a: Any, b: Any) -> Any:
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad: Any) -> Any:
        a, b = self.saved
        return [grad * b, grad * a]  # a list is fine; the missing sum over the broadcast axis is not


class _ForwardReturningAList(Op):
    def forward(self, a: Any) -> Any:
        return [1.0, 2.0]


def test_a_gradient_of_the_wrong_shape_names_the_op_and_the_input() -> None:
    """A backward that forgets to un-broadcast would otherwise change a parameter's shape at
    the next optimizer step; PyTorch refuses such a gradient too."""
    x, b = Tensor(rand((2, 3), 34)), Tensor(rand((3,), 35))
    with pytest.raises(RuntimeError, match=r"_MulWithoutUnbroadcast.backward returned a gradient of shape "
                       r"\(2, 3\) for input 1 of shape \(3,\)"):
        _MulWithoutUnbroadcast.apply(x, b).sum().backward()


class _SumWithoutExpand(Op):  # the forward's value does not matter here, only its shape
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x[:1, :1])

    def backward(self, grad: Any) -> Any:
        return grad  # the (1, 1) gradient, not expanded back to x's shape


class _TransposingCopy(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> Any:
        return (grad.T,)  # (3, 2) for a (2, 3) input: as many elements, in the wrong order


class _CopyReturningTwo(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> Any:
        return grad, grad


def test_a_reduced_gradient_of_the_wrong_shape_is_told_to_expand_not_to_sum() -> None:
    """The shape message advised "summed back" for every wrong shape, also where the fix is to
    expand a reduction's gradient; and it said "returned 2 gradients for 1 positional arguments"
    in the plural whatever the count."""
    x = Tensor(rand((2, 3), 36))
    with pytest.raises(RuntimeError, match=r"_SumWithoutExpand.backward returned a gradient of shape "
                       r"\(1, 1\) for input 0 of shape \(2, 3\) \(a reduced input's gradient must be "
                       "expanded back"):
        _SumWithoutExpand.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"\(transpose or reshape it to the input's shape"):
        _TransposingCopy.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"returned 2 gradients for 1 positional argument \("):
        _CopyReturningTwo.apply(x).sum().backward()


class _DoubleReturningATensor(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().mul(x, 2.0)

    def backward(self, grad: Any) -> Any:
        return (Tensor(grad) * 2.0,)  # a Tensor, not an array


class _ScaleByKeyword(Op):
    def forward(self, x: Any, w: Any = None) -> Any:
        return x * w  # w arrives as a Tensor: Topgrad's Mul, whose result is a Tensor


def test_a_backward_returning_a_tensor_or_a_keyword_tensor_is_named() -> None:
    """A Tensor gradient became a leaf's .grad silently (the README says it is an array) and
    failed at the optimizer step, or with fan-out inside numpy with no op named; a Tensor given by
    keyword reached forward wrapped, and the message did not say why."""
    x = Tensor(rand((2, 3), 36))
    with pytest.raises(TypeError, match=r"_DoubleReturningATensor.backward returned a Tensor for input 0; "
                       r".*return its \.data"):
        _DoubleReturningATensor.apply(x).sum().backward()
    with pytest.raises(TypeError, match=r"_ScaleByKeyword.forward returned a topgrad.tensor.Tensor.*given to "
                       r"apply by keyword reaches forward as a Tensor: only positional arguments"):
        _ScaleByKeyword.apply(x, w=Tensor(rand((2, 3), 37)))


def test_observers_see_only_checked_gradients() -> None:
    """Observers ran before the engine checked a backward's result: under detect_anomaly a Tensor
    gradient failed with "numpy cannot use a Tensor that requires grad" instead of the engine's
    "returned a Tensor ... return its .data", and any observer was handed the bad gradient."""
    from topgrad.observe import Observer, observing

    class Recorder(Observer):
        def __init__(self) -> None:
            self.backward_of: list[str] = []

        def after_backward(self, op: Op, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
            self.backward_of.append(type(op).__name__)

    x = Tensor(rand((2, 3), 38))
    returned_a_tensor = r"_DoubleReturningATensor.backward returned a Tensor for input 0; .*return its \.data"
    with topgrad.detect_anomaly(), pytest.raises(TypeError, match=returned_a_tensor):
        _DoubleReturningATensor.apply(x).sum().backward()
    with observing(Recorder()) as recorder, pytest.raises(TypeError, match=returned_a_tensor):
        _DoubleReturningATensor.apply(x).sum().backward()
    assert recorder.backward_of == ["Sum"], recorder.backward_of


class _ProductWithoutReturn(Op):
    def forward(self, x: Any, w: Any) -> Any:
        return topgrad.get_backend().mul(x, w)

    def backward(self, grad: Any) -> None:
        grad * 2.0  # the `return` forgotten


class _ZeroDWithAScalarGradient(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> Any:
        return (np.float32(2.0) * np.asarray(topgrad.get_backend().to_numpy(grad)))[()]


class _WithoutBackward(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)


def test_a_backwards_usual_slips_are_named() -> None:
    """A missing `return` said "returned 1 gradient for 2 positional arguments"; a numpy scalar for a
    0-d input got no np.asarray hint; a missing backward got the irrelevant "saved nothing" note."""
    x, w = Tensor(rand((2, 3), 39)), Tensor(rand((2, 3), 40))
    with pytest.raises(RuntimeError, match=r"_ProductWithoutReturn.backward returned None \(is its `return` "
                       r"missing\?\); it must return 2 gradients"):
        _ProductWithoutReturn.apply(x, w).sum().backward()
    if topgrad.get_backend().name == "numpy":
        says = r"returned a numpy.float32 for input 0; .*np\.asarray\(\.\.\.\) of it is one"
        with pytest.raises(TypeError, match=says):
            _ZeroDWithAScalarGradient.apply(Tensor(2.0)).backward()
    with pytest.raises(NotImplementedError) as info:
        _WithoutBackward.apply(x).sum().backward()
    assert "saved nothing" not in "".join(getattr(info.value, "__notes__", [])), info.value.__notes__


class _ForgetsToSave(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> Any:
        (x,) = self.saved
        return (topgrad.get_backend().mul(grad, x),)


class _FailsInAHelper(_WithoutBackward):
    def backward(self, grad: Any) -> Any:
        return (_helper_that_fails(grad),)


def _helper_that_fails(grad: Any) -> Any:
    raise ValueError("a kernel's own error")


def test_the_saved_nothing_note_goes_only_to_a_backward_that_read_saved_itself() -> None:
    """The note went to every error of an op that saved nothing: a built-in Mul whose kernel
    failed (a seed of the other backend) was told to call save_for_backward."""
    x = Tensor(rand((2, 3), 41))
    with pytest.raises(ValueError) as info:
        _ForgetsToSave.apply(x).sum().backward()
    assert "_ForgetsToSave saved nothing for backward" in "".join(info.value.__notes__)
    with pytest.raises(ValueError, match="a kernel's own error") as info:
        _FailsInAHelper.apply(x).sum().backward()
    assert "saved nothing" not in "".join(getattr(info.value, "__notes__", [])), info.value.__notes__


class _ReshapesWrongly(Op):
    """A third-party op whose own line fails with the backend's words, naming no op."""

    def forward(self, x: Any, size: int = 6) -> Any:
        return x.reshape(size)

    def backward(self, grad: Any) -> Any:
        return (grad.reshape(7),)


def test_a_backends_error_that_names_no_op_gets_a_note_that_does() -> None:
    """numpy's "cannot reshape array of size 6 into shape (7,)" from a third-party backend said
    neither which op nor which shapes; nor did a backward's. An error naming its op gets no note,
    and a backward failing on its own line (not on `saved`) no "saved nothing" note."""
    x = Tensor(rand((2, 3), 44), requires_grad=True)
    with pytest.raises((ValueError, RuntimeError)) as info:  # numpy's error, or torch's (triton)
        _ReshapesWrongly.apply(x, size=7)
    where = f"raised in _ReshapesWrongly.forward ({__name__})"
    assert info.value.__notes__ == [f"{where} on operands of shapes (2, 3)"]
    with pytest.raises((ValueError, RuntimeError)) as info:
        _ReshapesWrongly.apply(x).sum().backward()
    where = f"raised in _ReshapesWrongly.backward ({__name__})"
    assert info.value.__notes__ == [f"{where} on a gradient of shape (6,)"]
    with pytest.raises(ValueError, match="Reshape: ") as info:
        x.reshape(7)
    assert not getattr(info.value, "__notes__", None)


def test_a_leaf_given_data_of_another_shape_after_forward_is_a_possible_cause() -> None:
    """w.data of a new shape between forward and backward: the message blamed the op's backward
    alone and told its author to expand a reduced gradient."""
    w = Tensor(rand((3,), 42))
    y = (w * 2.0).sum()
    w.data = Tensor(rand((4,), 43)).data
    with pytest.raises(RuntimeError, match=r"or input 0, a leaf, was given \.data of another shape after "
                       r"this forward pass \(then run the forward pass again\)"):
        y.backward()


class _CopyWithoutReturn(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> None:
        grad * 1.0  # the `return` forgotten


class _CopyWithNoGradient(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> tuple[None]:
        return (None,)  # meant: no gradient flows through


def test_a_one_input_backward_without_return_is_warned_about_at_that_backward() -> None:
    """For one input, None is a valid answer ("no gradient"), so a forgotten `return` trained
    nothing before the op without a word (the loss still fell through the later layers). It
    now warns, at the op's `backward` (where the fix goes), once per process for that backward
    (Python's own once-per-place registry is cleared whenever code changes the warning filters,
    which the triton backend's does); (None,) says no gradient is meant, and stays quiet."""
    x = Tensor(rand((2, 3), 41))
    with pytest.warns(RuntimeWarning, match=r"_CopyWithoutReturn.backward returned None for an input that "
                      r"requires a gradient, .*is its `return` missing\? \(return \(None,\)") as seen:
        _CopyWithoutReturn.apply(x).sum().backward()
    assert x.grad is None
    assert seen[0].filename == __file__
    assert seen[0].lineno == _CopyWithoutReturn.backward.__code__.co_firstlineno
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        for _ in range(3):
            _CopyWithoutReturn.apply(x).sum().backward()
        _CopyWithNoGradient.apply(x).sum().backward()
    assert not shown and x.grad is None, [str(w.message) for w in shown]


class _DoubleReturningAList(Op):
    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().mul(x, 2.0)

    def backward(self, grad: Any) -> Any:
        return (topgrad.get_backend().to_numpy(grad).tolist(),)  # a list, not the backend's array


def test_a_backward_returning_another_array_type_is_named() -> None:
    """A backend's backward returning, say, a numpy array where its arrays are another type failed
    later inside a helper without naming the op, or became a leaf's .grad of the wrong type."""
    x = Tensor(rand((2, 3), 38))
    with pytest.raises(TypeError, match=r"_DoubleReturningAList.backward returned a builtins.list for input "
                       r"0; it must return the backend's arrays \(.*the type its zeros\(\(0,\)\) returns\)"):
        _DoubleReturningAList.apply(x).sum().backward()


class _SumToScalar(Op):
    """A whole-array sum returning numpy's scalar, as np.sum does (a float, on numpy)."""

    def forward(self, x: Any) -> Any:
        self.shape = x.shape
        return topgrad.get_backend().to_numpy(x).sum()

    def backward(self, grad: Any) -> tuple[Any]:
        return (grad,)


def test_a_forward_returning_a_numpy_scalar_is_refused(backend_name: str) -> None:
    """The next op would take the scalar for a plain number and return no gradient for it: every
    leaf's gradient would silently be None (the guide's Sum did this)."""
    with pytest.raises(TypeError, match=r"_SumToScalar\.forward returned a numpy\.float32; it must return "
                       r"one backend array .*a 0-d result too"):
        _SumToScalar.apply(Tensor(rand((2, 3), 40))) * 2.0


def test_a_forward_returning_a_tensor_is_refused() -> None:
    class KeywordTensorTimes(Op):
        def forward(self, x: Any, scale: Any = None) -> Any:
            return x * scale  # scale is the keyword Tensor itself: the product is a Tensor

    with pytest.raises(TypeError, match=r"KeywordTensorTimes\.forward returned a topgrad\.tensor\.Tensor"):
        KeywordTensorTimes.apply(Tensor(rand((2,), 41)), scale=Tensor(rand((2,), 42)))


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_a_step_between_forward_and_backward_is_refused(optimizer: str) -> None:
    """The step writes the parameters in place, and Mul saved them: backward would mix the
    forward's values with the step's (PyTorch raises here too). A graph that saved no array of
    the parameter (Add) may still run backward, and a graph built after the step trains as usual."""
    w = Tensor(rand((3,), 43))
    opt = getattr(topgrad.optim, optimizer)([w], lr=0.5)
    squares, cubes, shifted = (w * w).sum(), (w * w * w).sum(), (w + 1.0).sum()
    squares.backward()
    opt.step()
    w.grad = None
    refused = r"Mul: its input \d \(a leaf of shape \(3,\)\) was updated in place by an optimizer step"
    with pytest.raises(RuntimeError, match=refused):
        cubes.backward()
    shifted.backward()
    assert_close(w.grad, np.ones(3, np.float32), "the gradient through Add after the step")
    w.grad = None
    (w * w).sum().backward()
    assert_close(w.grad, 2 * w.numpy(), "a graph built after the step")


@pytest.mark.parametrize("name", ["relu", "exp", "sigmoid", "tanh", "sqrt", "logsoftmax", "div"])
def test_a_step_does_not_refuse_an_op_that_saved_no_array_of_the_parameter(name: str) -> None:
    """ReLU saves its output and x / 2.0 only the number: a step between their forward and backward
    changes nothing they use, and PyTorch runs backward there. Topgrad refused any op with saves
    whose input was stepped. The gradient is the forward's, as PyTorch's."""
    w_np, c_np = rand((2, 3), 45) + 0.5, rand((2, 3), 46)
    fns = {"relu": lambda t: t.relu(), "exp": lambda t: t.exp(), "sigmoid": lambda t: t.sigmoid(),
           "tanh": lambda t: t.tanh(), "sqrt": lambda t: t.sqrt(), "div": lambda t: t / 2.0,
           "logsoftmax": lambda t: t.logsoftmax()}
    torch_fns = {**fns, "logsoftmax": lambda t: t.log_softmax(-1)}
    w = Tensor(w_np)
    loss = (fns[name](w) * Tensor(c_np)).sum()
    w.grad = topgrad.get_backend().asarray(np.ones((2, 3), np.float32))
    topgrad.optim.SGD([w], lr=0.1).step()
    w.grad = None
    loss.backward()
    tw = torch.tensor(w_np, requires_grad=True)
    tloss = (torch_fns[name](tw) * torch.tensor(c_np)).sum()
    with torch.no_grad():
        tw -= 0.1
    tloss.backward()
    assert_close(w.grad, tw.grad.numpy(), f"{name}'s gradient after a step")


@pytest.mark.parametrize("view", ["reshape", "detach"])
def test_a_step_is_refused_when_an_op_saved_a_view_of_the_parameter(view: str) -> None:
    """Linear saved `w.reshape(3, 3)` or `w.detach()`, views sharing w's memory, not w itself: the
    step's in-place write reached them (e got [-1.2, -0.3, 0.6] for [0.3, 1.2, 2.1] before, with
    no error; PyTorch's views share the version counter and raise). A graph that saved a copy
    (w.reshape(3, 3).T, Permute's dense result) still runs backward."""
    w = Tensor(np.arange(9, dtype=np.float32) / 10)
    opt = topgrad.optim.SGD([w], lr=1.0)
    e = Tensor(np.ones((2, 3), np.float32))
    weight = w.reshape(3, 3) if view == "reshape" else w.detach().reshape(3, 3)
    loss, copied = (e @ weight).sum(), (e @ w.reshape(3, 3).T).sum()
    w.grad = topgrad.get_backend().asarray(np.full(9, 0.5, np.float32))
    opt.step()
    refused = r"Linear: it saved a view of a leaf of shape \(9,\) .*was updated in place"
    with pytest.raises(RuntimeError, match=refused):
        loss.backward()
    e.grad = None
    copied.backward()
    assert_close(e.grad, np.tile(np.arange(9, dtype=np.float32).reshape(3, 3).sum(0) / 10, (2, 1)),
                 "the gradient through the copy made before the step")


def test_a_computed_tensor_cannot_drop_requires_grad() -> None:
    """It would cut the graph silently (w got 1 instead of 7 below); PyTorch refuses too and so
    points at detach(). A leaf may change its flag either way."""
    w = Tensor(rand((3,), 44))
    y = w * 2.0
    with pytest.raises(RuntimeError, match=r"computed by Mul, and only a leaf's flag can change; .*detach"):
        y.requires_grad = False
    y.requires_grad = True  # already so: allowed, as in PyTorch
    (y * 3.0 + w).sum().backward()
    assert_close(w.grad, np.full(3, 7.0, np.float32), "the gradient through the kept graph")
    w.requires_grad = False
    assert not (w * 2.0).requires_grad
    w.requires_grad = True
    assert (w * 2.0).requires_grad


@pytest.mark.parametrize("op", ["Mul", "Div", "Linear", "Add"])
def test_a_constant_made_trainable_after_the_forward_gets_no_gradient_from_it(op: str) -> None:
    """The graph is what forward saw, as in PyTorch: a constant made trainable afterwards gets
    None from that graph and a gradient from the next forward. Before, Mul (which saves only
    what a needed gradient reads) crashed in backward, and the other ops gave it a gradient."""
    def run(x: Any, c: Any, mul: Any) -> Any:
        return {"Mul": lambda: x * c, "Div": lambda: x / c, "Add": lambda: x + c,
                "Linear": lambda: mul(x, c)}[op]().sum()

    x_np, c_np = rand((3, 3), 47), rand((3, 3), 48) + 2.0
    x, c = Tensor(x_np), Tensor(c_np, requires_grad=False)
    tx, tc = torch.tensor(x_np, requires_grad=True), torch.tensor(c_np)
    y, ty = run(x, c, lambda a, w: a.linear(w)), run(tx, tc, lambda a, w: a @ w)
    c.requires_grad, _ = True, tc.requires_grad_(True)
    y.backward()
    ty.backward()
    assert c.grad is None and tc.grad is None
    assert_close(x.grad, tx.grad.numpy(), "the gradient of the trainable operand")
    run(x, c, lambda a, w: a.linear(w)).backward()  # the next forward sees a trainable leaf
    run(tx, tc, lambda a, w: a @ w).backward()
    assert_close(c.grad, tc.grad.numpy(), "the gradient from the forward after the flip")


def test_a_leafs_flag_counts_as_forward_saw_it_and_as_it_is_at_backward() -> None:
    """PyTorch gives a leaf a gradient when it required one at forward and still does at backward:
    off after the forward, none; off and on again (a freeze/unfreeze around an eval), the
    gradient. The first version of the fix above clocked each flip, and so dropped the latter's
    gradient; it also kept the clock's tick in the Tensor, which a pickle carried to a process
    whose clock had not reached it."""
    import pickle

    for flips in ((False,), (False, True)):
        x, w = Tensor(rand((3,), 49)), Tensor(rand((3,), 50))
        tx, tw = torch.tensor(x.numpy(), requires_grad=True), torch.tensor(w.numpy(), requires_grad=True)
        loss, tloss = (x * w).sum(), (tx * tw).sum()
        for flag in flips:
            w.requires_grad, _ = flag, tw.requires_grad_(flag)
        loss.backward()
        tloss.backward()
        assert (w.grad is None) == (tw.grad is None), flips
        if tw.grad is not None:
            assert_close(w.grad, tw.grad.numpy(), f"w's gradient after the flips {flips}")
    if topgrad.get_backend().name != "numpy":  # the new process unpickles numpy arrays
        return
    c = Tensor(rand((3,), 51), requires_grad=False)
    for _ in range(5):  # steps tick the update clock
        topgrad.optim.SGD([x], lr=0.1).step()
    c.requires_grad = True
    in_a_new_process = ("import pickle, sys; c = pickle.loads(sys.stdin.buffer.read()); "
                        "(c * 2.0).sum().backward(); print(c.grad.tolist())")
    done = subprocess.run([sys.executable, "-c", in_a_new_process], input=pickle.dumps(c),
                          capture_output=True, timeout=120, env={**os.environ, "TOPGRAD_BACKEND": "numpy"})
    assert done.stdout.decode().strip() == "[2.0, 2.0, 2.0]", done.stderr.decode()


@pytest.mark.parametrize("op", ["Mul", "Div"])
def test_mul_and_div_compute_no_gradient_for_a_constant(op: str) -> None:
    """As Linear and Conv2d skip a first layer's input gradient: a constant operand (the targets
    of a loss, a mask) gets None from backward, not an array the engine would drop."""
    from topgrad.observe import Observer, observing

    class Returned(Observer):
        def after_backward(self, node: Any, grad: Any, grads: tuple[Any, ...], seconds: float) -> None:
            self.grads = grads

    w, c = Tensor(rand((2, 3), 45)), Tensor(rand((2, 3), 46) + 3.0, requires_grad=False)
    for a, b, constant in ((w, c, 1), (c, w, 0)):
        with observing(Returned()) as seen:
            (a * b if op == "Mul" else a / b).backward(np.ones((2, 3), np.float32))
        assert seen.grads[constant] is None and seen.grads[1 - constant] is not None, seen.grads


def test_backward_may_return_a_list() -> None:
    x, y = Tensor(rand((2, 3), 36)), Tensor(rand((2, 3), 37))
    _MulWithoutUnbroadcast.apply(x, y).sum().backward()
    assert_close(x.grad, y.numpy(), "gradient through a backward that returns a list")


def test_a_forward_that_returns_no_array_is_named() -> None:
    """In a graph, under no_grad and on constants alike (no graph: the error came later, elsewhere)."""
    named = r"_ForwardReturningAList\.forward returned a builtins\.list"
    with pytest.raises(TypeError, match=named):
        _ForwardReturningAList.apply(Tensor(rand((2,), 38)))
    with pytest.raises(TypeError, match=named):
        _ForwardReturningAList.apply(Tensor(rand((2,), 38), requires_grad=False))
    with topgrad.no_grad(), pytest.raises(TypeError, match=named):
        _ForwardReturningAList.apply(Tensor(rand((2,), 38)))


def test_an_op_dropped_from_the_graph_lets_go_of_what_it_saved() -> None:
    """An op of constants alone builds no graph, so what its forward saved is released at once."""
    x = Tensor(rand((2, 3), 39), requires_grad=False)
    with topgrad.profile() as p:
        (x * x).sum()
    assert p.stats["Mul"].saved_bytes == 0


# ---- no_grad -----------------------------------------------------------------------------
def test_no_grad_builds_no_graph_and_saves_nothing() -> None:
    """Under no_grad the output has no op, and the op instance saved no arrays."""
    created: list[Op] = []
    base = topgrad.get_backend().ops.Linear

    class SpyLinear(base):  # type: ignore[misc, valid-type]
        def forward(self, *arrays: Any, **params: Any) -> Any:
            created.append(self)
            return super().forward(*arrays, **params)

    x, w = Tensor(rand((2, 3), 32)), Tensor(rand((3, 4), 33))
    with topgrad.no_grad():
        out = SpyLinear.apply(x, w, None)
        relu = out.relu()
    assert out._op is None and relu._op is None
    assert len(created) == 1 and created[0].saved == ()
    assert_close(out, x.numpy() @ w.numpy(), "forward under no_grad")

    graph_out = SpyLinear.apply(x, w, None)
    assert graph_out._op is created[1] and created[1].saved, "outside no_grad the op saves its inputs"


def test_no_grad_is_restored_after_an_exception() -> None:
    x = Tensor(rand((2,), 34))
    with pytest.raises(ZeroDivisionError), topgrad.no_grad():
        _ = 1 / 0
    assert (x * 2.0)._op is not None


def test_no_grad_output_is_a_constant_as_in_pytorch() -> None:
    """A loss computed under no_grad refuses backward (PyTorch's "does not require grad") instead
    of training nothing; a value made there trains once its requires_grad is set."""
    x = Tensor(rand((2,), 35))
    with topgrad.no_grad():
        y = x * 2.0
        loss = (x * x).sum()
    assert not y.requires_grad and not loss.requires_grad
    with pytest.raises(RuntimeError, match="no_grad"):
        loss.backward()
    with pytest.raises(RuntimeError, match="constant"):
        (y * 3.0).sum().backward()
    assert x.grad is None
    y.requires_grad = True  # a new leaf, outside x's graph
    (y * 3.0).sum().backward()
    assert x.grad is None
    assert_close(y.grad, np.full(2, 3.0, np.float32), "y is a leaf now")


def test_no_grad_is_per_thread_as_in_pytorch() -> None:
    """Overlapping no_grad blocks in two threads leave each thread's mode, and the main one's, as it was."""
    import threading

    entered, leave = threading.Barrier(3), threading.Event()
    one_at_a_time = threading.Lock()  # Triton's interpreter (and its bounds checks) run one launch at a time
    seen: list[bool] = []

    def worker() -> None:
        with topgrad.no_grad():
            entered.wait(timeout=30)
            leave.wait(timeout=30)
        with one_at_a_time:
            seen.append((Tensor(rand((2,), 36)) * 2.0).requires_grad)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        entered.wait(timeout=30)  # both threads are inside no_grad now
        with one_at_a_time:
            assert (Tensor(rand((2,), 37)) * 2.0).requires_grad, "another thread's no_grad reached this one"
    finally:
        leave.set()
        for t in threads:
            t.join(timeout=30)
    assert seen == [True, True]
    assert (Tensor(rand((2,), 38)) * 2.0).requires_grad


# ---- in-place updates ------------------------------------------------------------------------
def test_in_place_update_under_no_grad_keeps_the_leaf_as_in_pytorch() -> None:
    """The classic hand-written SGD step: `w -= lr * w.grad` under no_grad, twice."""
    w_np, x_np = rand((3, 2), 40), rand((4, 3), 41)
    w, wt = Tensor(w_np), torch.tensor(w_np, requires_grad=True)
    for _ in range(2):
        Tensor(x_np, requires_grad=False).linear(w).sum().backward()
        torch.tensor(x_np).matmul(wt).sum().backward()
        leaf = w
        with topgrad.no_grad():
            w -= 0.1 * w.grad
            w *= 0.5
            w += 1.0
            w /= 2.0
        with torch.no_grad():
            wt -= 0.1 * wt.grad
            wt *= 0.5
            wt += 1.0
            wt /= 2.0
        assert w is leaf and w.requires_grad and w._op is None
        w.grad, wt.grad = None, None
    assert_close(w.numpy(), wt.detach().numpy(), "two hand-written SGD steps")


def test_power_in_place_updates_the_leaf_as_the_other_in_place_operators_do() -> None:
    """`w **= 2` fell back to `w = w ** 2`: under no_grad the name became a new constant while the
    optimizer kept the old leaf; outside it a leaf that requires grad became a non-leaf silently
    (PyTorch refuses). It now takes the same path as -=, *=, += and /=."""
    w_np = rand((3,), 45)
    w = leaf = Tensor(w_np)
    with topgrad.no_grad():
        w **= 2
    assert w is leaf and w.requires_grad and w._op is None
    assert_close(w, w_np**2, "w **= 2 under no_grad")
    with pytest.raises(RuntimeError, match=r"in place .*no_grad.* x = x \*\* y"):
        w **= 2


def test_an_in_place_update_keeps_the_leafs_dtype_as_in_pytorch(backend_name: str) -> None:
    """A float64 leaf updated with a float32 operand under no_grad became float32 (a mixed Add
    gives float32): its later steps lost precision silently. PyTorch keeps the target's dtype."""
    if backend_name != "numpy":
        pytest.skip("this backend has no float64")
    w_np = rand((3,), 46).astype(np.float64)
    w, wt = Tensor(w_np, dtype="float64"), torch.tensor(w_np)
    step, step_t = Tensor(rand((3,), 47)), torch.tensor(rand((3,), 47))
    with topgrad.no_grad():
        w -= step
        w *= np.float32(0.5)
    wt -= step_t
    wt *= 0.5
    assert w.dtype == np.float64 and w.grad is None
    np.testing.assert_allclose(w.numpy(), wt.numpy(), rtol=1e-6)
    (w * w).sum().backward()
    assert w.grad.dtype == np.float64


@pytest.mark.parametrize("update", [
    lambda w: w.__imul__(Tensor([1.0, 1.0], requires_grad=False)),
    lambda w: w.__iadd__(np.zeros(2, np.float32)),
    lambda w: w.__isub__(0.1 * Tensor(np.zeros(2, np.float32))),
    lambda w: w.__itruediv__(np.float32(1.0)),
], ids=["*= Tensor", "+= array", "-= lr * Tensor", "/= numpy float32"])
def test_a_float32_operand_updates_a_float64_leaf_exactly_as_in_pytorch(update: Any) -> None:
    """`w *= Tensor(ones)` under no_grad computed the product in float32 (float32 wins a mixed op)
    and cast it back: a float64 leaf's values were rounded to float32 while its dtype stayed
    float64. The operand is now made float64 first, so they stay exact, as PyTorch's do."""
    values = np.array([1 + 1e-12, 0.1])
    w = leaf = float64_tensor(values)
    with topgrad.no_grad():
        w = update(w)
    assert w is leaf and w.dtype == np.float64
    np.testing.assert_array_equal(w.numpy(), values)


def test_in_place_update_of_a_leaf_that_requires_grad_outside_no_grad_is_refused() -> None:
    w = Tensor(rand((2,), 42))
    with pytest.raises(RuntimeError, match=r"in place .*no_grad"):
        w -= 1.0
    h = w * 2.0  # not a leaf: += builds a new node, as x = x + y would
    h += 1.0
    h.sum().backward()
    assert_close(w.grad, np.full(2, 2.0, np.float32), "through h += 1")
    with pytest.raises(ValueError, match="cannot broadcast"), topgrad.no_grad():
        w += Tensor(rand((3, 2), 43))


@pytest.mark.parametrize("how", ["-=", "*="])
@pytest.mark.parametrize("alias", ["row", "iterated", "T", "reshape", "permute", "flatten", "detach"])
@pytest.mark.parametrize("graph", [False, True], ids=["no_grad", "recording"])
def test_in_place_update_of_what_pytorch_makes_a_view_is_refused(alias: str, how: str, graph: bool) -> None:
    """`for row in W: row *= s` (a max-norm step), `d = w.detach(); d *= decay`, `wt = w.T; wt -= 1`:
    PyTorch writes through to w; Topgrad gave the alias new values of its own and left w as it was,
    with no word. Now refused, in both grad modes, with the way to write it; w is unchanged."""
    w = Tensor(rand((2, 3), 50))
    before = w.numpy()
    make = {"row": lambda: w[0], "iterated": lambda: next(iter(w)), "T": lambda: w.T,
            "reshape": lambda: w.reshape(6), "permute": lambda: w.permute(1, 0),
            "flatten": lambda: w.flatten(0), "detach": lambda: w.detach()}[alias]
    with contextlib.nullcontext() if graph else topgrad.no_grad():
        view = make()
        with pytest.raises(RuntimeError, match=rf"Tensor {re.escape(how)}: this tensor was made by "
                           r"x\[\.\.\.\], x\.T, reshape, permute or detach\(\), a view of x in PyTorch"):
            {"-=": operator.isub, "*=": operator.imul}[how](view, 2.0)
    np.testing.assert_array_equal(w.numpy(), before)


def test_in_place_outside_no_grad_keeps_the_shape_and_dtype_or_is_refused(backend_name: str) -> None:
    """Outside no_grad `x += y` on a non-leaf builds x + y; it broadcast a (3,) total to (2, 3)
    (a loss summed without its mean then seeded ones in backward) and turned float64 into float32,
    where PyTorch refuses the shape and keeps the dtype. The no_grad path already refused."""
    total = Tensor(0.0, requires_grad=False)
    with pytest.raises(ValueError, match=r"Tensor \+=: the result is float32 of shape \(3,\), the tensor "
                       r"float32 of shape \(\) \(an in-place update cannot broadcast it, and keeps the "
                       r"dtype"):
        total += Tensor(rand((3,), 51)) * 2.0
    if backend_name == "numpy":
        wide = Tensor(rand((3,), 52), dtype="float64") * 1.0
        with pytest.raises(ValueError, match=r"the result is float32 of shape \(3,\), the tensor float64"):
            wide += Tensor(rand((3,), 53))


# ---- small conveniences ----------------------------------------------------------------------
def test_detach_float_flatten_and_required_operands() -> None:
    x = Tensor(rand((2, 3), 44))
    d = x.detach()
    assert not d.requires_grad and d._op is None and d.data is x.data  # shares, as torch's detach
    assert float(Tensor([2.5])) == 2.5
    with pytest.raises(ValueError, match="one element"):
        float(x)
    assert Tensor(np.zeros((0, 3, 2), np.float32)).flatten().shape == (0, 6)  # as torch.flatten
    q = x.reshape(1, 2, 3)
    calls = [(lambda: x.linear(None), "Linear"), (lambda: q.reshape(1, 2, 3, 1).conv2d(None), "Conv2d"),
             (lambda: topgrad.attention(q, q, None), "Attention")]
    for call, op in calls:
        with pytest.raises(TypeError, match=f"{op}: .* is required"):
            call()


@pytest.mark.parametrize("method", ["sum", "mean"])
def test_an_empty_axis_tuple_is_refused_as_ambiguous(method: str) -> None:
    """numpy reduces no axis for axis=(), PyTorch every axis: neither is assumed."""
    with pytest.raises(ValueError, match=r"axis=\(\) is ambiguous"):
        getattr(Tensor(rand((2, 3), 45)), method)(axis=())


def test_a_tensor_seed_takes_the_dtype_of_the_tensor_as_in_pytorch() -> None:
    y = float64_tensor(rand((2,), 46)) * 2.0
    y.backward(Tensor(np.ones(2, np.float32)))
    leaf = y._op.parents[0]
    assert str(leaf.grad.dtype).endswith("float64")


def test_a_leaf_gradient_takes_the_leaf_dtype_as_in_pytorch() -> None:
    """A float64 input through a float32 weight (numpy's Linear computes in float64): the weight's
    `.grad` is float32, once and when accumulated, and equals PyTorch's float64 gradient."""
    x_np, w_np = rand((4, 3), 47).astype(np.float64), rand((3, 2), 48)
    x, w = float64_tensor(x_np), Tensor(w_np)
    for _ in range(2):
        x.linear(w).sum().backward()
        assert str(np.dtype(w.grad.dtype)) == "float32" and str(x.grad.dtype).endswith("float64")
    tw = torch.tensor(w_np, dtype=torch.float64, requires_grad=True)
    (torch.tensor(x_np) @ tw).sum().backward()
    assert_close(w.grad, 2 * tw.grad.numpy(), "Linear: grad w")


# ---- constants: requires_grad=False ----------------------------------------------------------
def test_a_constant_gets_no_gradient_and_the_rest_match_torch() -> None:
    """An input batch made with requires_grad=False through a small residual net, against PyTorch."""
    x_np, w_np, v_np = rand((4, 5), 40), rand((5, 5), 41), rand((5, 3), 42)

    def top(x: Tensor, w: Tensor, v: Tensor) -> Tensor:
        return ((x.linear(w).relu() + x) * x).linear(v)

    def ref(x: torch.Tensor, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ((torch.relu(x @ w) + x) * x) @ v

    check_against_torch(top, ref, [x_np, w_np, v_np], constants=(0,))


def test_an_op_of_constants_builds_no_graph() -> None:
    """Ops whose Tensor inputs are all constants give a constant with no op (PyTorch prunes the
    same way), and backward from it says why it cannot run."""
    x = Tensor(rand((2, 3), 43), requires_grad=False)
    y = (x * 2.0 + x).relu().sum()
    assert y._op is None and not y.requires_grad
    assert "requires_grad=False" in repr(y)
    with pytest.raises(RuntimeError, match="constant"):
        y.backward()
    with pytest.raises(RuntimeError, match="constant"):
        x.backward()


def test_needs_grad_tells_an_op_which_gradients_to_compute() -> None:
    x = Tensor(rand((2, 3), 44), requires_grad=False)
    w = Tensor(rand((3, 4), 45))
    h = x.linear(w)
    out = h.linear(Tensor(rand((4, 2), 46), requires_grad=False))
    assert [h._op.needs_grad(i) for i in range(3)] == [False, True, False]  # bias None: a plain value
    assert [out._op.needs_grad(i) for i in range(2)] == [True, False]  # h comes from an op
    assert type(h._op)().needs_grad(0), "an op run by hand, outside the engine, computes every gradient"


def test_a_constant_is_still_a_node_of_the_graph() -> None:
    """graph() shows the constant input, so inspection is unchanged."""
    x = Tensor(rand((2, 3), 47), requires_grad=False)
    w = Tensor(rand((3, 2), 48))
    g = x.linear(w).sum().graph({"x": x, "w": w})
    assert {n.name for n in g if n.op is None} == {"x", "w"}


# ---- printing and numpy interop ---------------------------------------------------------------
def test_repr_shows_values_shape_op_and_constness() -> None:
    a = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    text = repr(a * 2.0)
    assert text.startswith("Tensor([[2. 4.]\n        [6. 8.]]"), text
    assert "shape=(2, 2)" in text and "op=Mul" in text
    assert repr(Tensor(3.0, requires_grad=False)) == "Tensor(3.0, shape=(), requires_grad=False)"


def test_numpy_reads_a_constant_as_its_values() -> None:
    """np.asarray(t) of a constant holds its values (as t.numpy()), not a 0-d object array."""
    a = Tensor(rand((2, 3), 49), requires_grad=False)
    np.testing.assert_array_equal(np.asarray(a), a.numpy())
    assert np.asarray(a, dtype=np.float64).dtype == np.float64


def test_numpy_reads_a_constant_by_numpys_copy_protocol(backend_name: str) -> None:
    """`np.array(t, copy=False)` returned a copy silently; NumPy 2's protocol (and torch) says a
    copy that is needed then is refused. A numpy backend's own array is shared unless copy=True."""
    a = Tensor([1.0, 2.0], requires_grad=False)
    copied = np.array(a, copy=True)
    copied[0] = 100.0
    assert a.numpy()[0] == 1.0, "copy=True shared the tensor's array"
    with pytest.raises(ValueError, match=r"^np.array\(t, copy=False\): .* of float32, so numpy needs a copy "
                       r"as float64, which copy=False forbids; np.asarray\(t\) or t.numpy\(\) makes one$"):
        np.array(a, dtype=np.float64, copy=False)
    assert np.asarray(a, dtype=np.float64).tolist() == [1.0, 2.0]
    if backend_name == "numpy":  # the array is numpy's: shared, as np.asarray(torch_tensor) is
        assert np.array(a, copy=False) is a.data and np.asarray(a) is a.data
    else:  # another library's array: numpy copies it, and copy=False says so
        with pytest.raises(ValueError, match=r"numpy needs a copy, which copy=False forbids"):
            np.array(a, copy=False)
    with pytest.raises(RuntimeError, match="requires grad"):
        np.array(Tensor([1.0]), copy=False)


def test_torch_and_numpy_read_a_constant_through_dlpack(backend_name: str) -> None:
    """`torch.tensor(c)` walked the tensor as a sequence and failed on its 0-d items ('len() of a
    0-d Tensor'); by DLPack it reads the values, as it reads another library's array. A tensor that
    requires grad is refused as `np.asarray` refuses it (torch's own DLPack export refuses too)."""
    values = np.array([[1.0, 2.0], [3.0, -4.0]], np.float32)
    c = Tensor(values, requires_grad=False)
    read = torch.tensor(c)
    assert read.dtype == torch.float32 and read.cpu().numpy().tolist() == values.tolist()
    if c.__dlpack_device__()[0] == 1:  # on the CPU (DLPack's kDLCPU), numpy reads it too
        assert np.from_dlpack(c).tolist() == values.tolist()
    assert torch.tensor(Tensor(2.5, requires_grad=False)).item() == 2.5
    if backend_name == "numpy":  # numpy's array is shared, as torch.as_tensor shares a numpy array
        assert torch.as_tensor(c).data_ptr() == c.data.ctypes.data
    w = Tensor(values)
    with pytest.raises(RuntimeError, match=r"^DLPack \(torch.tensor, np.from_dlpack\) cannot use a Tensor "
                       r"that requires grad: .*t\.numpy\(\)"):
        torch.tensor(w)


def test_numpy_refuses_a_tensor_that_requires_grad() -> None:
    """As in PyTorch: np.exp(w) would silently leave the graph and train nothing."""
    w = Tensor(rand((2, 3), 50))
    with pytest.raises(RuntimeError, match=r"outside the graph.*t\.numpy\(\)"):
        np.exp(w)
    np.testing.assert_array_equal(np.exp(w.numpy()), np.exp(rand((2, 3), 50)))


@pytest.mark.parametrize("momentum", [None, -0.1, 1.5, "0.1"])
def test_batchnorm_momentum_must_be_a_number_in_0_1(momentum: Any) -> None:
    x, g, b = Tensor(rand((4, 3), 51)), Tensor(rand((3,), 52)), Tensor(rand((3,), 53))
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\]"):
        x.batchnorm(g, b, momentum=momentum)


@pytest.mark.parametrize(("eps", "error", "match"), [
    ("1e-5", TypeError, "eps must be a number, got str"), (None, TypeError, "eps must be a number"),
    (True, TypeError, "eps must be a number, got bool"), (-1e-5, ValueError, "eps must be finite and >= 0"),
    (float("nan"), ValueError, "eps must be finite and >= 0"),
])
@pytest.mark.parametrize("norm", ["BatchNorm", "LayerNorm"])
def test_norms_refuse_an_eps_that_is_no_number(norm: str, eps: Any, error: type, match: str) -> None:
    x, g, b = Tensor(rand((4, 3), 51)), Tensor(rand((3,), 52)), Tensor(rand((3,), 53))
    with pytest.raises(error, match=f"{norm}: {match}"):
        x.batchnorm(g, b, eps=eps) if norm == "BatchNorm" else x.layernorm(g, b, eps=eps)


@pytest.mark.parametrize("value", ["no", 0, None, 1.0])
def test_switches_must_be_true_or_false(value: Any) -> None:
    """causal and keepdims take a bool, as in PyTorch: causal="no" was taken as true."""
    x = Tensor(rand((1, 3, 2), 56))
    for call, what in ((lambda: topgrad.attention(x, x, x, causal=value), "attention: causal"),
                       (lambda: x.sum(axis=1, keepdims=value), "sum: keepdims"),
                       (lambda: x.mean(keepdims=value), "mean: keepdims")):
        with pytest.raises(TypeError, match=f"{what} must be True or False"):
            call()
    assert topgrad.attention(x, x, x, causal=np.True_).shape == (1, 3, 2)  # numpy's bool is one
    assert x.sum(axis=1, keepdims=np.False_).shape == (1, 2)


def test_truth_of_a_tensor_is_its_one_value_as_in_pytorch() -> None:
    assert bool(Tensor(1.0)) and not bool(Tensor([0.0]))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor([1.0, 2.0]))


def test_len_of_a_0d_tensor_is_a_type_error() -> None:
    assert len(Tensor(rand((4, 2), 50))) == 4
    with pytest.raises(TypeError, match="0-d"):
        len(Tensor(1.0))


@pytest.mark.parametrize("compare", [lambda x: x > 0, lambda x: 0 <= x, lambda x: x < x,
                                     lambda x: np.zeros(2, np.float32) >= x])
def test_comparisons_say_there_are_none_and_what_to_do(compare: Any) -> None:
    """No comparison ops (no gradient; == is identity, as tensors are graph nodes): the TypeError
    says so and points to the values, where Python's default named only the types."""
    x = Tensor.ones(2)
    with pytest.raises(TypeError, match=r"no comparison ops.*x\.numpy\(\) > 0"):
        compare(x)
    assert x == x and x != Tensor.ones(2) and {x: 1}[x] == 1


def test_an_op_says_what_it_made_and_holds_and_names_pytorchs_grad_fn_attributes() -> None:
    """repr(op) was `<Linear op>`; a learner walking `y.op.parents` sees the output, the dtype and
    the saved arrays now. PyTorch's grad_fn names (next_functions, saved_tensors) point to the
    Op's; any other missing attribute is a plain AttributeError."""
    x, w = Tensor(rand((4, 3), 40)), Tensor(rand((3, 2), 41))
    h = x.linear(w)
    y = h.sum()
    dtype = str(h.dtype).removeprefix("torch.")
    assert repr(h.op) == f"<Linear op: (4, 2) {dtype}, saved 2 arrays>"
    assert repr(y.op) == f"<Sum op: () {dtype}, saved 0 arrays>"
    y.backward()
    assert repr(h.op) == f"<Linear op: (4, 2) {dtype}, saved arrays released>"
    assert repr(type(h.op)()) == "<Linear op: not applied>"
    with pytest.raises(AttributeError, match=r"^'Linear' op has no attribute 'next_functions': PyTorch's "
                       r"grad_fn.next_functions is op.parents \(per input"):
        h.op.next_functions  # noqa: B018
    with pytest.raises(AttributeError, match=r"grad_fn.saved_tensors is op.saved \(the backend arrays"):
        h.op.saved_tensors  # noqa: B018
    with pytest.raises(AttributeError, match=r"grad_fn._saved_self is op.saved, by the names in op._saved"):
        h.op._saved_self  # noqa: B018 - PyTorch's grad_fn._saved_* family
    with pytest.raises(AttributeError, match=r"^'Linear' op has no attribute 'no_such_thing'$"):
        h.op.no_such_thing  # noqa: B018
    assert getattr(h.op, "no_such_thing", 7) == 7


def test_an_ops_repr_counts_the_arrays_it_saved_not_a_saved_none() -> None:
    """numpy's BatchNorm saves `centre=None` in training: its repr said "saved 5 arrays" where
    graph() shows 4."""
    x = Tensor(rand((6, 4), 43))
    op = x.batchnorm(Tensor(np.ones(4, np.float32)), Tensor(np.zeros(4, np.float32))).op
    arrays = sum(a is not None for a in op.saved)
    assert repr(op).endswith(f"saved {arrays} array{'' if arrays == 1 else 's'}>"), repr(op)


def test_op_is_the_public_way_into_the_graph() -> None:
    """`t.op` (PyTorch's grad_fn) is the Op that made t, None for a leaf, a constant or a
    no_grad result; its parents and saved arrays are the graph a learner walks by hand."""
    x, w = Tensor(rand((4, 3), 40)), Tensor(rand((3, 2), 41))
    h = x.linear(w)
    y = h.relu().sum()
    assert x.op is None and Tensor(rand((2,), 42), requires_grad=False).op is None
    assert type(y.op).__name__ == "Sum"
    relu = y.op.parents[0]
    assert type(relu).__name__ == "ReLU" and relu.parents[0] is h.op
    assert h.op.parents[:2] == (x, w) and len(h.op.saved) == 2
    with topgrad.no_grad():
        assert (x * 2.0).op is None


# ---- PyTorch habits (an audit of the engine against torch.autograd) ------------------------------


def test_a_one_element_tensor_formats_as_its_number() -> None:
    """`f"{loss:.4f}"` raised "unsupported format string passed to Tensor.__format__". As in
    PyTorch, a 0-d tensor formats as its number (an empty spec too); any other takes no spec."""
    x = rand((3,), 61)
    loss, tloss = (Tensor(x) * 2.0).mean(), (torch.tensor(x) * 2.0).mean()
    for spec in (".4f", "8.3e", "g", ">12.2%", ""):
        assert format(loss, spec) == format(tloss, spec), spec
    assert f"{Tensor(x)}" == str(Tensor(x))
    for shape in ((3,), (1,)):  # PyTorch refuses a spec for a one-element 1-d tensor too
        with pytest.raises(TypeError, match=rf"format spec '.2f' for a Tensor of shape \({shape[0]},\)"):
            f"{Tensor(x[: shape[0]]):.2f}"
        with pytest.raises(TypeError):
            f"{torch.tensor(x[: shape[0]]):.2f}"


def test_in_is_refused_where_it_would_answer_by_identity() -> None:
    """`1.0 in t` answered False for a value t holds (== is identity for Tensors); PyTorch says True."""
    with pytest.raises(TypeError, match=r"compare by identity.*\(t.numpy\(\) == value\).any\(\)"):
        1.0 in Tensor([1.0, 2.0])  # noqa: B015


def test_a_shallow_copy_of_a_leaf_has_a_grad_of_its_own() -> None:
    """copy.copy(w) shared w's .grad array, so a backward through the copy added into w's gradient
    (README: each leaf's .grad is an array of its own). As in PyTorch, the copy is a leaf on the
    same values with no .grad."""
    import copy

    w = Tensor(rand((3,), 63))
    (w * w).sum().backward()
    before = to_numpy(w.grad).copy()
    c = copy.copy(w)
    assert c.grad is None and c.requires_grad and c.op is None and c.data is w.data
    (c * 2.0).sum().backward()
    assert_close(w.grad, before, "w's gradient, untouched by the copy's backward")
    assert_close(c.grad, np.full(3, 2.0), "the copy's own gradient")


def test_a_grad_left_from_before_data_got_a_new_shape_is_refused() -> None:
    """A (3,) .grad was broadcast into a (2, 3) one after w.data was replaced: a wrong gradient
    of the right shape, which the optimizer took. PyTorch refuses it at backward too."""
    w = Tensor([1.0, 2.0, 3.0])
    (w * w).sum().backward()
    w.data = topgrad.get_backend().asarray(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"a leaf of shape \(2, 3\) has a .grad of shape \(3,\), left "
                       r"from before its .data was given a new shape; clear it first \(w.grad = None"):
        (w * 1.0).sum().backward()
    w.grad = None
    (w * 1.0).sum().backward()
    assert_close(w.grad, np.ones((2, 3)), "the gradient once cleared")


def test_pickle_makes_a_computed_tensor_a_leaf_and_deepcopy_refuses_it() -> None:
    """pickle of `w * w` failed on a weak reference in its op; copy.deepcopy copied the whole graph, w
    with it, so a backward through the copy left w.grad None. PyTorch pickles a computed tensor as
    a leaf and refuses to deep-copy it."""
    import copy
    import pickle

    w = Tensor(rand((3,), 62))
    h = w * w
    back = pickle.loads(pickle.dumps(h))
    assert back.op is None and back.requires_grad and back.grad is None
    assert_close(back.data, h.numpy(), "the unpickled values")
    back.sum().backward()
    assert_close(back.grad, np.ones(3), "a backward from the unpickled leaf")
    with pytest.raises(RuntimeError, match="deepcopy of a tensor computed by Mul: only leaves"):
        copy.deepcopy(h)
    copy.copy(w * 3.0).sum().backward()  # a shallow copy is the same node: the gradient reaches w
    assert_close(w.grad, np.full(3, 3.0), "w's gradient through copy.copy")
    w.grad = topgrad.get_backend().asarray(np.full(3, 5.0, np.float32))
    twin = copy.deepcopy([w, w])  # the memo keeps one copy for one tensor
    assert twin[0] is twin[1] and twin[0] is not w and twin[0].requires_grad
    assert_close(twin[0].data, w.numpy(), "the copy's values")
    twin[0].grad = None
    assert w.grad is not None, "the copy's .grad is its own"


def test_a_read_only_gradient_from_a_custom_backward_becomes_a_writeable_grad() -> None:
    """A custom Sum's backward returned np.broadcast_to(g, shape), a read-only view: `w.grad *= 0.5`
    then raised "output array is read-only", and the next backward made a new .grad where PyTorch
    adds into it."""
    if topgrad.get_backend().name != "numpy":
        pytest.skip("a numpy backward's read-only view")

    class ColumnSum(Op):
        def forward(self, x: Any) -> Any:
            self.shape = x.shape
            return np.asarray(x.sum(axis=0))

        def backward(self, g: Any) -> tuple[Any]:
            return (np.broadcast_to(g, self.shape),)

    w, tw = rand((2, 3), 63), None
    w = Tensor(w)
    tw = torch.tensor(w.numpy(), requires_grad=True)
    (ColumnSum.apply(w) * 2.0).sum().backward()
    (tw.sum(dim=0) * 2.0).sum().backward()
    held = w.grad
    held *= 0.5
    with torch.no_grad():
        tw.grad *= 0.5
    (ColumnSum.apply(w) * 2.0).sum().backward()
    (tw.sum(dim=0) * 2.0).sum().backward()
    assert w.grad is held, "backward adds into the .grad the user holds, as PyTorch does"
    assert_close(held, tw.grad.numpy(), "the halved, then summed gradient")


def test_the_hint_for_float_keeps_the_graph() -> None:
    """The hint for PyTorch's x.float() was Tensor(x.numpy()), a new leaf: followed, it cut x from
    the graph and x's gradient was silently None. The hint's differentiable cast keeps it."""
    with pytest.raises(AttributeError) as caught:
        Tensor([1.0]).float()
    assert "x itself where x is float32" in str(caught.value) and "cut from x's graph" in str(caught.value)
    if topgrad.get_backend().name != "numpy":
        return  # float64 tensors are the numpy backend's
    x = Tensor(np.array([1.0, 2.0]), dtype="float64")
    y = x + Tensor(0.0, requires_grad=False)  # the hint's cast
    assert y.dtype == np.float32
    (y * 3.0).sum().backward()
    assert_close(x.grad, np.full(2, 3.0), "x's gradient through the cast")
