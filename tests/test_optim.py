"""Optimizers against torch.optim: identical parameters and gradients, several steps, 1e-4."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import assert_close, rand, to_numpy, topgrad_warns_nothing
from topgrad import Tensor
from topgrad.optim import SGD, Adam, AdamW

SHAPES = [(4, 3), (3,), (2, 2, 2)]
STEPS = 5

# name -> (topgrad optimizer, torch optimizer, keyword arguments both accept)
CASES: dict[str, tuple[type, type, dict[str, Any]]] = {
    "sgd": (SGD, torch.optim.SGD, {"lr": 0.1}),
    "sgd small lr": (SGD, torch.optim.SGD, {"lr": 1e-5}),
    "sgd momentum": (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "sgd momentum dampening": (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    "sgd nesterov": (SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    "sgd weight decay": (SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.01}),
    "sgd everything": (
        SGD,
        torch.optim.SGD,
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.1, "nesterov": True},
    ),
    "sgd small lr momentum": (SGD, torch.optim.SGD, {"lr": 1e-5, "momentum": 0.9}),
    "adam": (Adam, torch.optim.Adam, {"lr": 1e-3}),
    "adam defaults": (Adam, torch.optim.Adam, {}),
    "adam small lr": (Adam, torch.optim.Adam, {"lr": 1e-5}),
    "adam betas eps": (Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6}),
    "adam weight decay": (Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    "adamw": (AdamW, torch.optim.AdamW, {"lr": 0.01}),
    "adamw defaults": (AdamW, torch.optim.AdamW, {}),
    "adamw small lr": (AdamW, torch.optim.AdamW, {"lr": 1e-5, "weight_decay": 0.1}),
    "adamw no weight decay": (AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.0}),
    "adamw strong weight decay": (AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.5}),
}


def _set_grad(p: Tensor, g: np.ndarray) -> None:
    p.grad = topgrad.get_backend().asarray(g)


def _run_both(case: str, grads_for_step: Callable[[int, int], np.ndarray | None]) -> None:
    """Step both optimizers STEPS times with the same gradients; compare parameters each step."""
    top_cls, torch_cls, kwargs = CASES[case]
    inits = [rand(shape, i) for i, shape in enumerate(SHAPES)]
    params = [Tensor(a) for a in inits]
    torch_params = [torch.tensor(a, requires_grad=True) for a in inits]
    opt, ref = top_cls(params, **kwargs), torch_cls(torch_params, **kwargs)
    for step in range(STEPS):
        opt.zero_grad()
        ref.zero_grad()
        for i, (p, tp) in enumerate(zip(params, torch_params)):
            g = grads_for_step(step, i)
            if g is not None:
                _set_grad(p, g)
                tp.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        for i, (p, tp) in enumerate(zip(params, torch_params)):
            assert_close(p, tp, f"{case}: parameter {i} after step {step + 1}")
            _assert_same_move(p, tp, inits[i], f"{case}: parameter {i}'s move after step {step + 1}")


def _assert_same_move(p: Tensor, tp: torch.Tensor, init: np.ndarray, what: str) -> None:
    """The distance a parameter moved from `init`, against torch's. At lr=1e-5 five steps move a
    parameter ~5e-5, under the 1e-4 of `assert_close` on the parameter: an optimizer that never
    moved passed. The move is float32 arithmetic on parameters of |p| <= 4: each step may round a
    parameter one ulp otherwise than torch's (a fused multiply-add), hence 8 ulps of the largest
    |p| as slack (~2e-6, far below the smallest move checked); beyond it, 1e-4 of the move."""
    moved = to_numpy(p).astype(np.float64) - init
    moved_ref = to_numpy(tp).astype(np.float64) - init
    slack = 8 * float(np.spacing(np.abs(init).max()))
    assert_close(moved, moved_ref, what, rtol=1e-4, atol=slack)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch(case: str) -> None:
    _run_both(case, lambda step, i: rand(SHAPES[i], 100 * step + i + 50))


@pytest.mark.parametrize("case", ["sgd momentum", "adam", "adamw"])
def test_parameters_without_gradient_are_left_alone(case: str) -> None:
    """A parameter whose grad is None on some steps is skipped on those steps, as in torch."""

    def grads(step: int, i: int) -> np.ndarray | None:
        return None if (i == 1 and step % 2 == 0) else rand(SHAPES[i], 100 * step + i)

    _run_both(case, grads)


@pytest.mark.parametrize("case", ["sgd", "sgd momentum", "adam", "adamw no weight decay"])
@pytest.mark.parametrize(("param", "grad"), [([np.inf, 1.0, -np.inf], [1.0, 1.0, 1.0]),
                                             ([1.0, -2.0, 0.5], [1e20, -1e20, 3e19])])
def test_infinite_parameters_and_huge_gradients_as_torch(
    case: str, param: list[float], grad: list[float]
) -> None:
    """Without weight decay the term is skipped, as in torch: the triton kernels added 0 * p and
    turned an inf parameter into NaN. Adam's (1 - beta2) * g * g in torch's order: g * g first
    overflowed float32 on the numpy backend, and a gradient of 1e20 stopped the parameter."""
    top_cls, torch_cls, kwargs = CASES[case]
    p, tp = Tensor(np.array(param, np.float32)), torch.tensor(param, dtype=torch.float32, requires_grad=True)
    opt, ref = top_cls([p], **kwargs), torch_cls([tp], **kwargs)
    for step in range(2):
        _set_grad(p, np.array(grad, np.float32))
        tp.grad = torch.tensor(grad, dtype=torch.float32)
        opt.step()
        ref.step()
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-5, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Triton's interpreter computes in numpy; not Topgrad
def test_non_finite_gradients_as_torch_and_unwarned(case: str) -> None:
    """Inf and NaN gradients make the parameters PyTorch's (NaN where Adam divides inf by inf),
    and numpy warns of nothing on the way, as PyTorch does not."""
    top_cls, torch_cls, kwargs = CASES[case]
    grad = np.array([np.inf, np.nan, -np.inf, 1.0], np.float32)
    p, tp = Tensor(np.ones(4, np.float32)), torch.ones(4, requires_grad=True)
    opt, ref = top_cls([p], **kwargs), torch_cls([tp], **kwargs)
    for step in range(2):
        _set_grad(p, grad)
        tp.grad = torch.from_numpy(grad.copy())
        with topgrad_warns_nothing():
            opt.step()
        ref.step()
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-5, equal_nan=True,
                                   err_msg=f"{case}: step {step + 1}")


def test_step_without_any_gradient_changes_nothing() -> None:
    a = rand((3,), 0)
    p = Tensor(a)
    SGD([p], lr=0.1).step()
    assert_close(p, a, "parameter", rtol=0, atol=0)


def test_parameters_change_in_the_direction_against_the_gradient() -> None:
    p = Tensor(np.zeros(3, np.float32))
    _set_grad(p, np.array([1.0, -2.0, 0.0], np.float32))
    SGD([p], lr=0.5).step()
    assert_close(p, np.array([-0.5, 1.0, 0.0], np.float32), "one plain SGD step")


def test_training_through_backward() -> None:
    """Gradients from a real backward pass; SGD with momentum and torch stay together."""
    w_np, x_np = rand((3, 2), 1), rand((5, 3), 2)
    w, tw = Tensor(w_np), torch.tensor(w_np, requires_grad=True)
    opt, ref = SGD([w], lr=0.1, momentum=0.9), torch.optim.SGD([tw], lr=0.1, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        ref.zero_grad()
        (Tensor(x_np) @ w).relu().mean().backward()
        (torch.from_numpy(x_np) @ tw).relu().mean().backward()
        opt.step()
        ref.step()
    assert_close(w, tw, "weights after four steps")


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_zero_grad_clears_every_gradient(cls: type) -> None:
    params = [Tensor(rand((2,), 0)), Tensor(rand((3,), 1))]
    opt = cls(params, lr=0.1)
    (params[0] * params[0]).sum().backward()
    (params[1] * 2.0).sum().backward()
    assert all(p.grad is not None for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_optimizer_accepts_any_iterable() -> None:
    params = [Tensor(rand((2,), 0)), Tensor(rand((2,), 1))]
    opt = SGD(iter(params), lr=0.1)
    assert opt.params == params


# ---- bad arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_negative_learning_rate(cls: type) -> None:
    with pytest.raises(ValueError, match="learning rate"):
        cls([Tensor(rand((2,), 0))], lr=-0.1)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
@pytest.mark.parametrize("lr", [float("nan"), float("inf"), "0.1", None, True])
def test_learning_rate_must_be_a_finite_number(cls: type, lr: Any) -> None:
    with pytest.raises(ValueError, match="learning rate must be a finite number"):
        cls([Tensor(rand((2,), 0))], lr=lr)


@pytest.mark.parametrize("zero_d", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_settings_given_as_0d_arrays_are_their_numbers(zero_d: Any) -> None:
    """`lr=np.load(f)["lr"]` (a 0-d array) or `torch.tensor(0.01)`: torch.optim takes both; ours
    said "learning rate must be a finite number >= 0, got array(0.01)". A 1-d array stays refused.
    (The values are exact in float32: torch.tensor makes float32.)"""
    adam = Adam([Tensor(rand((2,), 0))], lr=zero_d(0.25), betas=(zero_d(0.5), zero_d(0.75)))
    sgd = SGD([Tensor(rand((2,), 0))], lr=zero_d(0.125), momentum=zero_d(0.5))
    sgd.weight_decay = zero_d(0.25)
    settings = (adam.lr, *adam.betas, sgd.lr, sgd.momentum, sgd.weight_decay)
    assert settings == (0.25, 0.5, 0.75, 0.125, 0.5, 0.25)
    assert all(type(v) is float for v in settings)
    with pytest.raises(ValueError, match="learning rate must be a finite number"):
        SGD([Tensor(rand((2,), 0))], lr=np.array([0.1]))


@pytest.mark.parametrize(
    ("params", "hint"),
    [(Tensor(np.zeros(2, np.float32)), "wrap a single Tensor in a list"),
     ({"w": Tensor(np.zeros(2, np.float32))}, "values()"),
     (object(), "list of the Tensors")],
)
def test_parameters_not_an_iterable_of_tensors_get_a_hint(params: Any, hint: str) -> None:
    with pytest.raises(TypeError, match="iterable of Tensors") as info:
        SGD(params, lr=0.1)
    assert hint in str(info.value)


def test_a_tensor_made_by_an_op_is_not_a_parameter() -> None:
    with pytest.raises(ValueError, match="not a leaf"):
        SGD([Tensor(rand((2,), 0)) * 2.0], lr=0.1)


def test_a_parameter_given_twice_is_refused() -> None:
    """It would be updated twice per step."""
    p = Tensor(rand((2,), 0))
    with pytest.raises(ValueError, match="twice"):
        SGD([p, p], lr=0.1)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_empty_parameter_list(cls: type) -> None:
    with pytest.raises(ValueError, match="empty"):
        cls([], lr=0.1)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_parameters_must_be_tensors(cls: type) -> None:
    with pytest.raises(TypeError, match="Tensor"):
        cls([np.zeros(2, np.float32)], lr=0.1)


@pytest.mark.parametrize(
    "kwargs", [{"nesterov": True}, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}]
)
def test_nesterov_needs_momentum_and_no_dampening(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([Tensor(rand((2,), 0))], lr=0.1, **kwargs)


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9,), 0.9, ("0.9", 0.99)])
def test_betas_out_of_range(cls: type, betas: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="betas"):
        cls([Tensor(rand((2,), 0))], lr=0.1, betas=betas)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"momentum": -0.5}),
        (SGD, {"momentum": float("nan")}),
        (SGD, {"weight_decay": -1.0}),
        (Adam, {"eps": -1e-8}),
        (Adam, {"weight_decay": -0.1}),
        (AdamW, {"weight_decay": -0.1}),
    ],
)
def test_negative_hyperparameters(cls: type, kwargs: dict[str, Any]) -> None:
    """torch.optim refuses negative momentum, weight decay and eps; so does Topgrad."""
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name.replace("_", " ")):
        cls([Tensor(rand((2,), 0))], lr=0.1, **kwargs)


@pytest.mark.parametrize("case", ["sgd", "sgd momentum", "adam", "adamw"])
def test_a_step_updates_the_parameter_in_place_as_torch_optim_does(case: str) -> None:
    """A detach() taken before the step shares the parameter's storage, so it sees the new values,
    as in PyTorch, on every backend; the gradient is left as it was."""
    top_cls, torch_cls, kwargs = CASES[case]
    init = rand((3, 2), 7)
    w, tw = Tensor(init), torch.tensor(init, requires_grad=True)
    before, torch_before = w.detach(), tw.detach()
    opt, ref = top_cls([w], **kwargs), torch_cls([tw], **kwargs)
    for _ in range(2):  # the second step uses the state the first made
        g = rand((3, 2), 8)
        _set_grad(w, g)
        tw.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        assert_close(before.numpy(), torch_before.numpy(), f"{case}: the detached view after a step")
        assert_close(w.numpy(), tw.detach().numpy(), f"{case}: the parameter")
        np.testing.assert_array_equal(topgrad.get_backend().to_numpy(w.grad), g)


@pytest.mark.parametrize("case", ["sgd momentum", "adam"])
def test_a_strided_parameter_is_updated_in_place(case: str) -> None:
    """w.data = base.T: the triton backend's fused update ran on a dense copy, so `base` (and a
    w.detach() taken before the step) kept the old values; numpy's wrote through the view."""
    top_cls, torch_cls, kwargs = CASES[case]
    init = rand((3, 2), 9)
    backend = topgrad.get_backend()
    base = backend.asarray(np.ascontiguousarray(init.T))
    w, tw = Tensor(init), torch.tensor(init, requires_grad=True)
    w.data = base.T
    opt, ref = top_cls([w], **kwargs), torch_cls([tw], **kwargs)
    for _ in range(2):
        g = rand((3, 2), 10)
        _set_grad(w, g)
        tw.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        assert_close(backend.to_numpy(base).T, tw.detach().numpy(), f"{case}: the base of the view")
        assert_close(w.numpy(), tw.detach().numpy(), f"{case}: the parameter")


