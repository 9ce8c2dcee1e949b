"""detect_anomaly's report of where the bad op was built: the user's call chain (up to
`anomaly.FRAMES` frames outside topgrad, innermost last, as a traceback reads), the input that
already held NaN/Inf by shape and by the name `names=` gives it, and the short line `graph()`
shows after `@`. Runs on the backend under test (`--backend`)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from types import CodeType
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import rand
from topgrad import Op, Tensor, anomaly, warning_location
from topgrad.anomaly import AnomalyError

HERE = Path(__file__).resolve()
SITE = re.compile(r"^(?P<file>\S+):(?P<line>\d+) in (?P<fn>\S+)(?:: (?P<source>.*))?$")


def line_of(marker: str) -> int:
    """The line number in this file of the one line ending with `# <marker>`."""
    text = HERE.read_text().splitlines()
    lines = [i for i, line in enumerate(text, 1) if line.rstrip().endswith(f"# {marker}")]
    assert len(lines) == 1, (marker, lines)
    return lines[0]


def chain(err: AnomalyError) -> list[tuple[int, str, str]]:
    """(line, function, source) of each 'op built at' line of the message, outermost first (each
    in this file: pytest's frames end the chain), checked against `err.stack` and `err.built_at`."""
    message = str(err)
    assert "\n  op built at:\n" in message, message
    shown = [line[4:] for line in message.split("\n  op built at:\n", 1)[1].splitlines()]
    assert all(line.startswith("    ") for line in message.split("\n  op built at:\n", 1)[1].splitlines())
    assert tuple(shown) == err.stack and err.built_at == shown[-1], (shown, err.stack, err.built_at)
    found = []
    for line in shown:
        m = SITE.match(line)
        assert m and m["file"].endswith("test_anomaly_sites.py"), line
        found.append((int(m["line"]), m["fn"], m["source"] or ""))
    return found


# ---- a two-level model: a module calling a layer helper, each through __call__ -> forward ----
class Layer:
    def __init__(self, w: Tensor) -> None:
        self.w = w

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def forward(self, x: Tensor) -> Tensor:
        return x.linear(self.w)  # layer line


class Net:
    def __init__(self) -> None:
        self.first = Layer(Tensor(rand((3, 4), 1)))
        self.second = Layer(Tensor(rand((4, 2), 2)))

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(x).relu()  # net first line
        return self.second(h)  # net second line

    def state(self) -> dict[str, Tensor]:
        return {"first.w": self.first.w, "second.w": self.second.w}


def with_nan(t: Tensor, index: tuple[int, ...]) -> None:
    """Put a NaN into `t` at `index`, on any backend."""
    values = t.numpy().copy()
    values[index] = np.nan
    t.data = Tensor(values).data


def test_a_nan_parameter_two_levels_down_shows_the_chain_and_names_the_parameter() -> None:
    net, x = Net(), Tensor(rand((5, 3), 3), requires_grad=False)
    with_nan(net.second.w, (1, 0))
    with topgrad.detect_anomaly(names=net.state()), pytest.raises(AnomalyError) as info:
        net(x)  # call line
    err = info.value
    assert err.op == "Linear" and err.phase == "forward"
    assert chain(err) == [
        (line_of("call line"), "test_a_nan_parameter_two_levels_down_shows_the_chain_and_names_the_parameter",
         "net(x)  # call line"),
        (line_of("net second line"), "forward", "return self.second(h)  # net second line"),
        (line_of("layer line"), "forward", "return x.linear(self.w)  # layer line"),
    ], str(err)  # the __call__ frames, a module's dispatch to its forward, are left out
    assert "input 1 already contained NaN/Inf" in str(err)
    assert "input 1 is 'second.w', a trainable leaf of shape (4, 2)" in str(err), str(err)
    assert not topgrad.Op._observers


def test_without_names_the_input_is_told_by_shape_and_how_to_name_it() -> None:
    net, x = Net(), Tensor(rand((5, 3), 3), requires_grad=False)
    with_nan(net.first.w, (0, 0))
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        net(x)
    message = str(info.value)
    assert "input 1 is a trainable leaf of shape (3, 4) (detect_anomaly(names=" in message, message
    assert [fn for _, fn, _ in chain(info.value)][-2:] == ["forward", "forward"]
    assert chain(info.value)[-2][0] == line_of("net first line")


def test_a_nan_made_in_forward_points_at_the_innermost_user_line() -> None:
    def inner(t: Tensor) -> Tensor:
        return t.log()  # made here

    def outer(t: Tensor) -> Tensor:
        return inner(t * 2.0) + 1.0  # outer line

    x = Tensor([1.0, -1.0])
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        outer(x)  # test line
    err = info.value
    assert err.op == "Log" and err.phase == "forward" and "this op produced them" in str(err), str(err)
    assert chain(err) == [
        (line_of("test line"), "test_a_nan_made_in_forward_points_at_the_innermost_user_line",
         "outer(x)  # test line"),
        (line_of("outer line"), "outer", "return inner(t * 2.0) + 1.0  # outer line"),
        (line_of("made here"), "inner", "return t.log()  # made here"),
    ], str(err)


def root_of(t: Tensor) -> Tensor:
    return t.sqrt()  # backward culprit


def test_a_nan_in_backward_shows_the_chain_captured_in_forward() -> None:
    x = Tensor([0.0, 4.0])
    with topgrad.detect_anomaly(names={"x": x}):
        loss = root_of(x).sum()  # forward line
        with pytest.raises(AnomalyError) as info:
            loss.backward()  # backward line
    err = info.value
    assert err.op == "Sqrt" and err.phase == "backward", str(err)
    assert "the gradient for input 0 ('x'), shape (2,), has 1 Inf" in str(err), str(err)
    assert chain(err) == [
        (line_of("forward line"), "test_a_nan_in_backward_shows_the_chain_captured_in_forward",
         "loss = root_of(x).sum()  # forward line"),
        (line_of("backward culprit"), "root_of", "return t.sqrt()  # backward culprit"),
    ], str(err)  # where the op was built, not where backward was called


def test_the_chain_stops_at_the_frame_limit_and_keeps_the_innermost() -> None:
    def down(t: Tensor, n: int) -> Tensor:
        if n:
            return down(t, n - 1)  # recursion line
        return t.log()  # deepest line

    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        down(Tensor([-1.0]), 6)
    found = chain(info.value)
    assert len(found) == anomaly.FRAMES == len(info.value.stack)
    assert found[-1] == (line_of("deepest line"), "down", "return t.log()  # deepest line")
    assert all(f == (line_of("recursion line"), "down", "return down(t, n - 1)  # recursion line")
               for f in found[:-1])


class NaNOp(Op):
    """A user's op, defined in the module that uses it: its own frames are never the site."""

    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().mul(x, math.nan)

    def backward(self, grad: Any) -> tuple[Any]:
        return (grad,)


def test_an_op_defined_beside_its_use_names_the_line_that_applied_it() -> None:
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        NaNOp.apply(Tensor([1.0, 2.0]))  # applied here
    assert chain(info.value) == [(line_of("applied here"),
                                  "test_an_op_defined_beside_its_use_names_the_line_that_applied_it",
                                  "NaNOp.apply(Tensor([1.0, 2.0]))  # applied here")]


def test_example_attention_model_names_the_block_line_and_the_parameter() -> None:
    """The newcomer's case: every Linear is built on one line of the layer helper; the chain
    shows which block line called it, and names= says which parameter held the NaN."""
    models = pytest.importorskip("topgrad_examples.models")
    model = models.build("attention")
    state = model.state()
    with_nan(state["blocks.0.v.w"], (3, 5))
    x = Tensor(rand((2, 784), 4), requires_grad=False)
    with topgrad.detect_anomaly(names=state), pytest.raises(AnomalyError) as info:
        model(x)  # model call
    err, message = info.value, str(info.value)
    assert "input 1 is 'blocks.0.v.w', a trainable leaf of shape (64, 64)" in message, message
    assert len(err.stack) == 4, message
    assert err.stack[0].endswith(f"test_anomaly_sites.py:{line_of('model call')} in "
                                 "test_example_attention_model_names_the_block_line_and_the_parameter: "
                                 "model(x)  # model call"), message
    assert "attention.py:" in err.stack[1] and err.stack[1].endswith("h = block(h, training)"), message
    assert "attention.py:" in err.stack[2] and "self.v(h)" in err.stack[2], message
    assert "layers.py:" in err.stack[3], message
    assert err.stack[3].endswith("in forward: return x.linear(self.w, self.b)"), message


def test_graph_shows_the_innermost_line_with_a_short_path() -> None:
    x, w = Tensor(rand((2, 3), 5)), Tensor(rand((3, 2), 6))
    with topgrad.detect_anomaly():
        y = Net.forward(Net(), x).sum() + x.linear(w).sum()  # graph line
    text = str(y.graph({"x": x, "w": w}))
    site = f"@ {os.path.join('tests', 'test_anomaly_sites.py')}:{line_of('graph line')} in "
    assert site + "test_graph_shows_the_innermost_line_with_a_short_path: y = Net.forward" in text, text
    assert f":{line_of('layer line')} in forward: return x.linear(self.w)  # layer line" in text, text
    assert str(HERE) not in text, "the full path made every line ~150 characters"
    node = next(n for n in y.graph().nodes if n.op == "Linear")
    assert str(node.built_at).startswith(os.path.join("tests", "test_anomaly_sites.py") + ":")


def test_a_backend_defined_in_the_users_own_module_keeps_the_users_lines() -> None:
    """A backend class written in a test module, script or notebook (register_backend, as the guide
    suggests): anomaly mode skipped the backend's module to hide a composing backend's frames, and
    so dropped every user frame ("op built at an unknown place"); graph() and to_dot() then raised
    IndexError on the empty site."""
    from topgrad import registry

    class ModuleBackend(type(topgrad.get_backend())):  # type: ignore[misc]
        """The selected backend, as a class of this test module."""

    topgrad.register_backend(topgrad.BackendSpec("anomaly-module-backend", ModuleBackend))
    try:
        topgrad.set_backend("anomaly-module-backend")
        x = Tensor([[1.0, -2.0]])
        with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
            x.log()  # the user's line
        assert chain(info.value) == [(line_of("the user's line"),
                                      "test_a_backend_defined_in_the_users_own_module_keeps_the_users_lines",
                                      "x.log()  # the user's line")], str(info.value)
        with topgrad.detect_anomaly():
            y = (x * 2.0).sum()  # finite
        assert "# finite" in str(y.graph()) and topgrad.viz.to_dot(y).startswith("digraph")
    finally:
        registry._in_process.pop("anomaly-module-backend")
        registry._loaded.pop("anomaly-module-backend", None)


def test_a_backward_whose_forward_ran_before_anomaly_mode_says_why_its_site_is_unknown() -> None:
    y = Tensor([0.0, 4.0]).sqrt().sum()  # forward outside anomaly mode: no site recorded
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        y.backward()
    assert str(info.value).endswith(
        "op built at an unknown place: its forward ran before anomaly mode began (run the forward "
        "pass inside detect_anomaly() too, to see where)"), str(info.value)


def test_a_number_operand_that_is_inf_is_blamed_on_the_line_not_on_data() -> None:
    """x / 0.0 was reported as a Mul whose input "came from outside this op: data, parameters or
    an op run before anomaly mode began"; the user's own divisor made the inf."""
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError) as info:
        Tensor([1.0, 0.0]) / 0.0  # divided here
    text = str(info.value)
    assert ("input 1 is the number inf, given by the line that built it (x / 0 is computed as "
            "x * inf)") in text and "outside this op" not in text, text
    assert chain(info.value)[-1][0] == line_of("divided here")


