"""Optimizer.state_dict / load_state_dict: the saved state matches torch.optim's, a resumed run
matches an uninterrupted one, and a state that does not fit is refused with nothing changed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import topgrad
import torch
from helpers import assert_close, rand
from test_optim import CASES, SHAPES
from topgrad import Tensor
from topgrad.optim import SGD, Adam

RESUMED = ["sgd", "sgd momentum", "sgd nesterov", "sgd everything", "adam", "adam betas eps", "adamw",
           "adamw strong weight decay"]


def _step(params: list[Tensor], torch_params: list[torch.Tensor], opts: list[Any], step: int) -> None:
    """One step of each optimizer in `opts` with the same gradients (the last parameter gets
    none at step 0, so its state starts a step later)."""
    for i, (p, tp) in enumerate(zip(params, torch_params)):
        if step == 0 and i == len(params) - 1:
            p.grad, tp.grad = None, None
            continue
        g = rand(SHAPES[i], 100 * step + i + 50)
        p.grad = topgrad.get_backend().asarray(g)
        tp.grad = torch.from_numpy(g.copy())
    for opt in opts:
        opt.step()


def _pair(case: str) -> tuple[list[Tensor], list[torch.Tensor], Any, Any]:
    top_cls, torch_cls, kwargs = CASES[case]
    inits = [rand(shape, i) for i, shape in enumerate(SHAPES)]
    params, torch_params = [Tensor(a) for a in inits], [torch.tensor(a, requires_grad=True) for a in inits]
    return params, torch_params, top_cls(params, **kwargs), torch_cls(torch_params, **kwargs)


@pytest.mark.parametrize("case", RESUMED)
def test_the_saved_state_is_torch_optims(case: str) -> None:
    params, torch_params, opt, ref = _pair(case)
    for step in range(3):
        _step(params, torch_params, [opt, ref], step)
    mine, theirs = opt.state_dict(), ref.state_dict()
    assert mine["optimizer"] == type(opt).__name__
    group = theirs["param_groups"][0]
    for name, value in mine["settings"].items():
        assert value == (tuple(group[name]) if name == "betas" else group[name]), name
    assert sorted(mine["state"]) == sorted(theirs["state"])
    for i, state in mine["state"].items():
        assert set(state) == set(theirs["state"][i]), i
        for key, value in state.items():
            want = theirs["state"][i][key]
            if key == "step":
                assert value == int(want)
            else:
                assert isinstance(value, np.ndarray)
                assert_close(value, want.numpy(), f"{case}: {key} of parameter {i}")


@pytest.mark.parametrize("case", RESUMED)
def test_a_resumed_run_matches_an_uninterrupted_one(case: str) -> None:
    """Three steps, the state saved; new parameters with the same values and an optimizer made
    with other settings take it, and two more steps match PyTorch's five in a row."""
    params, torch_params, opt, ref = _pair(case)
    for step in range(3):
        _step(params, torch_params, [opt, ref], step)
    saved = opt.state_dict()
    resumed = [Tensor(p.numpy()) for p in params]
    opt2 = type(opt)(resumed, lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.lr == opt.lr
    for step in range(3, 5):
        _step(resumed, torch_params, [opt2, ref], step)
    for i, (p, tp) in enumerate(zip(resumed, torch_params)):
        assert_close(p, tp, f"{case}: parameter {i} after a resumed run")


def test_the_saved_state_is_a_copy() -> None:
    params, torch_params, opt, _ = _pair("adam")
    _step(params, torch_params, [opt], 1)
    saved = opt.state_dict()
    first = saved["state"][0]["exp_avg"].copy()
    _step(params, torch_params, [opt], 2)
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"], first)
    assert saved["state"][0]["step"] == 1


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("case", ["sgd momentum", "adam"])
def test_an_optimizer_copies_and_pickles_with_its_parameters(case: str, how: str) -> None:
    """copy.deepcopy and pickle of an optimizer (or of a trainer holding one) failed: rebuilding
    its parameter list went through the append it refuses. As torch.optim's, a copy made with the
    model trains the copied parameters from the copied state, as the original trains its own."""
    import copy
    import pickle

    params, torch_params, opt, _ = _pair(case)
    _step(params, torch_params, [opt], 1)
    twin = copy.deepcopy({"params": params, "opt": opt}) if how == "deepcopy" else \
        pickle.loads(pickle.dumps({"params": params, "opt": opt}))
    assert all(a is b for a, b in zip(twin["opt"].params, twin["params"]))
    _step(params, torch_params, [opt], 2)
    _step(twin["params"], torch_params, [twin["opt"]], 2)
    for p, q in zip(params, twin["params"]):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    with pytest.raises(TypeError, match="params cannot change once it is made"):
        twin["opt"].params.append(params[0])


def test_a_fresh_optimizer_has_no_state() -> None:
    opt = SGD([Tensor(rand((2,), 0))], lr=0.1, momentum=0.9)
    assert opt.state_dict() == {"optimizer": "SGD", "state": {}, "shapes": [(2,)], "settings": {
        "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False, "dampening": 0.0}}


def _broken(change: Any) -> dict[str, Any]:
    params, torch_params, opt, _ = _pair("adam")
    _step(params, torch_params, [opt], 1)
    saved = opt.state_dict()
    change(saved)
    return saved


@pytest.mark.parametrize(
    ("change", "match"),
    [(lambda s: s.update(optimizer="SGD"), "Adam.load_state_dict: the state was saved by SGD, not Adam"),
     (lambda s: s.pop("settings"), "takes what state_dict\\(\\) returns"),
     (lambda s: s["settings"].update(lr=-1.0), "learning rate must be a finite number >= 0"),
     (lambda s: s["settings"].update(momentum=0.9),
      r"settings have \['momentum'\], which Adam does not take \(it takes lr, betas"),
     (lambda s: s["state"].update({7: {}}), r"entries \[7\] for parameters this optimizer does not have"),
     (lambda s: s["state"][0].pop("exp_avg"), r"parameter 0 has \['exp_avg_sq', 'step'\]; Adam keeps"),
     (lambda s: s["state"][0].update(step=-1), "step must be a whole number >= 0, got -1"),
     (lambda s: s["state"][0].update(step=1.5), "step must be a whole number"),
     (lambda s: s["state"][1].update(exp_avg=np.zeros(2, np.float32)),
      r"parameter 1: exp_avg must be a float32 or float64 array of the parameter's shape \(3,\), got"),
     (lambda s: s["state"][1].update(exp_avg=np.zeros(3, np.int64)), "must be a float32 or float64 array"),
     (lambda s: s["state"][1].update(exp_avg=np.zeros(3, np.float16)), r"got ndarray \(3,\) float16$"),
     (lambda s: s.update(state={str(k): v for k, v in s["state"].items()}),
      r"the state's keys must be the parameters' positions as ints, got \['0', '1', '2'\] \(a JSON"),
     (lambda s: s["state"].update({0: None}), "state of parameter 0 has NoneType"),
     (lambda s: s["settings"].pop("lr"), r"the saved settings lack lr \(a state_dict\(\) has all of lr, "
      "betas")],
)
def test_a_state_that_does_not_fit_is_refused_and_nothing_changes(change: Any, match: str) -> None:
    params, torch_params, opt, _ = _pair("adam")
    _step(params, torch_params, [opt], 1)
    _step(params, torch_params, [opt], 2)
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        opt.load_state_dict(_broken(change))
    after = opt.state_dict()
    assert after["settings"] == before["settings"] and sorted(after["state"]) == sorted(before["state"])
    for i, state in before["state"].items():
        assert after["state"][i]["step"] == state["step"]
        np.testing.assert_array_equal(after["state"][i]["exp_avg"], state["exp_avg"])


def test_a_loaded_state_is_copied_and_a_0d_step_is_taken() -> None:
    """Steps write the state in place: without a copy, training changed the saved dict and two
    optimizers loaded from it moved each other. A 0-d integer step (np.savez, np.load) loads."""
    params, torch_params, opt, _ = _pair("adam")
    _step(params, torch_params, [opt], 1)
    saved = opt.state_dict()
    saved["state"][0]["step"] = np.array(saved["state"][0]["step"])
    kept = saved["state"][0]["exp_avg"].copy()
    first, second = Adam(params), Adam(params)
    first.load_state_dict(saved)
    second.load_state_dict(saved)
    for p in params:
        p.grad = topgrad.get_backend().asarray(np.ones(p.shape, np.float32))
    first.step()
    np.testing.assert_array_equal(saved["state"][0]["exp_avg"], kept)
    np.testing.assert_array_equal(second.state_dict()["state"][0]["exp_avg"], kept)
    assert first.state_dict()["state"][0]["step"] == 2


def test_loaded_betas_are_the_optimizers_own_and_any_pair_of_numbers_is_taken() -> None:
    """load_state_dict kept the caller's betas list, so changing that list later changed the
    optimizer's next step without a word; betas as a numpy array (torch takes it) was refused with
    "must be two numbers, got array([0.9, 0.99])"."""
    params, torch_params, opt, _ = _pair("adam")
    _step(params, torch_params, [opt], 1)
    saved = opt.state_dict()
    saved["settings"]["betas"] = [0.8, 0.99]
    other = Adam(params)
    other.load_state_dict(saved)
    saved["settings"]["betas"][0] = 5.0
    assert other.betas == (0.8, 0.99)
    assert Adam(params, betas=np.array([0.9, 0.99])).betas == (0.9, 0.99)
    assert all(type(b) is float for b in Adam(params, betas=np.array([0.9, 0.99], np.float32)).betas)


def test_a_state_of_other_parameters_is_refused() -> None:
    opt = Adam([Tensor(rand((2, 2), 0))])
    other = Adam([Tensor(rand((3,), 0))])
    other.params[0].grad = topgrad.get_backend().asarray(rand((3,), 1))
    other.step()
    saved = other.state_dict()
    with pytest.raises(ValueError, match=r"parameter 0 had shape \(3,\) in the saved state, here \(2, 2\)"):
        opt.load_state_dict(saved)
    del saved["shapes"]  # as saved before shapes were recorded: the state's arrays are checked
    with pytest.raises(ValueError, match=r"exp_avg must be .* shape \(2, 2\), got ndarray \(3,\)"):
        opt.load_state_dict(saved)


def test_a_state_of_fewer_or_more_parameters_is_refused() -> None:
    """torch.optim refuses a parameter group of another size; the state alone cannot tell (a
    parameter that was never updated has none), so the saved shapes do."""
    one = Adam([Tensor(rand((5, 3), 0))])
    one.params[0].grad = topgrad.get_backend().asarray(rand((5, 3), 1))
    one.step()
    two = Adam([Tensor(rand((5, 3), 2)), Tensor(rand((3,), 3))])
    for mine, theirs, counts in ((two, one, r"over 1 parameter\(s\), this one has 2"),
                                 (one, two, r"over 2 parameter\(s\), this one has 1")):
        with pytest.raises(ValueError, match=counts):
            mine.load_state_dict(theirs.state_dict())
    with pytest.raises(ValueError, match="'shapes' must list each parameter's shape"):
        one.load_state_dict({**one.state_dict(), "shapes": 3})


@pytest.mark.parametrize("case", ["sgd momentum", "adam", "adamw"])
def test_a_float64_state_loads_cast_to_the_parameters_dtype_as_torch(case: str) -> None:
    """The triton backend refused a saved state of float64 arrays ("holds float32 arrays only"),
    which the check before says is taken and the numpy backend loaded (as float64, next to
    float32 parameters); torch.optim casts the state to each parameter's dtype."""
    params, torch_params, opt, ref = _pair(case)
    for step in range(2):
        _step(params, torch_params, [opt, ref], step)
    saved, theirs = opt.state_dict(), ref.state_dict()
    saved["state"] = {i: {k: v if k == "step" else v.astype(np.float64) for k, v in state.items()}
                      for i, state in saved["state"].items()}
    theirs["state"] = {i: {k: v if k == "step" else v.double() for k, v in state.items()}
                       for i, state in theirs["state"].items()}
    top_cls, torch_cls, kwargs = CASES[case]
    opt2, ref2 = top_cls(params, **kwargs), torch_cls(torch_params, **kwargs)
    opt2.load_state_dict(saved)
    ref2.load_state_dict(theirs)
    for i, state in opt2.state_dict()["state"].items():
        for key, value in state.items():
            if key != "step":
                assert value.dtype == np.float32 and ref2.state[torch_params[i]][key].dtype == torch.float32
    for step in range(2, 4):
        _step(params, torch_params, [opt2, ref2], step)
    for i, (p, tp) in enumerate(zip(params, torch_params)):
        assert_close(p, tp, f"{case}: parameter {i} after a float64 state was loaded")


def test_a_float32_state_loads_as_float64_for_a_float64_parameter(backend_name: str) -> None:
    """The state takes the parameter's dtype both ways (where the backend has float64 Tensors)."""
    if backend_name != "numpy":
        pytest.skip("float64 Tensors are the numpy backend's")
    w = Tensor(rand((3, 2), 0), dtype="float64")
    opt = Adam([w])
    opt.load_state_dict({"optimizer": "Adam", "settings": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                                                          "weight_decay": 0.0}, "shapes": [(3, 2)],
                         "state": {0: {"step": 3, "exp_avg": np.ones((3, 2), np.float32),
                                       "exp_avg_sq": np.ones((3, 2), np.float32)}}})
    assert {str(a.dtype) for a in opt.state[0].values() if not isinstance(a, int)} == {"float64"}


# ---- found by an audit against torch.optim (round 54) -------------------------------------------
def _array(a: np.ndarray) -> Any:
    """`a` as the selected backend's array (a `.grad` set by hand must be one)."""
    return topgrad.get_backend().asarray(a)


@pytest.mark.parametrize("reset", ["clear", "dict", "empty list"])
def test_resetting_the_state_as_in_pytorch_keeps_training(reset: str) -> None:
    """`opt.state = defaultdict(dict)` or `opt.state.clear()` (torch.optim's reset) left a state
    shorter than the parameters, and every later step updated nothing without a word."""
    import collections

    w = Tensor(np.ones(3, np.float32))
    opt = Adam([w], lr=0.1)
    w.grad = _array(np.ones(3, np.float32))
    opt.step()
    if reset == "clear":
        opt.state.clear()
    else:
        opt.state = collections.defaultdict(dict) if reset == "dict" else []
    assert len(opt.state) == 1 and opt.state[0] == {}
    before = w.numpy().copy()
    w.grad = _array(np.ones(3, np.float32))
    opt.step()
    np.testing.assert_allclose(w.numpy(), before - 0.1, rtol=1e-5)  # a first Adam step: lr * sign
    assert opt.state[0]["step"] == 1


def test_params_cannot_change_after_the_optimizer_is_made() -> None:
    """An appended parameter was never updated, though zero_grad cleared it and state_dict listed it."""
    w, b = Tensor(rand((3,), 0)), Tensor(rand((2,), 1))
    opt = SGD([w], lr=0.1)
    for change in (lambda: opt.params.append(b), lambda: opt.params.extend([b]),
                   lambda: opt.params.__setitem__(0, b), lambda: setattr(opt, "params", [w, b])):
        with pytest.raises(TypeError, match=r"an optimizer's params cannot change once it is made"):
            change()
    assert list(opt.params) == [w]
    with pytest.raises(TypeError, match=r"SGD.state holds one dict per parameter \(1\)"):
        opt.state = [{}, {}]


@pytest.mark.parametrize(("name", "value", "match"), [
    ("maximize", True, r"^Topgrad's Adam\(\) does not take maximize=True \(PyTorch's gradient ascent\)"),
    ("amsgrad", True, r"^Topgrad's Adam\(\) does not take amsgrad=True"),
    ("momentum", 0.9, r"^Adam has no setting 'momentum' \(a setting of SGD\); its settings are lr, betas, "),
    ("learning_rate", 5.0, r"'learning_rate' \(write lr, as torch.optim does\)"),
    ("weight_decy", 0.1, r"'weight_decy' \(a misspelling\?\)"),
])
def test_a_setting_the_optimizer_does_not_have_is_refused(name: str, value: Any, match: str) -> None:
    """The constructor refused maximize=True, but `opt.maximize = True` was kept and ignored, as were
    another optimizer's settings and misspellings."""
    opt = Adam([Tensor(rand((3,), 0))], lr=0.1)
    with pytest.raises((TypeError, AttributeError), match=match):
        setattr(opt, name, value)
    assert not hasattr(opt, name) or name in opt.settings


def test_settings_of_other_number_types_are_floats() -> None:
    """lr=Fraction(1, 10) passed the check and reached numpy's arrays as an object: a cast error in
    step naming neither the optimizer nor the setting."""
    from fractions import Fraction

    w = Tensor(np.ones(3, np.float32))
    opt = SGD([w], lr=Fraction(1, 10), momentum=Fraction(9, 10))
    assert type(opt.lr) is float and type(opt.momentum) is float
    w.grad = _array(np.ones(3, np.float32))
    opt.step()
    np.testing.assert_allclose(w.numpy(), np.full(3, 0.9), rtol=1e-6)
    assert type(Adam([w], eps=Fraction(1, 10**8)).eps) is float


def test_a_parameter_that_changed_shape_is_refused_before_any_update() -> None:
    """a was updated and b's step count went up before b's update failed in numpy's broadcast."""
    a, b = Tensor(np.ones(3, np.float32)), Tensor(np.ones(2, np.float32))
    opt = Adam([a, b], lr=0.1)
    a.grad, b.grad = _array(np.ones(3, np.float32)), _array(np.ones(2, np.float32))
    opt.step()
    b.data = _array(np.ones(4, np.float32))
    a.grad, b.grad = _array(np.ones(3, np.float32)), _array(np.ones(4, np.float32))
    before = a.numpy().copy()
    with pytest.raises(ValueError, match=r"Adam.step: parameter 1 has shape \(4,\), but its exp_avg has "
                       r"shape \(2,\) .*opt.state\[1\] = \{\}"):
        opt.step()
    np.testing.assert_array_equal(a.numpy(), before)
    assert opt.state[1]["step"] == 1


def test_a_bad_saved_setting_names_load_state_dict() -> None:
    opt = Adam([Tensor(rand((3,), 0))], lr=0.1)
    saved = opt.state_dict()
    saved["settings"]["betas"] = [0.9, 1.5]
    with pytest.raises(ValueError, match=r"^Adam.load_state_dict: the saved settings: Adam: betas must be "):
        opt.load_state_dict(saved)
