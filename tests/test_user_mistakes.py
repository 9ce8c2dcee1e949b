"""Mistakes a PyTorch user makes with Topgrad's public API: each either does what PyTorch does or
is refused with an error that names the op, the values involved and what to write instead (not a
bare Python or numpy error from deep inside, and not a silently different result)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import rand, to_numpy
from topgrad import Tensor
from topgrad.optim import SGD, Adam, AdamW
from topgrad.pytorch_names import MODULE_INSTEAD


# ---- torch.Tensor habits -------------------------------------------------------------
def test_calling_size_as_pytorchs_method_names_shape() -> None:
    x = Tensor(rand((4, 3), 0))
    assert x.size == 12 and x.size + 1 == 13  # still numpy's element count, an int
    with pytest.raises(TypeError, match=r"x.size is the element count .*PyTorch's x.size\(\) is x.shape$"):
        x.size()
    with pytest.raises(TypeError, match=r"PyTorch's x.size\(0\) is x.shape\[0\]"):
        x.size(0)


@pytest.mark.parametrize("value", [[1.0, 2.0], np.float32(2.0), "1.0", None],
                         ids=["list", "numpy-scalar", "text", "None"])
def test_assigning_data_that_is_no_array_of_the_backend_is_refused(value: Any) -> None:
    """`x.data = ...` (PyTorch's escape hatch) takes the backend's array, as `Tensor(values).data`
    is; a list or a number was stored as it was and failed later inside some op, or in print(x)."""
    x = Tensor(rand((2,), 0))
    kept = x.data
    with pytest.raises(TypeError, match=r"^Tensor.data must be a (numpy.ndarray|torch.Tensor) \(this "
                       r"tensor's backend's array\), got .*: assign Tensor\(values, dtype=...\).data$"):
        x.data = value
    assert x.data is kept


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("make", [
    lambda a: np.matrix(a), lambda a: np.ma.masked_array(a, mask=np.eye(2, dtype=bool)),
], ids=["matrix", "masked"])
def test_assigning_an_ndarray_subclass_the_backend_does_not_keep_is_refused(
    make: Callable[[np.ndarray], np.ndarray], backend_name: str,
) -> None:
    """`x.data = np.matrix(...)` was taken on numpy: x.sum(axis=0) then had shape (1, 2), and a masked
    array's backward failed in a reshape; `Tensor(values)` makes a plain array of either."""
    x = Tensor(rand((2, 2), 0))
    kept = x.data
    what = "a plain numpy.ndarray, got numpy" if backend_name == "numpy" else r"a torch.Tensor \(this"
    with pytest.raises(TypeError, match=rf"^Tensor.data must be {what}"):
        x.data = make(rand((2, 2), 1))
    assert x.data is kept


def test_assigning_data_of_a_dtype_no_tensor_holds_is_refused(backend_name: str) -> None:
    """`x.data = <int64 array>` was taken: numpy's LayerNorm then failed with a casting error, and
    triton's LayerNorm and BatchNorm computed in integers ([-1, 0, 0, 1] for a row 0..3). Only the
    dtypes the backend makes Tensors of are taken, float16 not either."""
    x = Tensor(rand((2,), 0))
    kept = x.data
    wrong = [np.array([1, 2]), np.array([1.0, 2.0], np.float16)]
    if backend_name == "triton":
        wrong = [torch.tensor([1, 2]), torch.tensor([1.0, 2.0], dtype=torch.float64)]
    for value in wrong:
        with pytest.raises(TypeError, match=r"^Tensor.data must hold a dtype this backend makes Tensors of, "
                           r"got (int64|float16|float64) \(.*\): assign Tensor\(values, dtype=...\).data$"):
            x.data = value
        assert x.data is kept


def test_assigning_data_replaces_the_values_as_in_pytorch() -> None:
    """The backend's own array is taken as it is, of another shape too (as PyTorch's `.data`), and
    the tensor computes with it."""
    x = Tensor(rand((2,), 0))
    new = Tensor(rand((3,), 1)).data
    x.data = new
    assert x.data is new and x.shape == (3,)
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), np.full(3, 2.0, np.float32))