def test_sgd_options_after_momentum_are_keyword_only() -> None:
    """torch.optim.SGD's positional order is (lr, momentum, dampening, weight_decay, nesterov):
    `SGD(p, 0.1, 0.9, 0, 1e-4)` meant weight decay there and switched Nesterov on here."""
    w = Tensor(rand((2,), 0))
    with pytest.raises(TypeError, match=r"^SGD takes params, lr and momentum by position, and its other "
                       r"options by name only \(weight_decay=, nesterov=, dampening=\), got 2 more by "
                       r"position"):
        SGD([w], 0.1, 0.9, 0, 1e-4)
    assert SGD([w], 0.1, 0.9).momentum == 0.9
    with pytest.raises(TypeError, match=r"SGD: nesterov must be True or False, got 0\.0001"):
        SGD([w], 0.1, 0.9, nesterov=1e-4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SGD: dampening must be a finite number >= 0, got .0\.1."):
        SGD([w], 0.1, 0.9, dampening="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["sgd", "sgd momentum", "adam", "adamw"])
@pytest.mark.parametrize(("grad", "set_match", "step_match"), [
    (lambda: np.ones(4, np.float32), r"shape \(3, 4\) and float32, got shape \(4,\) and float32",
     r"parameter 0 has shape \(3, 4\) but its .grad has shape \(4,\)"),
    (lambda: np.float32(1.0), r"got a numpy.float32",
     r"must be an array of the backend '\w+', got numpy.float32"),
    (lambda: Tensor(np.ones((3, 4), np.float32)), r"a Tensor's .grad holds the backend's array",
     r"got Tensor \(.grad holds the array itself: t.data\)"),
    (lambda: torch.ones(3, 4), r"must be an array of backend 'numpy' \(numpy.ndarray\), got a torch.Tensor",
     r"got torch.Tensor"),
])
def test_a_hand_set_grad_of_another_shape_or_type_is_refused(
    case: str, grad: Any, set_match: str, step_match: str, backend_name: str
) -> None:
    """A (4,) gradient for a (3, 4) weight broadcast over every row; a Tensor or a foreign array
    failed inside the update math, if at all. As PyTorch, the assignment refuses it; the step
    still checks what reached `.grad` another way (a backend's bug)."""
    top_cls, _, kwargs = CASES[case]
    w = Tensor(np.ones((3, 4), np.float32))
    opt = top_cls([w], **kwargs)
    g = grad()
    if backend_name == "triton" and isinstance(g, torch.Tensor):
        return  # torch tensors are that backend's arrays
    g = g if not isinstance(g, np.ndarray) else topgrad.get_backend().asarray(g)
    with pytest.raises((ValueError, TypeError), match=set_match) as info:
        w.grad = g
    numpy_scalar = isinstance(g, np.generic)  # np.asarray is the fix on numpy only
    assert ("np.asarray" in str(info.value)) == (numpy_scalar and backend_name == "numpy"), info.value
    w._grad = g  # past the property's check
    with pytest.raises((ValueError, TypeError), match=step_match):
        opt.step()
    np.testing.assert_array_equal(w.numpy(), np.ones((3, 4), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.bool_])
def test_a_hand_set_grad_of_another_dtype_is_refused(dtype: Any) -> None:
    """A float64, float16, int or bool .grad on a float32 weight was taken and stepped with; PyTorch
    refuses the assignment."""
    w = Tensor(np.ones((3, 4), np.float32))
    g = np.ones((3, 4), dtype)
    says = rf"shape \(3, 4\) and float32, got shape \(3, 4\) and {np.dtype(dtype)}"
    with pytest.raises(ValueError, match=says):
        w.grad = g if topgrad.get_backend().name == "numpy" else torch.from_numpy(g)


def test_a_hand_set_grad_on_another_device_is_refused(backend_name: str) -> None:
    """A .grad on another device than its tensor's (a CPU array for a GPU weight) was taken; the
    backend then gave backward's sum a new array on the weight's device, leaving the user's behind.
    PyTorch refuses the assignment. (Torch's 'meta' device stands in for another device.)"""
    if backend_name != "triton":
        pytest.skip("numpy's arrays have one device")
    w = Tensor(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=rf"on the tensor's device, {w.data.device}; got an array on meta"):
        w.grad = torch.ones((3, 4), device="meta")
    assert w.grad is None
    w.grad = torch.zeros((3, 4), device=w.data.device)  # the same device is taken
    (w * 2.0).sum().backward()
    assert w.grad.tolist() == [[2.0] * 4] * 3


def test_the_learning_rate_is_checked_when_a_schedule_sets_it() -> None:
    opt = Adam([Tensor(rand((2,), 0))], lr=0.1)
    opt.lr = 0.05
    for bad in ("1e-3", None, -0.1, float("nan")):
        with pytest.raises(ValueError, match="Adam: learning rate must be a finite number >= 0"):
            opt.lr = bad  # type: ignore[assignment]
    assert opt.lr == 0.05


@pytest.mark.parametrize("case", ["sgd momentum", "adam", "adamw"])
def test_zero_grad_without_none_zeroes_the_grad_array_in_place_as_torch(case: str) -> None:
    """zero_grad(set_to_none=False) put a new zeros array in `.grad`, so `g = w.grad` held before it
    kept the old gradient through the next backward; torch zeroes g itself, which then sees the
    new gradient (README: "g = w.grad sees the sum"). A NaN gradient is zeroed too."""
    top_cls, torch_cls, kwargs = CASES[case]
    init, x = rand((3, 2), 7), rand((3, 2), 8)
    w, tw = Tensor(init), torch.tensor(init, requires_grad=True)
    opt, ref = top_cls([w], **kwargs), torch_cls([tw], **kwargs)
    (w * Tensor(x)).sum().backward()
    (tw * torch.from_numpy(x)).sum().backward()
    g, tg = w.grad, tw.grad
    opt.zero_grad(set_to_none=False)
    ref.zero_grad(set_to_none=False)
    assert w.grad is g and tw.grad is tg
    assert_close(g, tg, f"{case}: the held .grad after zero_grad(set_to_none=False)")
    (w * w).sum().backward()
    (tw * tw).sum().backward()
    assert w.grad is g
    assert_close(g, tg, f"{case}: the held .grad after the next backward")
    opt.step()
    ref.step()
    assert_close(w, tw, f"{case}: the parameter after a step")
    w.grad = topgrad.get_backend().asarray(np.full((3, 2), np.nan, np.float32))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(to_numpy(w.grad), np.zeros((3, 2), np.float32))


def test_a_graph_that_saved_a_grad_zeroed_in_place_refuses_its_backward_as_torch() -> None:
    """A constant sharing `.grad`'s memory, used in a forward before zero_grad(set_to_none=False)
    zeroes that memory: its backward would use zeros; torch's version counter refuses it."""
    w, tw = Tensor(rand((3,), 1)), torch.tensor(rand((3,), 1), requires_grad=True)
    (w * 2.0).sum().backward()
    (tw * 2.0).sum().backward()
    x, tx = Tensor(rand((3,), 2)), torch.tensor(rand((3,), 2), requires_grad=True)
    y = (Tensor(w.grad, requires_grad=False) * x).sum()
    ty = (tw.grad * tx).sum()
    SGD([w], lr=0.1).zero_grad(set_to_none=False)
    torch.optim.SGD([tw], lr=0.1).zero_grad(set_to_none=False)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        ty.backward()
    with pytest.raises(RuntimeError, match=r"the .grad of a leaf of shape \(3,\), which was written "
                       r".*zero_grad\(set_to_none=False\) zeroes it in place"):
        y.backward()


def test_the_default_zero_out_gives_new_zeros_of_the_arrays_dtype() -> None:
    """What a third-party backend inherits: zeros of the array's shape and dtype (not a * 0, which
    keeps NaN), in a new array."""
    from types import SimpleNamespace

    from topgrad.backend import Backend

    backend = topgrad.get_backend()
    helpers = SimpleNamespace(asarray=backend.asarray, zeros=backend.zeros)
    dtypes = ["float32", "float64"] if backend.name == "numpy" else ["float32"]
    for dtype in dtypes:
        a = backend.asarray(np.array([np.nan, np.inf, -2.0]), dtype=dtype)
        zeros = Backend.zero_out(helpers, a)  # type: ignore[arg-type]
        assert zeros is not a and backend.memory_key(zeros) != backend.memory_key(a)
        assert str(zeros.dtype).removeprefix("torch.") == dtype
        np.testing.assert_array_equal(backend.to_numpy(zeros), np.zeros(3))
        assert np.isnan(backend.to_numpy(a)[0])


@pytest.mark.parametrize(("cls", "update"), [(SGD, "sgd_update"), (Adam, "adam_update")])
def test_a_backend_update_that_changes_a_parameters_dtype_is_refused(
    cls: type, update: str, backend_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backend whose update returned float64 for a float32 parameter (Backend.adam_update does, where
    the backend's zeros are float64) turned the model float64 with no word, where torch.optim's steps
    keep each parameter's dtype. The step refuses it, naming the update, before the parameter and
    its state are assigned."""
    if backend_name != "numpy":
        pytest.skip("the refusal is the optimizer's; a numpy update stands in for any backend's")
    backend = topgrad.get_backend()
    original = getattr(backend, update)

    def widening(param: Any, *args: Any, **settings: Any) -> tuple[Any, ...]:
        new, *state = original(param, *args, **settings)
        return (new.astype(np.float64) if new.ndim == 1 else new, *state)  # the bias only: parameter 1

    monkeypatch.setattr(backend, update, widening)
    w, b = Tensor(rand((3, 4), 0)), Tensor(rand((4,), 1))
    opt = cls([w, b], lr=0.1)
    w.grad, b.grad = np.ones((3, 4), np.float32), np.ones(4, np.float32)
    with pytest.raises(TypeError, match=re.escape(
            f"{cls.__name__}.step: backend 'numpy''s {update} returned parameter 1 as float64, given it as "
            "float32 with .grad float32")):
        opt.step()
    assert b.dtype == np.float32 and w.dtype == np.float32
    assert opt.state[1].get("step", 0) == 0  # Adam's count is not advanced (SGD without momentum keeps none)


# (optimizer, its settings, the setting changed, a value refused, what the refusal says)
REFUSED_SETTINGS = [
    (Adam, {}, "eps", -1.0, ValueError, r"Adam: eps must be a finite number >= 0, got -1\.0"),
    (Adam, {}, "eps", float("inf"), ValueError, r"Adam: eps must be a finite number >= 0, got inf"),
    (AdamW, {}, "betas", (1.5, 0.9), ValueError, r"AdamW: betas must be two numbers in \[0, 1\), got \(1\.5"),
    (Adam, {}, "betas", (0.9,), ValueError, r"Adam: betas must be two numbers in \[0, 1\), got \(0\.9,\)"),
    (Adam, {}, "betas", None, ValueError, "betas must be two numbers"),
    (Adam, {}, "weight_decay", -1, ValueError, r"Adam: weight decay must be a finite number >= 0, got -1"),
    (SGD, {"momentum": 0.9}, "momentum", -0.5, ValueError, "SGD: momentum must be a finite number >= 0"),
    (SGD, {"momentum": 0.9}, "momentum", "0.5", ValueError, "SGD: momentum must be a finite number >= 0"),
    (SGD, {}, "weight_decay", float("nan"), ValueError, "SGD: weight decay must be a finite number >= 0"),
    (SGD, {"momentum": 0.9}, "dampening", -0.1, ValueError, "SGD: dampening must be a finite number >= 0"),
    (SGD, {"momentum": 0.9}, "nesterov", 1, TypeError, "SGD: nesterov must be True or False, got 1"),
    (SGD, {}, "nesterov", True, ValueError, "SGD: Nesterov momentum needs momentum > 0 and dampening 0"),
    (SGD, {"momentum": 0.9, "nesterov": True}, "momentum", 0.0, ValueError, "Nesterov momentum needs"),
    (SGD, {"momentum": 0.9, "nesterov": True}, "dampening", 0.1, ValueError, "Nesterov momentum needs"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name", "value", "error", "says"), REFUSED_SETTINGS)
def test_every_setting_is_checked_when_set_as_by_the_constructor(
    cls: type, kwargs: dict[str, Any], name: str, value: Any, error: type, says: str
) -> None:
    """Only lr was checked after construction: `opt.eps = -1.0` was taken, `opt.betas = (0.9,)`
    crashed in step with an IndexError, and the state saved then did not load. Each setting is
    refused as the constructor refuses it, and nothing changes."""
    w = Tensor(rand((2,), 0))
    opt = cls([w], lr=0.1, **kwargs)
    before = opt.state_dict()
    with pytest.raises(error, match=says):
        setattr(opt, name, value)
    with pytest.raises(error, match=says):
        cls([w], lr=0.1, **{**kwargs, name: value})
    assert opt.state_dict() == before
    w.grad = topgrad.get_backend().asarray(rand((2,), 1))
    opt.step()
    cls([w], lr=0.1).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("case", ["sgd everything", "adam weight decay", "adamw"])
def test_settings_changed_between_steps_act_as_torchs(case: str) -> None:
    """Settings set after construction are the ones the next steps use, as a change of torch's
    param_groups[0] is; a list of betas is kept as a tuple of its own."""
    top_cls, torch_cls, kwargs = CASES[case]
    changes = ({"momentum": 0.8, "weight_decay": 0.2, "nesterov": False, "dampening": 0.3, "lr": 0.05}
               if top_cls is SGD else {"betas": [0.5, 0.9], "eps": 1e-3, "weight_decay": 0.3, "lr": 0.02})
    init = rand((4, 3), 3)
    w, tw = Tensor(init), torch.tensor(init, requires_grad=True)
    opt, ref = top_cls([w], **kwargs), torch_cls([tw], **kwargs)
    for step in range(4):
        if step == 2:
            for name, value in changes.items():
                setattr(opt, name, value)
                ref.param_groups[0][name] = value
        g = rand((4, 3), 10 + step)
        _set_grad(w, g)
        tw.grad = torch.from_numpy(g.copy())
        opt.step()
        ref.step()
        assert_close(w, tw, f"{case}: the parameter after step {step + 1}")
    if top_cls is not SGD:
        assert opt.betas == (0.5, 0.9)


@pytest.mark.parametrize("setting", ["lr", "momentum", "weight_decay", "dampening"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_infinite_or_nan_setting_is_refused_as_not_a_finite_number(setting: str, value: float) -> None:
    """"learning rate must be a number >= 0, got inf": inf is a number >= 0; the message said
    otherwise than what was refused."""
    name = setting.replace("_", " ").replace("lr", "learning rate")
    with pytest.raises(ValueError, match=rf"SGD: {name} must be a finite number >= 0, got {value!r}"):
        SGD([Tensor(rand((2,), 0))], **{"lr": 0.1, setting: value})


def test_a_subclass_setting_that_is_a_property_is_set_by_load_state_dict() -> None:
    """load_state_dict wrote the settings into the instance's __dict__, past a subclass's property
    (the base class's lr was one until settings were checked in __setattr__); and a subclass that
    set nesterov before SGD.__init__ crashed comparing None with 0."""

    class Logged(SGD):
        @property
        def lr(self) -> float:
            return self._lr

        @lr.setter
        def lr(self, value: float) -> None:
            self._lr = value

    w = Tensor(rand((3,), 0))
    saved = Logged([w], lr=0.8).state_dict()
    a = Logged([w], lr=0.2)
    a.load_state_dict(saved)
    assert a.lr == 0.8

    class Early(SGD):
        def __init__(self, params: Any) -> None:
            self.nesterov = True
            super().__init__(params, lr=0.1, momentum=0.9, nesterov=True)

    assert Early([w]).nesterov is True


def test_state_indexed_by_the_parameter_says_how_it_is_indexed() -> None:
    """torch.optim's state is a dict keyed by the parameter; Topgrad's a list in the parameters'
    order, and opt.state[p] gave list's "list indices must be integers or slices, not Tensor"."""
    params = [Tensor(rand((2,), 0)), Tensor(rand((3,), 1))]
    opt = SGD(params, lr=0.1, momentum=0.9)
    params[1].grad = topgrad.get_backend().asarray(rand((3,), 2))
    opt.step()
    with pytest.raises(TypeError, match=r"SGD.state is a list in the order of the parameters given "
                                        r"\(state\[i\] is opt.params\[i\]'s.*this Tensor is parameter 1: "
                                        r"opt.state\[1\]"):
        opt.state[params[1]]
    with pytest.raises(TypeError, match="this Tensor is none of its parameters"):
        opt.state[Tensor(rand((3,), 1))]
    with pytest.raises(TypeError, match="this Tensor is parameter 0"):  # torch's "if p not in state"
        assert params[0] not in opt.state
    with pytest.raises(TypeError, match="this Tensor is parameter 1"):
        opt.state[params[1]] = {}
    assert opt.state[0] == {} and set(opt.state[1]) == {"momentum_buffer"} and opt.state[-1] is opt.state[1]
    assert opt.state[:1] == [{}] and len(opt.state) == 2
    other = SGD(params, lr=0.1, momentum=0.9)
    other.load_state_dict(opt.state_dict())
    assert set(other.state[1]) == {"momentum_buffer"}
    with pytest.raises(TypeError, match="this Tensor is parameter 0"):
        other.state[params[0]]


def test_a_set_of_parameters_is_refused() -> None:
    """A set's order changes between runs: a saved state would load onto another parameter."""
    with pytest.raises(TypeError, match=r"a set has no fixed order.*pass a list"):
        SGD({Tensor(rand((2,), 0)), Tensor(rand((2,), 1))}, lr=0.1)
    with pytest.raises(TypeError, match=r"Adam takes Topgrad Tensors, got torch.Tensor"):
        Adam([torch.zeros(3, requires_grad=True)])


def test_the_first_momentum_buffer_is_a_copy_in_the_default_update() -> None:
    """Backend.sgd_update (what a third-party backend inherits) kept the first gradient as the
    buffer: zeroing `.grad` in place then zeroed the momentum (0.8 for torch's 0.71 below)."""
    from types import SimpleNamespace

    from topgrad.backend import Backend

    backend = topgrad.get_backend()
    helpers = SimpleNamespace(copy=backend.copy, add=backend.add, mul=backend.mul, sub=backend.sub)
    grad = backend.asarray(np.ones(3, np.float32))
    _, buf = Backend.sgd_update(helpers, backend.asarray(np.ones(3, np.float32)), grad, None,  # type: ignore[arg-type]
                                lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)
    assert buf is not grad and backend.memory_key(buf) != backend.memory_key(grad)
    np.testing.assert_array_equal(backend.to_numpy(buf), np.ones(3, np.float32))


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
@pytest.mark.parametrize("name", ["LR", "lrr", "epsilon", "beta1", "wd", "defaults", "maximise"])
def test_every_public_name_that_is_no_setting_is_refused(cls: type, name: str) -> None:
    """The README says a name that is not a setting is refused, but only near-misspellings (difflib
    cutoff 0.85) were: `opt.LR = 0.01`, `opt.epsilon = 1e-6`, `opt.wd = 0.1` were kept and ignored,
    and lr stayed 0.1. Every public name the class does not define is refused now."""
    opt = cls([Tensor(rand((2,), 0))], lr=0.1)
    with pytest.raises(AttributeError, match=rf"^{cls.__name__} has no setting '{name}'.*; its settings are "
                                             r"lr, .*, and one set by another name would change nothing"):
        setattr(opt, name, 0.01)
    assert opt.lr == 0.1 and name not in vars(opt)


@pytest.mark.parametrize(("name", "says"), [
    ("LR", r"'LR' \(a misspelling\?\); .*nothing: did you mean lr\?$"),
    ("epsilon", r"'epsilon' \(a misspelling\?\); .*: did you mean eps\?$"),
    ("param_groups", r"'param_groups' \(Topgrad's optimizers have one group, whose settings are attribu"),
    ("wd", r"'wd'; its settings .*nothing; a subclass keeps attributes of its own under a leading undersc"),
])
def test_a_refused_name_says_what_was_likely_meant(name: str, says: str) -> None:
    with pytest.raises(AttributeError, match=says):
        setattr(Adam([Tensor(rand((2,), 0))], lr=0.1), name, 0.01)


def test_a_subclass_keeps_attributes_it_defines_or_names_with_an_underscore() -> None:
    """Refusing unknown names must not refuse a subclass's own state: a name defined on the class
    (a default, a property) or one with a leading underscore is set as usual."""

    class Counted(SGD):
        verbose = False

        def __init__(self, params: Any, lr: float) -> None:
            super().__init__(params, lr)
            self._steps, self.verbose = 0, True

        def step(self, closure: Any = None) -> Any:
            self._steps += 1
            return super().step(closure)

    w = Tensor(rand((2,), 0))
    opt = Counted([w], lr=0.1)
    w.grad = topgrad.get_backend().asarray(rand((2,), 1))
    opt.step()
    assert opt._steps == 1 and opt.verbose is True


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
@pytest.mark.parametrize(("name", "value"), [("maximize", False), ("foreach", None), ("foreach", False),
                                             ("fused", None), ("differentiable", False)])
def test_pytorchs_options_are_set_at_the_values_the_constructor_takes(cls: type, name: str,
                                                                      value: Any) -> None:
    """`opt.maximize = False` raised "does not take maximize=False", though the constructor takes it
    (PyTorch's default: what Topgrad does). Set, such a value is taken as the constructor takes it;
    any other is refused as there."""
    opt = cls([Tensor(rand((2,), 0))], lr=0.1, **{name: value})
    setattr(opt, name, value)
    with pytest.raises(TypeError, match=rf"^Topgrad's {cls.__name__}\(\) does not take {name}=True"):
        setattr(opt, name, True)


@pytest.mark.parametrize("cls", [Adam, AdamW])
def test_amsgrad_false_is_set_as_the_constructor_takes_it(cls: type) -> None:
    opt = cls([Tensor(rand((2,), 0))], lr=0.1, amsgrad=False)
    opt.amsgrad = False
    with pytest.raises(TypeError, match=rf"^Topgrad's {cls.__name__}\(\) does not take amsgrad=True"):
        opt.amsgrad = True