def test_a_leaf_whose_uses_gradients_sum_to_inf_is_caught_and_named() -> None:
    """w used twice, each use's gradient 3e38 (finite): their sum in w.grad is Inf. Anomaly mode
    checked each op's returned gradients only, so the backward passed and the next step would
    write Inf into w; the same sum at an intermediate tensor was caught. PyTorch's misses it too."""
    w, big = Tensor([1e-30, 1e-30]), Tensor([3e38, 3e38], requires_grad=False)
    with topgrad.detect_anomaly(names={"w": w}), pytest.raises(AnomalyError) as info:
        ((w * big).sum() + (w * big).sum()).backward()
    err = info.value
    assert (err.op, err.phase) == ("leaf", "backward"), str(err)
    assert str(err).startswith("leaf 'w', shape (2,): its gradient in .grad has 2 Inf among 2 values, "
                               "though every gradient the ops returned for it was finite: their sum made "
                               "them"), str(err)
    finite = Tensor([1.0, 2.0])
    with topgrad.detect_anomaly():  # an ordinary leaf, used twice, passes
        ((finite * 2.0).sum() + (finite * 3.0).sum()).backward()
    assert finite.grad.tolist() == [5.0, 5.0]


def test_a_leaf_grad_that_held_inf_before_this_backward_is_caught() -> None:
    """A .grad left from an earlier backward (outside anomaly mode) plus this one's: the message
    names that way too, and how to clear it."""
    w = Tensor([1.0, 2.0])
    (w * 3e38).sum().backward()
    (w * 3e38).sum().backward()  # no anomaly mode: w.grad = 6e38, Inf
    with topgrad.detect_anomaly(), pytest.raises(AnomalyError, match=r"or the \.grad they were added to "
                                                  r"held them .*opt\.zero_grad\(\) clears it"):
        (w * 1.0).sum().backward()