@pytest.mark.parametrize("data", [[[1.0, 2.0], [3.0]], [[1.0, 2.0], 3.0], ([[1.0], [2.0]], [[3.0]])])
def test_ragged_nested_lists_are_named_as_such(data: Any) -> None:
    """numpy's words were "setting an array element with a sequence. The requested array has an
    inhomogeneous shape after 1 dimensions..."; torch's differ again. One message on every backend,
    a TypeError as for other data that makes no array (PyTorch's is a ValueError)."""
    with pytest.raises(TypeError, match=r"^Tensor\(data\): the nested lists are ragged \(lists side by side "
                       r"have different lengths, as \[\[1, 2\], \[3\]\]\)"):
        Tensor(data)


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
     ("mul_", r"x \*= y"),
     ("clamp_", r"x.clamp_\(\) works in place; Topgrad has no in-place ops, and PyTorch's x.clamp is a "
                r"composition"),  # a name with a hint but no method: the hint, not a bare error
     ("pow_", r"x.pow is x \*\* n")],
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
    with pytest.raises(TypeError, match=r"Linear: b must be a Tensor, got a float: make it Tensor\(b\)"):
        x.linear(Tensor(rand((3, 2), 1)), 0.5)
    if backend_name == "numpy":  # a numpy array is taken, as before (the triton backend refuses one)
        assert (np.ones((4, 2), np.float32) @ x).shape == (4, 3)


def test_a_number_to_the_power_of_a_tensor_gives_the_recipe() -> None:
    x = Tensor(rand((3,), 0))
    with pytest.raises(TypeError, match=r"2 \*\* Tensor: .*c \*\* x is \(x \* math.log\(c\)\).exp\(\)"):
        2 ** x
    np.testing.assert_allclose((x * math.log(2)).exp().numpy(), 2 ** x.numpy(), rtol=1e-5)


@pytest.mark.parametrize("other", ["a", None])
def test_subtracting_what_has_no_negative_is_refused(other: object) -> None:
    """x - y is x + (-y): a y with no negative is refused by name, never added instead."""
    with pytest.raises(TypeError, match=r"x - y: y is (a str|a NoneType) with no negative"):
        Tensor(rand((3,), 0)) - other  # type: ignore[operator]


MASK = np.array([True, False, True])


@pytest.mark.parametrize(
    ("subtract", "match"),
    [(lambda x: MASK - x, r"x is a numpy.ndarray of bools"),
     (lambda x: x - MASK, r"y is a numpy.ndarray of bools"),
     (lambda x: True - x, r"x is a bool \(True\)"),
     (lambda x: x - False, r"y is a bool \(False\)"),
     (lambda x: np.True_ - x, r"x is a bool \(np.True_\)"),
     (lambda x: x - np.True_, r"y is a bool \(np.True_\)"),
     (lambda x: torch.tensor(MASK) - x, r"x is a torch.Tensor of bools")],
)
def test_subtracting_a_bool_is_refused_on_either_side_as_in_pytorch(subtract: Any, match: str,
                                                                     backend_name: str) -> None:
    """PyTorch refuses `-` with a bool tensor or a bool on either side (`mask - x` computed before,
    while `x - mask` was refused): both sides say so, with the way to invert or convert a mask."""
    x = Tensor(rand((3,), 0))
    with pytest.raises(TypeError, match=r"^x - y: " + match + r": subtraction, the `-` operator, with a bool "
                                        r"is not supported, as in PyTorch. To invert a (mask, use ~mask|"
                                        r"bool, use `not b`).*(mask.float\(\)|mask.astype\('float32'\)|"
                                        r"float\(b\))"):  # torch's, numpy's, Python's
        subtract(x)
    with pytest.raises(TypeError, match=r"y is a bool \(True\)"), topgrad.no_grad():
        x -= True
    hows = [lambda x: 1 - x, lambda x: 1.0 - x, lambda x: x - 1, lambda x: np.float32(2) - x]
    if backend_name == "numpy":  # the triton backend takes no raw numpy arrays
        hows += [lambda x: MASK.astype(np.float32) - x, lambda x: x - MASK.astype(np.float32)]
    for how in hows:
        how(x).sum().backward()  # numbers and float arrays subtract as before


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
    with pytest.raises(TypeError, match=r"^Topgrad's Tensor.backward\(\) does not take retain_graph=True "
                                        r"\(PyTorch's graph kept .*\): there is no retain_graph; "
                                        r".*forward pass again"):
        loss.backward(retain_graph=True)
    with pytest.raises(TypeError, match=r"create_graph=True \(.*\): there are no higher-order gradients"):
        loss.backward(create_graph=True)


