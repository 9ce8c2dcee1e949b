"""`get_backend().ops.X.apply(...)`, the op table's public entry point (CONTRACT §6), checks its
keyword settings as the Tensor methods check theirs, with the same core functions
(`topgrad.arguments`): a bad value is the same exception with the same words, naming the op and
the setting, on every backend; never a silently different result (`causal="no"` masked as True
did, `training="no"` trained and updated the running statistics) nor an error from inside numpy
or torch. Valid settings, numpy's bools and ints included, give the Tensor method's result."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import rand, to_numpy
from topgrad import Tensor


def ops() -> Any:
    return topgrad.get_backend().ops


def x43() -> Tensor:
    return Tensor(rand((4, 3), 0))


def qkv() -> tuple[Tensor, Tensor, Tensor]:
    q, k, v = (Tensor(rand((1, 3, 4), s)) for s in (1, 2, 3))
    return q, k, v


def image() -> Tensor:
    return Tensor(rand((1, 4, 4, 2), 4))


def kernel() -> Tensor:
    return Tensor(rand((3, 3, 2, 3), 5))


def bn(x: Any, **settings: Any) -> Tensor:
    """BatchNorm.apply with the Tensor method's defaults, `settings` replacing some."""
    given = {"running_mean": None, "running_var": None, "training": True, "momentum": 0.1, "eps": 1e-5}
    return ops().BatchNorm.apply(x, Tensor.ones(3), Tensor.zeros(3), **{**given, **settings})


def stats() -> dict[str, Tensor]:
    return {"running_mean": Tensor.zeros(3, requires_grad=False),
            "running_var": Tensor.ones(3, requires_grad=False)}


