"""What gradcheck, t.graph() and the PyTorch-name hints tell a user whose own op or values are
unusual: a backward that returns no gradient, arrays an op keeps in a dict, numpy scalars as
operands, a name with a newline, fn returning several outputs, torch.autograd's names.

Backend-agnostic: runs on every backend, as tests/test_introspection.py does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import (
    no_observer_left_behind,  # noqa: F401 - autouse: no test leaves an observer
    rand,
)
from topgrad import Op, Tensor
from topgrad.gradcheck import GradcheckError


# ---- gradcheck: a backward that returns no gradient ------------------------------------------
class _ForgotGradient(Op):
    """x * x whose backward forgets its gradient: returns (None,) (meant 2 * x * grad)."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x=x)
        return topgrad.get_backend().mul(x, x)

    def backward(self, grad: Any) -> tuple[Any]:
        return (None,)


class _ForgotReturn(_ForgotGradient):
    """The same, with a bare `return None` (its `return` line left out)."""

    def backward(self, grad: Any) -> Any:
        return None


def test_gradcheck_fails_a_backward_that_returns_no_gradient_on_the_values() -> None:
    """A custom op whose backward returned None raised "fn's output does not depend on its inputs
    (none of them is in its graph)", which is false, even with raise_on_failure=False. PyTorch's
    gradcheck reports a Jacobian mismatch (analytical zeros): so does this, naming the op."""
    x = rand((2,), 3) + 2.0  # away from 0, where the true gradient 2x is not small
    fns = (lambda t: _ForgotGradient.apply(t), lambda t: _ForgotGradient.apply(t) * 2.0,
           lambda t: _ForgotReturn.apply(t))
    for fn in fns:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the engine's warning about a bare `return None`
            result = topgrad.gradcheck(fn, x, raise_on_failure=False)
            assert not result.ok and result.failures == 2, str(result)
            assert result.worst is not None and result.worst.analytic == 0.0, str(result)
            name = "_ForgotReturn" if fn is fns[2] else "_ForgotGradient"
            assert f"{name}.backward for input 0" in result.note, str(result)
            with pytest.raises(GradcheckError, match=f"FAILED on 2 of 2 elements(.|\n)*{name}.backward"):
                topgrad.gradcheck(fn, x)


def test_gradcheck_still_refuses_an_output_made_without_its_inputs_and_passes_a_true_zero() -> None:
    """Deciding by the graph, not by .grad: an output made from other Tensors is still refused, and
    an input fn does not use still passes, with no note (its gradient is 0 both ways)."""
    x = rand((2,), 4)
    with pytest.raises(ValueError, match="none of them is in its graph"):
        topgrad.gradcheck(lambda t: Tensor([1.0, 2.0], requires_grad=True) * 2.0, x)
    result = topgrad.gradcheck(lambda t, u: t * 2.0, x, x)
    assert result.ok and "returned None" not in result.note, str(result)
    assert topgrad.gradcheck(lambda t: t, x).ok


# ---- graph() and profile(): arrays an op keeps in a dict ----------------------------------------
class _KeepsACache(Op):
    """A user's op that keeps arrays in a dict attribute (and a list inside it, and the dict in
    itself: walked once)."""

    def forward(self, x: Any) -> Any:
        b = topgrad.get_backend()
        self.cache = {"big": b.zeros((100, 100)), "more": [b.zeros((10,))], "label": "cache"}
        self.cache["self"] = self.cache
        return b.mul(x, 2.0)

    def backward(self, grad: Any) -> tuple[Any]:
        return (topgrad.get_backend().mul(grad, 2.0),)


def test_arrays_an_op_keeps_in_a_dict_are_counted_by_graph_and_profile() -> None:
    """graph() and profile() looked into tuples and lists only: a dict of arrays an op kept (held as
    long as the graph) showed as 0 B saved, 0 B extra."""
    x = Tensor(rand((3,), 5), requires_grad=True)
    big, more = 100 * 100 * 4, 10 * 4
    g = _KeepsACache.apply(x).graph()
    (node,) = g.ops
    assert [(s.name, s.nbytes, s.attribute) for s in node.saved] == [
        ("cache['big']", big, True), ("cache['more'][0]", more, True)], str(g)
    assert g.distinct_extra_bytes == big + more, str(g)
    assert "keeps cache['big']" in str(g)
    with topgrad.profile() as prof:
        _KeepsACache.apply(x).sum().backward()
    assert prof.stats["_KeepsACache"].saved_bytes == big + more, str(prof)


# ---- graph(): plain values and names as the text shows them ----------------------------------
def test_numpy_scalar_operands_show_their_value() -> None:
    """repr() cut at 12 characters left `np.float32(…` of a numpy scalar operand, hiding its value;
    numbers now show as numbers, as Python's 2.0 always did."""
    x = Tensor(rand((3,), 6), requires_grad=True)
    y = (x * np.float32(2.5) + np.float64(1.0)) * np.int64(3) - np.float32(0.1)
    parents = [n.parents[1] for n in y.graph().ops]
    assert parents == ["2.5", "1.0", "3", "-0.1"], parents  # x - c is x + (-c)
    assert "np." not in str(y.graph())
    assert (x * 2.0).graph().ops[0].parents == ("%0", "2.0")


def test_a_name_with_a_newline_or_control_character_keeps_the_rows_intact() -> None:
    """A name holding a newline was printed raw: the row broke in two and the next line read as a
    row of its own."""
    x, w = Tensor(rand((3,), 7), requires_grad=True), Tensor(rand((3,), 8), requires_grad=True)
    text = str((x * w).graph({"a\nb": x, "c\x1b[0m": w}))
    rows = text.splitlines()
    assert rows[1].split()[:2] == ["%0", "leaf"] and rows[1].endswith("'a\\nb'"), text
    assert rows[2].split()[:2] == ["%1", "leaf"] and rows[2].endswith("'c\\x1b[0m'"), text
    assert "\x1b" not in text and rows[3].split()[:2] == ["%2", "Mul"], text


# ---- what to write instead --------------------------------------------------------------------
def test_gradcheck_of_several_outputs_says_how_to_combine_them() -> None:
    """fn returning (x * 2, x * 3) got only "fn must return a Tensor, got tuple"; the error now says
    to combine them, and the way it names works."""
    x = rand((2,), 9)
    with pytest.raises(TypeError, match=r"got a tuple of 2: combine them into one(.|\n)*topgrad\.cat"):
        topgrad.gradcheck(lambda t: (t * 2.0, t * 3.0), x)
    assert topgrad.gradcheck(lambda t: topgrad.cat([(t * 2.0).reshape(-1), (t * 3.0).reshape(-1)]), x).ok


def test_torch_autograd_says_what_to_write() -> None:
    """topgrad.autograd gave a bare AttributeError, with no word of backward, gradcheck, x.op or
    detect_anomaly (torch.autograd.set_detect_anomaly's counterpart too)."""
    with pytest.raises(AttributeError, match=r"torch\.autograd is not one module: loss\.backward(.|\n)*"
                                             r"topgrad\.gradcheck(.|\n)*x\.op(.|\n)*set_detect_anomaly"):
        topgrad.autograd  # type: ignore[attr-defined]  # noqa: B018
