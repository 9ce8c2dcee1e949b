"""Mistakes a PyTorch user makes with Topgrad's public API: each either does what PyTorch does or
is refused with an error that names the op, the values involved and what to write instead (not a
bare Python or numpy error from deep inside, and not a silently different result)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import topgrad
import torch
from helpers import rand, to_numpy
from topgrad import Tensor
from topgrad.optim import SGD, Adam
from topgrad.pytorch_names import MODULE_INSTEAD


# ---- torch.Tensor habits -------------------------------------------------------------
def test_calling_size_as_pytorchs_method_names_shape() -> None:
    x = Tensor(rand((4, 3), 0))
    assert x.size == 12 and x.size + 1 == 13  # still numpy's element count, an int
    with pytest.raises(TypeError, match=r"x.size is the element count .*PyTorch's x.size\(\) is x.shape$"):
        x.size()
    with pytest.raises(TypeError, match=r"PyTorch's x.size\(0\) is x.shape\[0\]"):
        x.size(0)


def test_int_of_a_one_element_tensor_truncates_as_in_pytorch() -> None:
    for value in (3.7, -3.7, 0.2):
        assert int(Tensor([value])) == int(torch.tensor([value])) == int(value)
    with pytest.raises(ValueError, match=r"one element, got shape \(3,\)"):
        int(Tensor(rand((3,), 0)))


@pytest.mark.parametrize(
    ("name", "match"),
    [("log_softmax", r"x.log_softmax is x.logsoftmax\(axis\)"),
     ("long", r"x.numpy\(\).astype\('int64'\)"),
     ("device", r"topgrad.get_backend\(\)"),
     ("detach_", r"x = x.detach\(\)"),
     ("values", r"y.max\(axis\), which returns the values alone .*argmax"),
     ("relu_", r"x.relu_\(\) works in place; Topgrad has no in-place ops: x = x.relu\(\) makes a new tensor"),
     ("exp_", r"x = x.exp\(\)"),
     ("add_", r"x.add_\(y\) works in place; Topgrad writes x \+= y .*topgrad.no_grad\(\)"),
     ("mul_", r"x \*= y")],
)
def test_pytorch_method_names_get_the_topgrad_spelling(name: str, match: str) -> None:
    with pytest.raises(AttributeError, match=match):
        getattr(Tensor(rand((2, 3), 0)), name)


def test_an_in_place_name_gets_a_hint_only_where_its_method_exists() -> None:
    x = Tensor(rand((2,), 0))
    with pytest.raises(AttributeError, match=r"x.tanh_\(\) works in place"):
        x.tanh_  # noqa: B018
    with pytest.raises(AttributeError, match=r"^'Tensor' object has no attribute 'grad_'$"):
        x.grad_  # noqa: B018 - .grad is an attribute, not a method: no hint


def test_requires_grad_takes_true_or_false_only() -> None:
    with pytest.raises(TypeError, match=r"Tensor: requires_grad must be True or False, got 'no'"):
        Tensor([1.0], requires_grad="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got None"):
        Tensor([1.0], requires_grad=None)  # type: ignore[arg-type]
    t = Tensor([1.0], requires_grad=np.bool_(False))  # type: ignore[arg-type]
    assert t.requires_grad is False
    with pytest.raises(TypeError, match="requires_grad must be True or False, got 0"):
        t.requires_grad = 0  # type: ignore[assignment]


def test_a_list_of_trainable_tensors_points_to_stack() -> None:
    a, b = Tensor(1.0), Tensor(2.0)
    with pytest.raises(TypeError, match=r"Tensor\(a list of Tensors\).*topgrad.stack\(tensors\)"):
        Tensor([a, b])
    assert topgrad.stack([a, b]).shape == (2,)


def test_seed_is_checked_by_name() -> None:
    for seed in ("a", -1, 1.5):
        with pytest.raises(ValueError, match="randn: seed must be None or a whole number >= 0, got "
                                             + re.escape(repr(seed))):
            Tensor.randn(2, 3, seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="He: seed must be"):
        Tensor.He(3, 2, seed=-1)


# ---- operators with operands PyTorch takes or refuses ----------------------------------
def test_matmul_with_a_list_names_linear_and_the_fix(backend_name: str) -> None:
    x = Tensor(rand((2, 3), 0))
    with pytest.raises(TypeError, match=r"Linear: x must be a Tensor, got a list: make it Tensor\(x\)"):
        [[1.0, 2.0]] @ x
    with pytest.raises(TypeError, match=r"Linear: w must be a Tensor, got a list: make it Tensor\(w\)"):
        x @ [[1.0], [2.0], [3.0]]
    if backend_name == "numpy":  # a numpy array is taken, as before (the triton backend refuses one)
        assert (np.ones((4, 2), np.float32) @ x).shape == (4, 3)


def test_a_number_to_the_power_of_a_tensor_gives_the_recipe() -> None:
    x = Tensor(rand((3,), 0))
    with pytest.raises(TypeError, match=r"2 \*\* Tensor: .*c \*\* x is \(x \* math.log\(c\)\).exp\(\)"):
        2 ** x
    np.testing.assert_allclose((x * math.log(2)).exp().numpy(), 2 ** x.numpy(), rtol=1e-5)


@pytest.mark.parametrize("other", ["a", None, np.array([True, False, True])])
def test_subtracting_what_has_no_negative_is_refused(other: object) -> None:
    """x - y is x + (-y): a y with no negative is refused by name, never added instead (a bool
    mask, which PyTorch refuses to subtract too)."""
    with pytest.raises(TypeError, match=r"x - y: y is (a str|a NoneType|an ndarray) with no negative"):
        Tensor(rand((3,), 0)) - other  # type: ignore[operator]


def test_linear_hints_for_a_vector_and_a_batched_weight() -> None:
    m = Tensor(rand((3, 2), 0))
    with pytest.raises(ValueError, match=r"\(2,\).*; a 1-d w \(a matrix-vector product\) .*"
                                         r"w.reshape\(2, 1\) has "
                                         r"shape \(3, 1\)"):
        m @ Tensor(rand((2,), 1))
    a, b = rand((5, 4, 3), 2), rand((5, 3, 2), 3)
    with pytest.raises(ValueError, match=r"batched matmul.*\(x.reshape\(5, 4, 3, 1\) \* "
                                         r"w.reshape\(5, 1, 3, 2\)\)"
                                         r".sum\(axis=2\)"):
        Tensor(a) @ Tensor(b)
    recipe = (Tensor(a).reshape(5, 4, 3, 1) * Tensor(b).reshape(5, 1, 3, 2)).sum(axis=2)
    np.testing.assert_allclose(recipe.numpy(), torch.bmm(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_layernorm_given_pytorchs_normalized_shape() -> None:
    x, w, b = Tensor(rand((2, 4), 0)), Tensor(rand((4,), 1)), Tensor(rand((4,), 2))
    for shape in ((4,), 4, [4]):
        with pytest.raises(TypeError, match=r"LayerNorm: gamma must be a Tensor .*takes no normalized_shape"):
            x.layernorm(shape, w, b)  # type: ignore[arg-type]


def test_a_number_for_a_tensor_operand_reads_an_int() -> None:
    with pytest.raises(TypeError, match=r"BatchNorm: gamma must be a Tensor, got an int: "
                                       r"make it Tensor\(gamma\)"):
        Tensor(rand((4, 3), 0)).batchnorm(1, None)  # type: ignore[arg-type]


# ---- autograd ------------------------------------------------------------------------
def test_backward_with_pytorchs_keywords() -> None:
    loss = (Tensor(rand((3,), 0)) * 2.0).sum()
    with pytest.raises(TypeError, match=r"'gradient': Topgrad writes grad= \(not gradient=\)"):
        loss.backward(gradient=None)
    with pytest.raises(TypeError, match=r"retain_graph=: there is no retain_graph; .*forward pass again"):
        loss.backward(retain_graph=True)
    with pytest.raises(TypeError, match="create_graph=: there are no higher-order gradients"):
        loss.backward(create_graph=True)


def test_a_grad_set_to_a_tensor_is_named_by_backward() -> None:
    w = Tensor(rand((3,), 0))
    w.grad = Tensor.zeros(3)  # torch: w.grad = torch.zeros_like(w)
    with pytest.raises(TypeError, match=r"backward: a leaf of shape \(3,\) has a Tensor for its .grad.*"
                                        r"w.grad = None"):
        (w * w).sum().backward()
    w.grad = Tensor.zeros(3)
    with pytest.raises(TypeError, match=r"a leaf of shape \(3,\) has a Tensor"):
        w.backward(np.ones(3, np.float32))  # a leaf's own backward too


def test_no_grad_decorates_with_or_without_parentheses() -> None:
    w = Tensor(rand((3,), 0))

    @topgrad.no_grad
    def bare() -> bool:
        return (w * 2.0).requires_grad

    @topgrad.no_grad()
    def called() -> bool:
        return (w * 2.0).requires_grad

    assert bare.__name__ == "bare" and bare() is False and called() is False
    assert (w * 2.0).requires_grad  # recording again after each call
    with pytest.raises(TypeError, match="no_grad takes no arguments"):
        topgrad.no_grad(3)


# ---- torch.<name> ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "match"),
    [("randn", r"Tensor.randn\(\*shape, seed=n\)"),
     ("zeros_like", r"Tensor.zeros\(\*x.shape\)"),
     ("nn", "no module system.*topgrad_examples.loss has cross_entropy"),
     ("enable_grad", "the default: outside `with topgrad.no_grad\\(\\):`"),
     ("log_softmax", r"x.logsoftmax\(axis\)"),
     ("relu", r"the method x.relu\(...\)"),
     ("float64", "dtype='float64'")],
)
def test_pytorch_module_names_get_the_topgrad_spelling(name: str, match: str) -> None:
    assert hasattr(torch, name)
    with pytest.raises(AttributeError, match=rf"^module 'topgrad' has no attribute '{name}': in Topgrad, "
                                             rf"PyTorch's torch.{name} is .*{match}"):
        getattr(topgrad, name)


def test_each_module_hint_is_for_a_torch_name_topgrad_lacks_and_others_stay_plain() -> None:
    assert all(hasattr(torch, name) and not hasattr(topgrad, name) for name in MODULE_INSTEAD)
    with pytest.raises(AttributeError, match=r"^module 'topgrad' has no attribute 'nonsense'$"):
        topgrad.nonsense  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(topgrad, "__wrapped__")


# ---- optimizers ------------------------------------------------------------------------
def test_a_generator_given_twice_says_it_was_used_up() -> None:
    params = (Tensor(rand((3,), i)) for i in range(2))
    SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=r"empty parameter list: this generator .* gave none .*pass a list"):
        Adam(params)
    with pytest.raises(ValueError, match=r"^SGD got an empty parameter list$"):
        SGD([], lr=0.1)


def test_zero_grad_takes_pytorchs_set_to_none(backend_name: str) -> None:
    dtype = "float64" if backend_name == "numpy" else "float32"  # the triton backend holds float32
    w, v = Tensor(rand((3,), 0), dtype=dtype), Tensor(rand((2,), 1))
    opt = SGD([w, v], lr=0.1)
    (w * w).sum().backward()
    opt.zero_grad(set_to_none=False)  # as torch: a zeroed .grad where there was one
    grad = to_numpy(w.grad)
    assert grad.shape == (3,) and not grad.any() and grad.dtype == np.dtype(dtype) and v.grad is None
    opt.zero_grad(set_to_none=True)
    assert w.grad is None
    with pytest.raises(TypeError, match="zero_grad: set_to_none must be True or False, got 'yes'"):
        opt.zero_grad(set_to_none="yes")  # type: ignore[arg-type]


def test_param_groups_says_how_to_set_the_learning_rate() -> None:
    opt = SGD([Tensor(rand((3,), 0))], lr=0.1)
    with pytest.raises(AttributeError, match=r"'SGD' object has no attribute 'param_groups': .*"
                                            r"opt.lr = 0.01"):
        opt.param_groups  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match=r"^'SGD' object has no attribute 'nonsense'$"):
        opt.nonsense  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("text", ["3.0", b"3.0"])
def test_text_is_not_a_number(text: object) -> None:
    """numpy would parse '3.0' (PyTorch refuses it): a Tensor of text is refused by name."""
    with pytest.raises(TypeError, match=r"Tensor\((b?)'3.0'\): text is not a number"):
        Tensor(text)


def test_an_array_of_text_is_refused_by_the_numpy_backend(backend_name: str) -> None:
    if backend_name != "numpy":
        pytest.skip("the numpy backend's asarray")
    with pytest.raises(TypeError, match=r"an array of text \(<U3\) is not numbers.*astype\('float32'\)"):
        Tensor(np.array(["1.5", "2.0"]))