def test_a_grad_set_to_a_tensor_is_named_by_backward() -> None:
    """Refused where it is set (torch: w.grad = torch.zeros_like(w)); one that got past the
    property (w._grad) is still named by backward."""
    w = Tensor(rand((3,), 0))
    with pytest.raises(TypeError, match=r"a Tensor's .grad holds the backend's array .*w.grad = None"):
        w.grad = Tensor.zeros(3)
    w._grad = Tensor.zeros(3)
    with pytest.raises(TypeError, match=r"backward: a leaf of shape \(3,\) has a Tensor for its .grad.*"
                                        r"w.grad = None"):
        (w * w).sum().backward()
    w._grad = Tensor.zeros(3)
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


def test_no_grad_on_a_generator_runs_each_step_without_grad_as_torch_does() -> None:
    """The decorator returned the generator while still inside `with no_grad()`, so the body ran
    later with grad on and built a graph. As torch.no_grad: each step runs without grad, and the
    caller's code between steps keeps its own mode; send, throw and the return value pass."""
    w = Tensor(rand((3,), 0))
    seen: list[bool] = []

    @topgrad.no_grad
    def steps(n: int) -> Any:
        for _ in range(n):
            sent = yield w * 2.0
            seen.append((w * 2.0).requires_grad)
            if sent == "fail":
                try:
                    yield None
                except ValueError:
                    yield (w * 3.0).requires_grad
        return "done"

    made = []
    for y in steps(2):
        made.append(y.requires_grad)
        assert (w * 2.0).requires_grad  # the caller's code between steps records
    assert made == [False, False] and seen == [False, False]
    gen = steps(1)
    next(gen)
    gen.send("fail")
    assert gen.throw(ValueError()) is False  # thrown in, handled under no_grad
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done" and steps.__name__ == "steps"
    closed: list[bool] = []

    @topgrad.no_grad
    def cleans_up() -> Any:
        try:
            yield 1
        finally:  # close() runs it, under no_grad too
            closed.append((w * 2.0).requires_grad)

    gen = cleans_up()
    next(gen)
    gen.close()
    assert closed == [False] and (w * 2.0).requires_grad


# ---- torch.<name> ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "match"),
    [("randn", r"Tensor.randn\(\*shape, seed=n\)"),
     ("zeros_like", r"Tensor.zeros\(\*x.shape, requires_grad=False\)"),
     ("nn", "no module system.*topgrad_examples.loss has cross_entropy"),
     ("enable_grad", "the default: outside `with topgrad.no_grad\\(\\):`"),
     ("log_softmax", r"x.logsoftmax\(axis\)"),
     ("relu", r"the method x.relu\(...\)"),
     ("float64", "dtype='float64'"),
     ("save", r"np.savez\(path, .*'Saving and loading weights'"),
     ("load", r"w.data = Tensor\(saved\[name\], dtype=...\).data for each parameter, in its shape and dtype"),
     ("argmax", r"x.numpy\(\).argmax\(axis\)")],
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


def test_calling_the_tensor_module_as_torch_tensor_says_what_to_write() -> None:
    """`topgrad.tensor([1.0, 2.0])`, PyTorch's most common call, gave "'module' object is not
    callable": topgrad.tensor is the engine's module, so the package's hint never ran. The module
    still imports, and pickled Tensors (which name it) still load."""
    import pickle

    import topgrad.tensor as engine
    from topgrad.tensor import Tensor as EngineTensor

    with pytest.raises(TypeError, match=r"^topgrad.tensor is the engine's module, not a function: in "
                       r"Topgrad, PyTorch's torch.tensor\(data\) is Tensor\(data, requires_grad=False\)"):
        topgrad.tensor([1.0, 2.0])  # type: ignore[operator]
    assert engine is topgrad.tensor and EngineTensor is Tensor
    t = pickle.loads(pickle.dumps(Tensor([1.0, 2.0])))
    assert type(t) is Tensor and t.numpy().tolist() == [1.0, 2.0]


# ---- optimizers ------------------------------------------------------------------------
def test_a_parameter_group_says_there_are_none() -> None:
    with pytest.raises(TypeError, match=r"got a dict \(PyTorch's parameter group\): there are no parameter "
                                        r"groups; use one Adam per group"):
        Adam([{"params": [Tensor(rand((3,), 0))], "lr": 0.1}])


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