def test_anomaly_mode_off_records_no_site() -> None:
    x = Tensor([1.0, 2.0])
    y = x * 2.0
    assert getattr(y.op, "_built_at", None) is None and not topgrad.Op._observers
    with topgrad.detect_anomaly():
        z = x * 2.0
    site = getattr(z.op, "_built_at", None)
    assert isinstance(site, anomaly.BuiltAt)
    assert all(isinstance(code, CodeType) and isinstance(n, int)
               for code, n in site.frames), "code objects and line numbers: no frames kept"


def test_names_must_map_names_to_tensors() -> None:
    with pytest.raises(TypeError, match=r"detect_anomaly: names maps names to Tensors.*got a list"):
        with topgrad.detect_anomaly(names=[Tensor([1.0])]):  # type: ignore[arg-type]
            pass
    assert not topgrad.Op._observers


def test_inf_false_lets_a_minus_inf_mask_through_and_still_stops_at_nan() -> None:
    """An additive -inf mask before a softmax stopped anomaly mode at Add's forward, where
    PyTorch's anomaly mode (NaN in backward only) runs; `inf=False` checks NaN alone."""
    import torch

    x = rand((2, 3), 71)
    mask = np.array([[0.0, -np.inf, 0.0], [0.0, 0.0, -np.inf]], np.float32)
    t, tx = Tensor(x), torch.tensor(x, requires_grad=True)
    with pytest.raises(AnomalyError, match=r"Add \(forward\).*2 Inf"):
        with topgrad.detect_anomaly():
            (t + Tensor(mask, requires_grad=False)).logsoftmax().sum()
    with topgrad.detect_anomaly(inf=False):
        (t + Tensor(mask, requires_grad=False)).logsoftmax().mean(axis=0).sum().backward()
    torch.log_softmax(tx + torch.tensor(mask), dim=-1).mean(dim=0).sum().backward()
    np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    y = Tensor(np.array([0.0, 1.0], np.float32))
    with pytest.raises(AnomalyError, match=r"Mul \(forward\).*1 NaN.*held no NaN \(Inf is not checked"):
        with topgrad.detect_anomaly(inf=False):
            y.log() * 0.0
    with pytest.raises(TypeError, match="inf is True or False"):
        with topgrad.detect_anomaly(inf="no"):  # type: ignore[arg-type]
            pass


def test_code_in_a_package_named_like_topgrad_next_to_it_is_the_users() -> None:
    """Installed, site-packages/topgrad_examples/ begins with site-packages/topgrad: the frames of
    the example models (and of any topgrad_* package beside topgrad) were left out of the chain as
    if they were topgrad's own, so a fresh install reported one frame where the repository's
    editable install reported four."""
    beside = warning_location.TOPGRAD_DIR.rstrip(os.sep) + "_examples" + os.sep + "models.py"
    namespace: dict[str, Any] = {"Tensor": Tensor}
    exec(compile("def forward(x, w):\n    return x * w\n", beside, "exec"), namespace)
    x, w = Tensor(rand((3,), 72)), Tensor(np.array([1.0, np.nan, 1.0], np.float32))
    with pytest.raises(AnomalyError) as caught:
        with topgrad.detect_anomaly():
            namespace["forward"](x, w)
    where = os.path.join("topgrad_examples", "models.py") + ":2 in forward"
    assert caught.value.built_at is not None and caught.value.built_at.endswith(where), caught.value