# (id, Op.apply call, the Tensor method's call with the same setting or None, error, pattern). The
# pattern follows "<op>: " in apply's message; the method's message, after its own name, is the same.
Call = Callable[[], Any]
REFUSED: list[tuple[str, Call, Call | None, type[Exception], str]] = [
    *[(f"{op}-keepdims-{value!r}",
       lambda op=op, value=value: getattr(ops(), op).apply(x43(), axis=0, keepdims=value),
       lambda op=op, value=value: getattr(x43(), op.lower())(axis=0, keepdims=value), TypeError,
       rf"keepdims must be True or False, got {re.escape(repr(value))}")
      for op in ("Sum", "Mean", "Max") for value in ("no", 1, None)],
    *[(f"{op}-axis-()", lambda op=op: getattr(ops(), op).apply(x43(), axis=(), keepdims=False),
       lambda op=op: getattr(x43(), op.lower())(axis=()), ValueError, r"axis=\(\) is ambiguous")
      for op in ("Sum", "Mean", "Max")],
    ("Sum-axis-float", lambda: ops().Sum.apply(x43(), axis=0.0, keepdims=False), lambda: x43().sum(axis=0.0),
     TypeError, "axis must be None, an int or a tuple of ints, got 0.0"),
    *[(f"{op}-axis-{axis!r}", lambda op=op, axis=axis: getattr(ops(), op).apply(x43(), axis=axis),
       lambda op=op, axis=axis: getattr(x43(), op.lower())(axis=axis), TypeError,
       rf"axis must be one int \(it normalizes along one axis\), got {re.escape(repr(axis))}")
      for op in ("LogSoftmax", "Softmax") for axis in (None, (0, 1), 1.0, True)],
    *[(f"Reshape-{shape!r}", lambda shape=shape: ops().Reshape.apply(x43(), shape=shape),
       lambda shape=shape: x43().reshape(*shape), ValueError,
       rf"shape {re.escape(repr(shape))}: every size must be a whole number >= 0, or -1")
      for shape in ((2.0, 6), (True, 12), (-2, -6), (np.float32(12),))],
    ("Reshape-size", lambda: ops().Reshape.apply(x43(), shape=(5,)), lambda: x43().reshape(5), ValueError,
     r"cannot reshape an array of shape \(4, 3\) \(12 elements\) into shape \(5,\)"),
    ("Reshape-two-inferred", lambda: ops().Reshape.apply(x43(), shape=(-1, -1)),
     lambda: x43().reshape(-1, -1), ValueError, r"at most one size may be -1"),
    ("Reshape-inferred-from-0", lambda: ops().Reshape.apply(Tensor.zeros(0, 3), shape=(0, -1)),
     lambda: Tensor.zeros(0, 3).reshape(0, -1), ValueError, r"cannot infer the -1 of shape \(0, -1\)"),
    ("Reshape-no-shape", lambda: ops().Reshape.apply(x43()), None, TypeError, r"shape is required"),
    *[(f"Permute-{axes!r}", lambda axes=axes: ops().Permute.apply(x43(), axes=axes),
       lambda axes=axes: x43().permute(*axes), TypeError, rf"axes must be ints, got {re.escape(repr(axes))}")
      for axes in ((1.7, 0.2), (1.0, 0), (True, 0), (None, 0))],
    ("Permute-repeated", lambda: ops().Permute.apply(x43(), axes=(0, 0)), lambda: x43().permute(0, 0),
     ValueError, r"axes \(0, 0\) are no ordering of the 2 axes of shape \(4, 3\)"),
    ("Permute-no-axes", lambda: ops().Permute.apply(x43()), None, TypeError, r"axes is required"),
    *[(f"BatchNorm-training-{value!r}", lambda value=value: bn(x43(), **stats(), training=value),
       lambda value=value: x43().batchnorm(Tensor.ones(3), Tensor.zeros(3), **stats(), training=value),
       TypeError, rf"training must be True or False, got {re.escape(repr(value))}") for value in ("no", 0)],
    *[(f"BatchNorm-momentum-{value!r}", lambda value=value: bn(x43(), momentum=value),
       lambda value=value: x43().batchnorm(Tensor.ones(3), Tensor.zeros(3), momentum=value),
       ValueError, r"momentum must be a number in \[0, 1\]") for value in (5.0, -0.1, "0.1", None, math.nan)],
    *[(f"{op}-eps-{value!r}", lambda op=op, value=value: bn(x43(), eps=value) if op == "BatchNorm" else
       ops().LayerNorm.apply(x43(), Tensor.ones(3), Tensor.zeros(3), eps=value),
       lambda op=op, value=value: getattr(x43(), op.lower())(Tensor.ones(3), Tensor.zeros(3), eps=value),
       error, pattern)
      for op in ("BatchNorm", "LayerNorm")
      for value, error, pattern in (("1e-5", TypeError, "eps must be a number, got str"),
                                    (True, TypeError, "eps must be a number, got bool"),
                                    (-1e-5, ValueError, r"eps must be finite and >= 0, got -1e-05"),
                                    (math.inf, ValueError, "eps must be finite and >= 0, got inf"),
                                    (math.nan, ValueError, "eps must be finite and >= 0, got nan"))],
    *[(f"BatchNorm-{given}-alone",
       lambda given=given: bn(x43(), **{given: Tensor.zeros(3, requires_grad=False)}),
       lambda given=given: x43().batchnorm(Tensor.ones(3), Tensor.zeros(3),
                                           **{given: Tensor.zeros(3, requires_grad=False)}),
       ValueError, rf"got {given} without running_(mean|var): give both running statistics")
      for given in ("running_mean", "running_var")],
    *[(f"{op}-gamma-{type(value).__name__}",
       lambda op=op, value=value: getattr(ops(), op).apply(x43(), value, None),
       lambda op=op, value=value: getattr(x43(), op.lower())(value, None), TypeError,
       rf"gamma must be a Tensor, got an? {type(value).__name__}: make it Tensor\(gamma\)")
      for op in ("BatchNorm", "LayerNorm") for value in ([1.0, 1.0, 1.0], 1.5)],
    *[(f"Attention-causal-{value!r}", lambda value=value: ops().Attention.apply(*qkv(), causal=value),
       lambda value=value: topgrad.attention(*qkv(), causal=value), TypeError,
       rf"causal must be True or False, got {re.escape(repr(value))}") for value in ("no", 1, None)],
    ("Conv2d-stride-text", lambda: ops().Conv2d.apply(image(), kernel(), None, stride="2", padding=0),
     lambda: image().conv2d(kernel(), stride="2"), ValueError, "stride must be an int >= 1 or an"),
    ("Conv2d-padding-negative", lambda: ops().Conv2d.apply(image(), kernel(), None, stride=1, padding=-1),
     lambda: image().conv2d(kernel(), padding=-1), ValueError, "padding must be an int >= 0 or an"),
    ("Conv2d-padding-full", lambda: ops().Conv2d.apply(image(), kernel(), None, stride=1, padding="full"),
     lambda: image().conv2d(kernel(), padding="full"), ValueError, "padding must be an int >= 0, an"),
    ("MaxPool2d-kernel-float", lambda: ops().MaxPool2d.apply(image(), kernel_size=1.5),
     lambda: image().maxpool2d(1.5), ValueError, "kernel_size must be an int >= 1 or an"),
    ("MaxPool2d-stride-0", lambda: ops().MaxPool2d.apply(image(), kernel_size=2, stride=0),
     lambda: image().maxpool2d(2, 0), ValueError, "stride must be an int >= 1 or an"),
    ("MaxPool2d-padding-wide", lambda: ops().MaxPool2d.apply(image(), kernel_size=2, padding=3),
     lambda: image().maxpool2d(2, padding=3), ValueError, r"padding \(3, 3\) is more than half the window"),
    ("Concat-axis-range", lambda: ops().Concat.apply(x43(), x43(), axis=2),
     lambda: topgrad.cat([x43(), x43()], 2), ValueError, "axis 2 is out of range for tensors of 2 axes"),
    ("Concat-axis-float", lambda: ops().Concat.apply(x43(), x43(), axis=1.0),
     lambda: topgrad.cat([x43(), x43()], 1.0), TypeError, "axis must be an int, got 1.0"),
    ("Slice-range", lambda: ops().Slice.apply(x43(), index=(10,)), lambda: x43()[10], IndexError,
     "index 10 is out of range for axis 0 of size 4"),
]