def test_an_array_of_text_is_refused_by_either_backend() -> None:
    with pytest.raises(TypeError, match=r"^(numpy|triton) backend: an array of text \(<U3\) is not numbers.*"
                                        r"astype\('float32'\)"):
        Tensor(np.array(["1.5", "2.0"]))


@pytest.mark.parametrize("data", [np.array(["2020-01-01"], dtype="datetime64[D]"),
                                  np.array([5], "timedelta64[s]"), [np.datetime64("2020-01-01")]])
def test_dates_and_time_spans_are_not_numbers(data: Any) -> None:
    """numpy reads a date as its count of days since 1970 (18262.0); PyTorch refuses it."""
    with pytest.raises(TypeError, match=r"^(numpy|triton) backend: (datetime|timedelta)64\[\w\] values are "
                                        r"dates or durations, not numbers \(PyTorch refuses them too\)"):
        Tensor(data)


@pytest.mark.parametrize("data", [["1", "2.5"], [[b"1"], [b"2"]], ["1", 2.0], ("1",), [[1.0], ["2"]]])
def test_a_list_of_text_is_refused_as_in_pytorch(data: Any) -> None:
    """numpy parses ['1', '2.5'] into numbers (PyTorch refuses it): a list or tuple holding text is
    refused, on either backend, in the words Tensor('3.0') and an array of text get."""
    with pytest.raises(TypeError, match=r"^(numpy|triton) backend: a (list|tuple) of text "
                                        r"\((b?)'[\d.]+', ...\) is not numbers \(PyTorch refuses it too\); "
                                        r"parse it first: np.asarray\(data\).astype\('float32'\)"):
        Tensor(data)
    with pytest.raises(TypeError, match="of text"):
        (Tensor(rand((2,), 0)) * 2.0).sum().backward(["1"])  # a seed of text too


def test_lists_of_numbers_and_bools_keep_their_values() -> None:
    cases = [([1, 2.5], [1.0, 2.5]), ([[True], [False]], [[1.0], [0.0]]), ((np.float32(1.5),), [1.5]),
             ([2**24 + 1], [2.0**24]), ([], np.zeros(0))]
    for data, want in cases:
        np.testing.assert_array_equal(Tensor(data).numpy(), np.asarray(want, dtype=np.float32))
    with pytest.raises(TypeError, match=r"Tensor\(a list of Tensors\).*topgrad.stack"):
        Tensor([Tensor(1.0), Tensor(2.0)])


# ---- PyTorch's options that Topgrad lacks ----------------------------------------------
def _conv_inputs() -> tuple[Tensor, Tensor]:
    return Tensor(rand((1, 6, 6, 4), 0)), Tensor(rand((3, 3, 4, 2), 1))


def _params() -> list[Tensor]:
    return [Tensor(rand((3,), 0))]


