"""What `t.graph()` and `topgrad.profile()` print, read as a newcomer reads it: arrays an op keeps
as attributes are told apart from saved ones, the total row is the memory (each array once),
the `names:` note lists only what is worth a look, columns fit their content, an op's kept
settings name themselves, and the profile's saved column says it is a sum over calls.

Backend-agnostic: runs on every backend, as tests/test_introspection.py does.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import (
    no_observer_left_behind,  # noqa: F401 - autouse: no test leaves an observer
    rand,
)
from topgrad import Op, Tensor
from topgrad.graph import human_bytes


class _KeepsX(Op):
    """A user's op that keeps its input as an attribute instead of saving it."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return topgrad.get_backend().mul(x, x)

    def backward(self, grad: Any) -> tuple[Any]:
        b = topgrad.get_backend()
        return (b.mul(b.mul(grad, self.x), 2.0),)


def _lines(text: str, start: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.lstrip().startswith(start)]


# ---- 1. arrays kept as attributes -----------------------------------------------------------
def test_an_array_kept_as_an_attribute_is_tagged_before_and_after_backward() -> None:
    """`self.x = x` showed as `saves x`, like a saved array, and after backward was still listed
    with no word that backward had not released it."""
    x = Tensor(rand((4, 5), 1))
    y = _KeepsX.apply(x).relu().sum()
    for when in ("before", "after"):
        if when == "after":
            y.backward()
        g = y.graph({"x": x})
        text = str(g)
        keep = next(n for n in g.ops if n.op == "_KeepsX")
        assert [(s.name, s.attribute) for s in keep.saved] == [("x", True)], text
        relu = next(n for n in g.ops if n.op == "ReLU")
        assert all(not s.attribute for s in relu.saved), text
        (kept,) = _lines(text, "keeps ")
        assert re.fullmatch(r"keeps x\s+\(4, 5\)\s+float32\s+80 B\s+same array as input 0\s+"
                            r"\(attribute, not released by backward\)", kept), text
        assert "keeps: an array held as an op attribute" in text, f"{when} backward: no footnote\n{text}"
        assert not any("attribute" in line for line in _lines(text, "saves ")), text
    assert "(attribute, not released by backward)" not in str((x * x).sum().graph()), \
        "no tag, and no footnote, where no op keeps an attribute"
    assert "keeps:" not in str((x * x).sum().graph())


def test_the_picture_says_keeps_for_an_attribute_too(tmp_path: Any) -> None:
    """viz.to_dot drew an attribute-held array as `saves x`, as the text did."""
    y = _KeepsX.apply(Tensor(rand((4, 5), 1))).relu().sum()
    dot = tmp_path / "g.dot"
    topgrad.viz.to_dot(y, dot)
    text = dot.read_text()
    assert "keeps x (4, 5)" in text and "saves x (4, 5)" not in text, text


# ---- 2. the total row -----------------------------------------------------------------------
def test_the_total_row_counts_each_saved_array_once() -> None:
    """The total row added the rows, so an array two ops saved (a ReLU's output, which the next
    Linear saves too) was in it twice; the real figures were only in a note below."""
    x = Tensor(rand((8, 6), 1), requires_grad=False)
    w1, w2 = Tensor(rand((6, 5), 2)), Tensor(rand((5, 3), 3))
    g = x.linear(w1).relu().linear(w2).sum().graph()
    assert g.saved_bytes > g.distinct_saved_bytes, "the ReLU's output is saved twice"
    text = str(g)
    (total,) = [line for line in text.splitlines() if line.startswith("  total ")]
    count, arrays, saved, saved_unit, extra, extra_unit = total.split()[1:7]
    assert f"{saved} {saved_unit}" == human_bytes(g.distinct_saved_bytes), text
    assert f"{extra} {extra_unit}" == human_bytes(g.distinct_extra_bytes), text
    assert int(arrays) == g.distinct_saved_arrays < sum(len(n.saved) for n in g.ops), text
    assert int(count) == len(g.ops)
    rows_sum = f"{human_bytes(g.saved_bytes)} saved, {human_bytes(g.extra_saved_bytes)} extra"
    assert f"rows\n   add up to {rows_sum}" in text, text


def test_output_bytes_count_every_ops_output_freed_or_held() -> None:
    """The footer says what "output bytes" counts: every op's output at its size, whether the
    output is still held or already freed (here all but the last are freed)."""
    x = Tensor(rand((8, 6), 1))
    loss = (x * 2.0).relu().sum()
    g = loss.graph()
    assert sum(1 for n in g.ops if n.op != "Sum") == 2
    row = next(line for line in str(g).splitlines() if line.startswith("  total "))
    assert row.endswith(human_bytes(2 * 8 * 6 * 4 + 4)), str(g)
    assert "output bytes: every op's output at its size, whether still held or already freed" in str(g)


# ---- 3. the names: note ---------------------------------------------------------------------
def test_names_of_running_statistics_and_constants_are_not_listed_as_missing() -> None:
    """`model.state()` names BatchNorm's running statistics, which the op reads by keyword (no
    node): deepconv's graph printed 18 of them as "not in this graph". They are constants (the
    example models make them so, as PyTorch's buffers), and a constant that is not in the graph
    (another batch) is not listed; a trainable tensor that is not in it is."""
    x, gamma, beta = Tensor(rand((4, 3), 1)), Tensor(rand((3,), 2)), Tensor(rand((3,), 3))
    running_mean, running_var = Tensor.zeros(3, requires_grad=False), Tensor.ones(3, requires_grad=False)
    other_batch = Tensor(rand((4, 3), 4), requires_grad=False)
    y = x.batchnorm(gamma, beta, running_mean=running_mean, running_var=running_var, training=True).sum()
    names = {"x": x, "bn.gamma": gamma, "bn.beta": beta, "bn.running_mean": running_mean,
             "bn.running_var": running_var, "other": other_batch}
    assert "names:" not in str(y.graph(names)), str(y.graph(names))
    stale = Tensor(rand((3,), 5))
    assert "not in this graph, so not shown: 'head.w'" in str(y.graph({**names, "head.w": stale}))