def _op_name(case_id: str) -> str:
    return case_id.split("-")[0]


@pytest.mark.parametrize(("apply", "method", "error", "pattern"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_apply_refuses_what_the_tensor_method_refuses(request: pytest.FixtureRequest, apply: Call,
                                                      method: Call | None, error: type[Exception],
                                                      pattern: str) -> None:
    op = _op_name(request.node.callspec.id)
    with pytest.raises(error, match=rf"^{op}: {pattern}") as refused:
        apply()
    if method is None:
        return
    with pytest.raises(error) as by_method:
        method()
    assert type(by_method.value) is type(refused.value)
    assert str(by_method.value).split(": ", 1)[1] == str(refused.value).split(": ", 1)[1]


def test_batchnorm_settings_refused_leave_the_running_statistics_as_they_were() -> None:
    """`training="no"` trained and updated them; running_mean without running_var updated it."""
    given = stats()
    with pytest.raises(TypeError, match="BatchNorm: training"):
        bn(x43(), **given, training="no")
    mean = Tensor.zeros(3, requires_grad=False)
    with pytest.raises(ValueError, match="BatchNorm: got running_mean without running_var"):
        bn(x43(), running_mean=mean)
    for stat, start in ((given["running_mean"], 0.0), (given["running_var"], 1.0), (mean, 0.0)):
        np.testing.assert_array_equal(to_numpy(stat), np.full(3, start, np.float32))


def test_causal_given_as_text_masks_nothing_silently() -> None:
    """`causal="no"` is a true string: the op masked as causal=True does."""
    with pytest.raises(TypeError, match="Attention: causal must be True or False, got 'no'"):
        ops().Attention.apply(*qkv(), causal="no")


def test_a_numpy_size_too_many_dimensions_says_so() -> None:
    """numpy's arrays have at most 64 axes: numpy's own reason is given, not "cannot reshape"."""
    x = Tensor.zeros(1)
    if topgrad.get_backend().name != "numpy":
        assert ops().Reshape.apply(x, shape=(1,) * 70).shape == (1,) * 70
        return
    with pytest.raises(ValueError, match=r"^Reshape: cannot reshape an array of shape \(1,\) into shape "
                                         r"\(1, 1, .*\): .*64"):
        ops().Reshape.apply(x, shape=(1,) * 70)


# (id, Op.apply call, the Tensor method's call): valid settings in the forms PyTorch takes too
# (numpy's bools and ints, an int for a 1-d shape, negative axes) give the method's result.
ACCEPTED: list[tuple[str, Call, Call]] = [
    ("Sum-defaults", lambda: ops().Sum.apply(x43()), lambda: x43().sum()),
    ("Sum-numpy-bool", lambda: ops().Sum.apply(x43(), axis=np.int64(1), keepdims=np.True_),
     lambda: x43().sum(axis=1, keepdims=True)),
    ("Mean-list-axis", lambda: ops().Mean.apply(x43(), axis=[0, 1], keepdims=True),
     lambda: x43().mean(axis=(0, 1), keepdims=True)),
    ("Max-False", lambda: ops().Max.apply(x43(), axis=-1, keepdims=np.False_), lambda: x43().max(axis=-1)),
    ("LogSoftmax-defaults", lambda: ops().LogSoftmax.apply(x43()), lambda: x43().logsoftmax()),
    ("LogSoftmax-numpy-int", lambda: ops().LogSoftmax.apply(x43(), axis=np.int64(0)),
     lambda: x43().logsoftmax(0)),
    ("Softmax-negative", lambda: ops().Softmax.apply(x43(), axis=-2), lambda: x43().softmax(0)),
    ("Reshape-int", lambda: ops().Reshape.apply(x43(), shape=12), lambda: x43().reshape(12)),
    ("Reshape-list", lambda: ops().Reshape.apply(x43(), shape=[2, -1]), lambda: x43().reshape(2, -1)),
    ("Reshape-numpy-ints", lambda: ops().Reshape.apply(x43(), shape=(np.int64(6), -1)),
     lambda: x43().reshape(6, 2)),
    ("Reshape-0-d", lambda: ops().Reshape.apply(Tensor([2.0]), shape=()), lambda: Tensor([2.0]).reshape()),
    ("Permute-negative", lambda: ops().Permute.apply(x43(), axes=(-1, 0)), lambda: x43().permute(1, 0)),
    ("Permute-list", lambda: ops().Permute.apply(x43(), axes=[1, 0]), lambda: x43().T),
    ("Permute-numpy-ints", lambda: ops().Permute.apply(x43(), axes=(np.int64(1), np.int64(0))),
     lambda: x43().permute(1, 0)),
    ("BatchNorm-numpy-bool",
     lambda: bn(x43(), **stats(), training=np.False_, momentum=0, eps=np.float32(1e-3)),
     lambda: x43().batchnorm(Tensor.ones(3), Tensor.zeros(3), **stats(), training=False, eps=1e-3)),
    ("BatchNorm-int-eps", lambda: bn(x43(), momentum=1, eps=1),
     lambda: x43().batchnorm(Tensor.ones(3), Tensor.zeros(3), momentum=1, eps=1)),
    ("LayerNorm-numpy-eps", lambda: ops().LayerNorm.apply(x43(), Tensor.ones(3), None, eps=np.float64(1e-3)),
     lambda: x43().layernorm(Tensor.ones(3), None, eps=1e-3)),
    ("Attention-numpy-bool", lambda: ops().Attention.apply(*qkv(), causal=np.True_),
     lambda: topgrad.attention(*qkv(), causal=True)),
    ("Attention-default", lambda: ops().Attention.apply(*qkv()), lambda: topgrad.attention(*qkv())),
]


@pytest.mark.parametrize(("apply", "method"), [case[1:] for case in ACCEPTED],
                         ids=[case[0] for case in ACCEPTED])
def test_valid_settings_give_the_tensor_methods_result(apply: Call, method: Call) -> None:
    got, want = apply(), method()
    assert got.shape == want.shape
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-6, atol=1e-6)


def test_batchnorm_numpy_bool_training_updates_as_true_does() -> None:
    by_apply, by_method = stats(), stats()
    bn(x43(), **by_apply, training=np.True_)
    x43().batchnorm(Tensor.ones(3), Tensor.zeros(3), **by_method)
    for name in by_apply:
        np.testing.assert_allclose(to_numpy(by_apply[name]), to_numpy(by_method[name]), rtol=1e-6)


def _list(*shape: int) -> list[Any]:
    return rand(shape, 6).tolist()


# (id, Op.apply call with an operand given as a list or None, the operand's name in the message)
OPERANDS: list[tuple[str, Call, str, str]] = [
    ("Sum", lambda: ops().Sum.apply(_list(4, 3), axis=0, keepdims=False), "x", "a list"),
    ("Sum-None", lambda: ops().Sum.apply(None, axis=0, keepdims=False), "x", "None"),
    ("Max", lambda: ops().Max.apply(_list(4, 3), axis=0, keepdims=False), "x", "a list"),
    ("LogSoftmax", lambda: ops().LogSoftmax.apply(_list(4, 3), axis=-1), "x", "a list"),
    ("Reshape", lambda: ops().Reshape.apply(_list(4, 3), shape=(12,)), "x", "a list"),
    ("Permute", lambda: ops().Permute.apply(_list(4, 3), axes=(1, 0)), "x", "a list"),
    ("Slice", lambda: ops().Slice.apply(_list(4, 3), index=(0,)), "x", "a list"),
    ("Concat", lambda: ops().Concat.apply(x43(), _list(4, 3), axis=0), "tensor 1", "a list"),
    ("Linear", lambda: ops().Linear.apply(x43(), _list(3, 2), None), "w", "a list"),
    ("Conv2d", lambda: ops().Conv2d.apply(image(), kernel(), [0.0] * 3, stride=1, padding=0), "b", "a list"),
    ("MaxPool2d", lambda: ops().MaxPool2d.apply(_list(1, 2, 2, 1), kernel_size=2), "x", "a list"),
    ("BatchNorm", lambda: bn(_list(4, 3)), "x", "a list"),
    ("LayerNorm", lambda: ops().LayerNorm.apply(_list(4, 3), None, None, eps=1e-5), "x", "a list"),
    ("Attention", lambda: ops().Attention.apply(qkv()[0], _list(1, 3, 4), qkv()[2]), "k", "a list"),
]


@pytest.mark.parametrize(("apply", "name", "got"), [case[1:] for case in OPERANDS],
                         ids=[case[0] for case in OPERANDS])
def test_an_operand_given_as_a_list_is_named(request: pytest.FixtureRequest, apply: Call, name: str,
                                             got: str) -> None:
    """Not numpy's AttributeError ('list' object has no attribute 'shape'): the Tensor methods'
    TypeError, on every backend."""
    op = _op_name(request.node.callspec.id)
    fix = r": make it Tensor\(" + re.escape(name) + r"\)$" if got != "None" else "$"
    with pytest.raises(TypeError, match=rf"^{op}: {name} must be a Tensor, got {got}{fix}"):
        apply()