@pytest.mark.parametrize(
    ("call", "match"),
    [(lambda: Tensor([1.0], device="cpu"),
      r"Tensor\(\) does not take device='cpu' \(PyTorch's device placement\): .*topgrad.set_backend\(name\)"),
     (lambda: Tensor([1.0], pin_memory=True), r"Tensor\(\) does not take pin_memory=True .*drop pin_memory="),
     (lambda: Tensor.zeros(2, dtype="float64"),
      r"Tensor.zeros\(\) does not take dtype='float64' \(PyTorch's result dtype\): .*"
      r"Tensor\(t.numpy\(\), dtype='float64'\)"),
     (lambda: Tensor.ones(2, device="cuda"), r"Tensor.ones\(\) does not take device='cuda'"),
     (lambda: Tensor.randn(2, generator=np.random.default_rng(0)),
      r"Tensor.randn\(\) does not take generator=.* \(PyTorch's random number generator\): give seed=n"),
     (lambda: Tensor.randn(2, device="cpu", seed=-1), r"Tensor.randn\(\) does not take device='cpu'"),
     (lambda: Tensor.He(3, 2, layout="sparse"), r"Tensor.He\(\) does not take layout='sparse'"),
     (lambda: Tensor(rand((2, 3), 0)).softmax(1, dtype="float64"),
      r"Tensor.softmax\(\) does not take dtype='float64'"),
     (lambda: topgrad.cat([Tensor.ones(2)] * 2, out=Tensor.ones(4)),
      r"cat\(\) does not take out=.*ops return a new tensor: write y = ... instead of out=y"),
     (lambda: _conv_inputs()[0].conv2d(_conv_inputs()[1], dilation=2),
      r"Tensor.conv2d\(\) does not take dilation=2 \(PyTorch's dilated kernel\): .*dense kernel of shape "
      r"\(2\*\(kh-1\)\+1, 2\*\(kw-1\)\+1, Cin, Cout\)"),
     (lambda: _conv_inputs()[0].conv2d(_conv_inputs()[1], groups=2),
      r"Tensor.conv2d\(\) does not take groups=2 \(PyTorch's grouped convolution\): .*topgrad.cat"),
     (lambda: _conv_inputs()[0].maxpool2d(2, ceil_mode=True),
      r"Tensor.maxpool2d\(\) does not take ceil_mode=True .*extend x at the bottom and right with -inf"),
     (lambda: _conv_inputs()[0].maxpool2d(2, return_indices=True),
      r"Tensor.maxpool2d\(\) does not take return_indices=True .*argmax"),
     (lambda: _conv_inputs()[0].maxpool2d(2, dilation=(2, 1)), r"Tensor.maxpool2d\(\) does not take "
                                                                r"dilation=\(2, 1\)"),
     (lambda: Adam(_params(), amsgrad=True),
      r"Adam\(\) does not take amsgrad=True \(PyTorch's AMSGrad variant\)"),
     (lambda: Adam(_params(), 1e-3, (0.9, 0.999), 1e-8, 0.0, True), r"Adam\(\) does not take amsgrad=True"),
     (lambda: AdamW(_params(), maximize=True),
      r"AdamW\(\) does not take maximize=True .*\(-objective\).backward"),
     (lambda: Adam(_params(), fused=True), r"Adam\(\) does not take fused=True .*adam_update"),
     (lambda: SGD(_params(), lr=0.1, foreach=True), r"SGD\(\) does not take foreach=True"),
     (lambda: SGD(_params(), lr=0.1, differentiable=True), r"SGD\(\) does not take differentiable=True"),
     (lambda: Adam(_params(), decoupled_weight_decay=True),
      r"Adam\(\) does not take decoupled_weight_decay=True .*use topgrad.optim.AdamW")],
)
def test_pytorch_options_topgrad_lacks_say_what_to_write(call: Callable[[], Any], match: str) -> None:
    """Each was a bare "got an unexpected keyword argument": now the error names Topgrad's function,
    the option and its value, what it is in PyTorch and what to write instead."""
    with pytest.raises(TypeError, match=r"^Topgrad's " + match):
        call()


def test_pytorchs_defaults_of_those_options_are_taken() -> None:
    """Spelled out at PyTorch's default, an option Topgrad lacks means what Topgrad does: taken."""
    x, w = _conv_inputs()
    assert Tensor([1.0], device=None, pin_memory=False).shape == (1,)
    assert Tensor.zeros(2, dtype=None).dtype == Tensor.ones(2, dtype="float32", layout=None).dtype
    same = np.testing.assert_array_equal
    same(Tensor.randn(2, seed=3, generator=None).numpy(), Tensor.randn(2, seed=3).numpy())
    same(x.conv2d(w, dilation=1, groups=1).numpy(), x.conv2d(w).numpy())
    pooled = x.maxpool2d(2, dilation=(1, 1), ceil_mode=False, return_indices=False)
    same(pooled.numpy(), x.maxpool2d(2).numpy())
    q = Tensor(rand((1, 3, 4), 2))
    same(topgrad.attention(q, q, q, attn_mask=None, dropout_p=0.0, scale=None, causal=True).numpy(),
         topgrad.attention(q, q, q, causal=True).numpy())
    (q * 2.0).sum().backward(retain_graph=False, create_graph=False, inputs=None)
    (q * 2.0).sum().backward(retain_graph=None)  # torch's own default
    for spelling in (np.float32, "float32", "f4", torch.float32):  # numpy's and torch's names for float32
        same(Tensor.zeros(2, dtype=spelling).numpy(), Tensor.zeros(2).numpy())
    Adam(_params(), decoupled_weight_decay=False)
    Adam(_params(), amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
         fused=None)
    AdamW(_params(), 1e-3, (0.9, 0.999), 1e-8, 1e-2, False, foreach=False, fused=False)
    SGD(_params(), lr=0.1, maximize=False, foreach=False, differentiable=False, fused=None)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'devise'; Topgrad's Tensor.zeros\(\) "
                                        r"does not take device='cpu'"):
        Tensor.zeros(2, devise=None, device="cpu")  # a typo stays Python's error, named first