def test_a_reshaped_input_is_named_once_with_why() -> None:
    """The example models reshape the image batch before use: the named batch is not a node, a
    view of it is. The note says so once, shortly, and which leaf shares its memory."""
    images = Tensor(rand((2, 4, 3), 1), requires_grad=False)
    w = Tensor(rand((12, 2), 2))
    text = str(images.reshape(2, 12).linear(w).sum().graph({"images": images, "w": w}))
    assert _lines(text, "names:") == [
        "names: not in this graph, as a reshaped or sliced tensor is a new one: "
        "'images' (%0 shares its memory)"
    ], text


def test_a_named_input_sliced_at_every_step_lists_its_first_views_only() -> None:
    """An RNN over xs[t] for 200 steps: the note was one line of 1230 characters listing every
    slice's %i, and called the slices "reshaped"."""
    xs = Tensor(rand((200, 2, 3), 3), requires_grad=False)
    w = Tensor(rand((3, 3), 4))
    h = xs[0].linear(w)
    for t in range(1, 200):
        h = (xs[t] + h).linear(w)
    (line,) = _lines(str(h.sum().graph({"xs": xs, "w": w})), "names:")
    assert line.startswith("names: not in this graph, as a reshaped or sliced tensor is a new one: 'xs' (%")
    assert line.endswith(" and 194 more share its memory)") and len(line) < 200, line


def test_a_slice_of_the_same_dataset_is_not_said_to_share_the_batchs_memory() -> None:
    """A stale batch `data[0:4]` beside the one used (`data[4:8]`, reshaped) was reported as "%0
    shares its memory": both are views of one dataset array, yet they share no element."""
    data = rand((8, 2, 3), 7)
    used, stale = Tensor(data[4:8], requires_grad=False), Tensor(data[0:4], requires_grad=False)
    w = Tensor(rand((6, 2), 8))
    text = str(used.reshape(4, 6).linear(w).sum().graph({"batch": stale, "used": used, "w": w}))
    assert "'batch'" not in text, text
    assert "'used' (%0 shares its memory)" in text, text


def test_a_long_list_of_missing_names_is_shortened() -> None:
    x, w = Tensor(rand((2, 3), 1)), Tensor(rand((3, 2), 2))
    stale = {f"stale{i}": Tensor(rand((2,), 10 + i)) for i in range(10)}
    text = str((x @ w).sum().graph({"x": x, "w": w, **stale}))
    (note,) = _lines(text, "names:")
    assert note == ("names: not in this graph, so not shown: 'stale0', 'stale1', 'stale2', 'stale3', "
                    "'stale4', 'stale5' and 4 more"), text


# ---- 4. columns -----------------------------------------------------------------------------
def test_columns_are_as_wide_as_their_longest_entry() -> None:
    """A shape over 16 characters, (128, 28, 28, 16), pushed the dtype column out of line."""
    x = Tensor(np.ones((2, 3, 4, 5, 6), np.float32))
    y = (x * Tensor(np.ones((6,), np.float32))).sum()
    text = str(y.graph())
    heads = [line for line in text.splitlines() if line.startswith("  %")]
    assert len({line.index("float32") for line in heads}) == 1, text
    saves = [line for line in text.splitlines() if line.lstrip().startswith("saves ")]
    assert len(saves) >= 2 and len({line.index("float32") for line in saves}) == 1, text
    ends = {re.search(r"\d B|KiB", line).end() for line in saves}  # type: ignore[union-attr]
    assert len(ends) == 1, f"bytes right-aligned: {text}"
    small = str((Tensor(rand((2,), 1)) * 2.0).graph())
    assert "(2,)  float32" in small, "narrow shapes: no 16-character column"


# ---- 5. kept settings -----------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_norm_ops_keep_has_gamma_and_has_beta_by_name(norm: str) -> None:
    """numpy's BatchNorm and LayerNorm showed `kept: has=(True, True)`; the triton backend's
    keep has_gamma and has_beta, as Linear keeps has_bias."""
    x, gamma = Tensor(rand((4, 3), 1)), Tensor(rand((3,), 2))
    y = x.batchnorm(gamma, None) if norm == "batchnorm" else x.layernorm(gamma, None)  # type: ignore[arg-type]
    node = y.graph().nodes[-1]
    assert node.attrs.get("has_gamma") is True and node.attrs.get("has_beta") is False, node.attrs
    assert "has=" not in str(y.graph())
    y.sum().backward()
    assert gamma.grad is not None


# ---- 6. the profile's saved column ----------------------------------------------------------
def test_the_profiles_saved_column_says_it_is_a_sum_over_calls() -> None:
    x, w = Tensor(rand((4, 3), 1)), Tensor(rand((3, 2), 2))
    with topgrad.profile() as p:
        for _ in range(3):
            (x @ w).sum().backward()
    head, rule, *rows = str(p).splitlines()
    assert head.endswith("saved (sum over calls)") and len(rule) == len(head), str(p)
    linear = next(line for line in rows if line.split()[0] == "Linear")
    assert linear.endswith(human_bytes(p.stats["Linear"].saved_bytes)) and len(linear) == len(head), str(p)