def test_factories_take_requires_grad_as_pytorch_spells_it() -> None:
    """torch.randn(3, requires_grad=True) ported: the default already (a trainable leaf), and
    requires_grad=False makes a constant, as for Tensor(data)."""
    assert Tensor.randn(2, 3, requires_grad=True).requires_grad and Tensor.He(3, 2, seed=0).requires_grad
    for t in (Tensor.zeros(2, requires_grad=False), Tensor.ones(2, requires_grad=False),
              Tensor.randn(2, seed=0, requires_grad=False), Tensor.He(3, 2, seed=0, requires_grad=False)):
        assert t.requires_grad is False and t.op is None
    with pytest.raises(TypeError, match="ones: requires_grad must be True or False, got 'no'"):
        Tensor.ones(2, requires_grad="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(2**63,), (2**40, 2**30)])
def test_a_shape_too_large_for_any_array_is_refused_in_topgrads_words(shape: tuple[int, ...]) -> None:
    """On triton torch's overflow came through with its C++ frames ("Overflow when unpacking long
    long ... frame #0: c10::Error"); numpy said "Maximum allowed dimension exceeded"."""
    for make in (Tensor.zeros, Tensor.ones, Tensor.randn):
        with pytest.raises(ValueError, match=r"shape \(.*\) holds .* elements, more than any array can"):
            make(*shape)


def test_a_padding_too_large_for_any_array_is_refused_in_topgrads_words() -> None:
    """conv2d(padding=2**31) on triton leaked torch's overflow with its C++ frames."""
    x, w = Tensor(np.ones((1, 4, 4, 2), np.float32)), Tensor(np.ones((3, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"^Conv2d: padding \(2147483648, 2147483648\) makes .* values of "
                       r"padded images, more than any array can hold"):
        x.conv2d(w, padding=2**31)


def test_the_grouped_convolution_recipe_gives_pytorchs_answer() -> None:
    """groups=2's message says to convolve each group apart and join them: that is F.conv2d's."""
    g, cin, cout = 2, 4, 6
    xa, wa, ba = rand((2, 5, 5, cin), 0), rand((3, 3, cin // g, cout), 1), rand((cout,), 2)
    x, w, b = Tensor(xa), Tensor(wa), Tensor(ba)
    c, o = cin // g, cout // g
    ours = topgrad.cat([x[..., i * c:(i + 1) * c].conv2d(w[..., i * o:(i + 1) * o], stride=2, padding=1)
                        for i in range(g)], axis=3) + b
    nchw, oihw = torch.tensor(xa).permute(0, 3, 1, 2), torch.tensor(wa).permute(3, 2, 0, 1)
    theirs = torch.nn.functional.conv2d(nchw, oihw, torch.tensor(ba), stride=2, padding=1, groups=g)
    np.testing.assert_allclose(ours.numpy(), theirs.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-5)
    ours.sum().backward()
    assert w.grad is not None and to_numpy(w.grad).shape == w.shape


def test_step_takes_pytorchs_closure() -> None:
    """opt.step(closure) as in PyTorch: the closure recomputes the loss and its gradients, and step
    returns the loss; the update is the one torch.optim makes."""
    a = rand((3,), 0)
    w, tw = Tensor(a), torch.tensor(a, requires_grad=True)
    opt, topt = SGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    def torch_closure() -> torch.Tensor:
        topt.zero_grad()
        loss = (tw * tw).sum()
        loss.backward()
        return loss

    for _ in range(2):
        loss, tloss = opt.step(closure), topt.step(torch_closure)
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-5)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5)
    assert opt.step() is None
    topt.step()  # the same extra step, from the same gradients
    with topgrad.no_grad():  # torch.optim runs the closure with gradients on (enable_grad)
        assert opt.step(closure).item() == pytest.approx(topt.step(torch_closure).item(), rel=1e-5)
    with pytest.raises(TypeError, match=r"SGD.step: closure must be a function that recomputes the loss "
                                        r".*got str"):
        opt.step("loss")  # type: ignore[arg-type]


# ---- .grad of a tensor that is not a leaf ----------------------------------------------
def test_reading_grad_of_a_non_leaf_warns_as_in_pytorch() -> None:
    """Only leaves get a .grad (PyTorch's non-leaf tensors too, without retain_grad()): reading a
    computed tensor's warns, naming its op and where its gradient is seen; leaves, constants and a
    .grad set by hand read as before, without a word."""
    x = Tensor(rand((3,), 0))
    h = x * 2.0
    h.sum().backward()
    with pytest.warns(UserWarning, match=r"^The .grad of a Tensor that is not a leaf \(computed by Mul\) is "
                                         r"being read: .*Topgrad has no retain_grad\). .*Observer "
                                         r".*after_backward .*docs/inspecting.md") as caught:
        assert h.grad is None
    assert caught[0].filename == __file__  # the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(to_numpy(x.grad), np.full(3, 2.0, np.float32))
        assert Tensor(rand((3,), 1), requires_grad=False).grad is None
        with topgrad.no_grad():
            assert (x * 2.0).grad is None  # a constant, not in the graph
        h.grad = x.grad
        assert h.grad is x.grad


@pytest.mark.parametrize("data", [[1.0, None], [[1.0], [None]], (None, 2)])
def test_none_in_a_list_is_refused_not_made_nan(data: Any) -> None:
    """numpy makes None a NaN, which then trains silently; PyTorch refuses it: so does every backend."""
    with pytest.raises(TypeError, match=r"^(numpy|triton) backend: a (list|tuple) holding None is not "
                                        r"numbers \(PyTorch refuses it too"):
        Tensor(data)


def test_an_object_array_is_refused_by_either_backend() -> None:
    """triton made np.array([1, None], dtype=object) a NaN; numpy refused it."""
    with pytest.raises(TypeError, match=r"^(numpy|triton) backend: object arrays are not supported"):
        Tensor(np.array([1, None], dtype=object))


# ---- arguments an audit found taken silently ------------------------------------------------------
@pytest.mark.parametrize("axis", [np.array(1.7), np.array(True), (np.array(2.9),), np.array([0, 1])])
def test_an_array_that_is_no_axis_is_refused(axis: Any) -> None:
    """A 0-d float or bool array has __index__ too, and int() truncated it: sum(axis=np.array(1.7))
    reduced axis 1. PyTorch refuses it; so does Topgrad now, naming the op."""
    y = Tensor.randn(2, 3, 4, seed=0)
    for name in ("sum", "mean", "max"):
        with pytest.raises(TypeError, match=r"axis must be None, an int or a tuple of ints"):
            getattr(y, name)(axis=axis)
    assert y.sum(axis=np.array(1)).shape == y.sum(axis=np.int64(1)).shape == (2, 4)


def test_bool_sizes_text_seeds_and_a_float_flatten_start_are_refused() -> None:
    """Tensor.zeros(True, 3) was (1, 3), reshape(True, 24) and flatten(True) took True for 1,
    backward('2') parsed the text, and flatten(1.0) failed inside slicing; PyTorch refuses each."""
    y = Tensor.randn(2, 3, 4, seed=0)
    with pytest.raises(ValueError, match=r"^zeros: shape \(True, 3\): every size must be a whole number >= "):
        Tensor.zeros(True, 3)
    with pytest.raises(ValueError, match=r"^reshape: shape \(True, 24\): every size must be a whole number"):
        y.reshape(True, 24)
    for make in (Tensor.ones, Tensor.randn, Tensor.He):  # each names itself
        with pytest.raises(ValueError, match=rf"^{make.__name__}: shape \(2.5,\)"):
            make(2.5)
    for start in (True, 1.0, None):
        with pytest.raises(TypeError, match=r"^flatten: start must be an int \(an axis\)"):
            y.flatten(start)
    x = Tensor([1.0, 2.0])
    for seed in ("2", b"4"):
        with pytest.raises(TypeError, match=r"^backward: grad must be a Tensor, an array or a number"):
            (x * 3.0).sum().backward(seed)
    assert x.grad is None
    assert Tensor([1.0, 2.0], dtype=None).dtype == Tensor([1.0, 2.0]).dtype  # PyTorch's None: the default


def test_subtracting_a_python_bool_advises_pythons_calls() -> None:
    """~True is -2 and a bool has no .astype: a Python bool is told `not b` and float(b)."""
    x = Tensor(rand((3,), 0))
    for subtract in (lambda: True - x, lambda: x - False):
        with pytest.raises(TypeError, match=r"To invert a bool, use `not b`; .* float\(b\) \(1.0 for True\)"):
            subtract()
