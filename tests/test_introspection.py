"""The inspection tools: t.graph(), topgrad.viz, topgrad.profile, gradcheck, detect_anomaly, TOPGRAD_TRACE.

Every tool works through the Op protocol, so these tests run unchanged on every backend.
The saved-memory formulas per backend are the table in docs/cost-table.md.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import topgrad
from helpers import (
    Sizes,
    no_observer_left_behind,  # noqa: F401 - autouse: no test leaves an observer
    rand,
    to_numpy,
)
from topgrad import Op, Tensor
from topgrad.gradcheck import GradcheckError
from topgrad.graph import human_bytes as human
from topgrad.trace import tracing

F32 = 4  # bytes per element


@pytest.fixture
def sizes(interpreted: bool) -> Sizes:
    return Sizes.for_run(interpreted)


def _mlp_loss(seed: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
    x, w1, b1, w2 = (Tensor(rand(s, seed + i)) for i, s in enumerate([(4, 6), (6, 5), (5,), (5, 3)]))
    loss = (x.linear(w1, b1).relu().linear(w2).logsoftmax() * 2.0).mean()
    return loss, {"x": x, "w1": w1, "b1": b1, "w2": w2}


# ---- t.graph() ------------------------------------------------------------------------------
def test_graph_lists_every_node_once_in_topological_order() -> None:
    loss, tensors = _mlp_loss()
    g = loss.graph(tensors)
    assert [n.op for n in g.ops] == ["Linear", "ReLU", "Linear", "LogSoftmax", "Mul", "Mean"]
    assert len(g) == len(g.ops) + 4, "the four leaves are nodes too"
    for n in g:
        assert n.index == g.nodes.index(n)
        for p in n.parents:
            if p.startswith("%"):
                assert int(p[1:]) < n.index, f"node %{n.index} comes before its parent {p}"
    assert g.nodes[-1].shape == () and g.nodes[-1].op == "Mean"
    assert {n.name for n in g if n.op is None} == {"x", "w1", "b1", "w2"}
    first = g.ops[0]
    assert first.shape == (4, 5) and first.parents == ("%0", "%1", "%2")
    mul = g.ops[4]
    assert mul.parents[1] == "2.0", "a Python scalar argument is shown as its value"


def test_print_graph_shows_ops_shapes_saved_arrays_and_totals() -> None:
    loss, tensors = _mlp_loss()
    text = str(loss.graph(tensors))
    for word in ("Linear", "ReLU", "LogSoftmax", "Mean", "(4, 5)", "saves", "total", "w1"):
        assert word in text, f"{word!r} missing from the printed graph:\n{text}"
    totals = loss.graph().totals()
    assert totals["Linear"].count == 2
    assert sum(t.saved_bytes for t in totals.values()) == loss.graph().saved_bytes


def test_graph_totals_count_an_array_two_saves_share_once() -> None:
    """h * h saves h twice: the per-op sums count it twice, the distinct totals (the memory)
    once; with no Tensor left holding h, it is memory held only for backward."""
    x, w = Tensor(rand((4, 6), 1), requires_grad=False), Tensor(rand((6, 5), 2))

    def square_sum(h: Tensor) -> Tensor:
        return (h * h).sum()

    g = square_sum(x.linear(w)).graph()  # h is gone once square_sum returns
    h_bytes = 4 * 5 * F32
    assert g.saved_bytes - g.distinct_saved_bytes == h_bytes
    assert g.extra_saved_bytes - g.distinct_extra_bytes == h_bytes
    assert g.distinct_extra_bytes == h_bytes, "only h is held for backward alone"
    text = str(g)
    total = f"{human(g.distinct_saved_bytes)}\\s+{h_bytes} B"  # the total row counts h once
    assert re.search(rf"^  total\s+3\s+3\s+{total}\s", text, re.M), text
    assert re.search(r"^  %0\s+const ", text, re.M), text
    assert re.search(r"^  %1\s+leaf ", text, re.M), text


def test_a_save_two_ops_share_is_labelled_whatever_tensors_your_code_holds() -> None:
    """Two Linears read `a` and each saves it: one array. Without `a` held, its output can no
    longer be named, but the second save says which earlier save it is (it said nothing, as if
    it were an array of its own: on numpy, ReLU's saved output and the next Linear's input were
    the learner's case); with `a` held, both saves are `input 0`."""
    x = Tensor(rand((4, 3), 1), requires_grad=False)
    w1, w2, w3 = Tensor(rand((3, 5), 2)), Tensor(rand((5, 2), 3)), Tensor(rand((5, 2), 4))

    def branches(a: Tensor) -> Tensor:
        return (a.linear(w2) + a.linear(w3)).sum()

    text = str(branches(x.linear(w1)).graph())
    firsts = re.findall(r"^  %(\d+)\s+Linear .*<- %2, .*\n\s+saves x .*\d B( .*)?$", text, re.M)
    assert [label for _, label in firsts] == ["", f"  same array as %{firsts[0][0]} x"], text
    a = x.linear(w1)
    text = str(branches(a).graph({"a": a}))
    inputs = re.findall(r"^  %\d+\s+Linear .*<- %2, .*\n\s+saves x .*same array as input 0$", text, re.M)
    assert len(inputs) == 2, text


def test_saves_are_named_by_their_keywords_and_read_back_in_order() -> None:
    """`save_for_backward(*arrays, **named)`: graph() shows a keyword's name, #i for a positional
    array; `saved` holds the positional ones first, then the named, in the order given."""
    B = topgrad.get_backend()

    class Scale(Op):
        def forward(self, x: Any, s: Any) -> Any:
            self.save_for_backward(x, scale=s)
            return B.mul(x, s)

        def backward(self, grad: Any) -> tuple[Any, Any]:
            _, s = self.saved
            return B.mul(grad, s), None

    x = Tensor(rand((2, 3), 1))
    y = Scale.apply(x, 3.0)
    assert y.op.saved[0] is x.data and y.op.saved[1] == 3.0
    text = str(y.graph())
    assert re.search(r"^        saves #0 .*same array as input 0$", text, re.M), text
    y.sum().backward()
    assert np.allclose(np.asarray(B.to_numpy(x.grad)), 3.0)


def test_a_second_save_for_backward_leaves_no_stale_names() -> None:
    """save_for_backward(x=a), then save_for_backward(a, e): the first array kept the name "x"."""
    B = topgrad.get_backend()

    class SavesTwice(Op):
        def forward(self, x: Any) -> Any:
            self.save_for_backward(x=x)
            e = B.mul(x, 2.0)
            self.save_for_backward(x, e)
            return e

        def backward(self, grad: Any) -> tuple[Any]:
            return (B.mul(grad, 2.0),)

    text = str(SavesTwice.apply(Tensor(rand((2, 3), 1))).graph())
    assert re.search(r"^        saves #0 ", text, re.M) and "saves x " not in text, text


def test_every_op_of_the_example_models_names_what_it_saved() -> None:
    """A learner reads `saves x_minus_mean`, not `saves #0`: each backend's ops name their saves
    (a third-party backend may leave them positional)."""
    from topgrad_examples.models import MODELS

    pixels = Tensor(rand((2, 28, 28, 1), 1), requires_grad=False)
    for name, model in MODELS.items():
        text = str(model(seed=0)(pixels, training=True).sum().graph())
        assert "saves #" not in text, f"{name}:\n{text}"
        assert re.search(r"^        saves [a-z]", text, re.M), f"{name}:\n{text}"


def test_graph_of_a_constant_says_why_it_has_no_ops() -> None:
    """A no_grad result is a lone constant, as an input batch is: the graph says which kinds of
    tensor record no graph (it looked like an input and said "1 leaves")."""
    x = Tensor(rand((2, 3), 1))
    with topgrad.no_grad():
        y = (x * 2.0).sum()
    text = str(y.graph())
    assert text.startswith("graph: 0 ops, 1 leaf\n  (a constant: an input made with requires_grad=False, or "
                           "a result computed\n   under no_grad or from constants only"), text
    assert str(x.graph()).startswith("graph: 0 ops, 1 leaf\n  %0    leaf"), "a trainable leaf: no note"
    assert str((x * 2.0).graph()).startswith("graph: 1 op, 1 leaf\n"), "one op"


def test_graph_shows_kept_numbers_as_python_writes_them() -> None:
    """`x * 2.0` kept number=2.0 (it showed 2, beside the parent 2.0); long floats keep six
    significant digits (0.1235 was four)."""
    x = Tensor(rand((2, 3), 1))
    assert "[kept: number=2.0]" in str((x * 2.0).graph())
    assert "[kept: number=0.123457]" in str((x * 0.123456789).graph())


def test_graph_shows_a_convolutions_stride_and_padding() -> None:
    x, w = Tensor(rand((1, 5, 5, 2), 1)), Tensor(rand((3, 3, 2, 4), 2))
    text = str(x.conv2d(w, stride=2, padding=1).graph())
    assert re.search(r"Conv2d .*\[kept: .*stride=\(?2", text) and re.search(r"padding=\(?1", text), text


def test_to_dot_says_names_go_by_keyword() -> None:
    loss, tensors = _mlp_loss()
    with pytest.raises(TypeError, match="names by keyword"):
        topgrad.viz.to_dot(loss, tensors)  # type: ignore[arg-type]


def test_graph_after_backward_shows_nothing_saved() -> None:
    loss, _ = _mlp_loss()
    before = loss.graph()
    assert before.saved_bytes > 0
    loss.backward()
    g = loss.graph()
    assert all(after.released for earlier, after in zip(before.ops, g.ops) if earlier.saved), \
        "the ops that saved arrays are released (the others may run backward again)"
    assert not any(s.name.startswith("#") for n in g.ops for s in n.saved), \
        "backward releases what save_for_backward kept"
    assert "released" in str(g)


def test_a_saved_view_of_a_leaf_is_not_extra() -> None:
    """Linear saves the Reshape's output, a view of x: while x lives it costs nothing extra,
    though its own producer (the Reshape) has no live output."""
    x, w = Tensor(rand((8, 2, 4), 5)), Tensor(rand((8, 3), 6))
    g = (x.reshape(8, 8) @ w).graph({"x": x, "w": w})
    assert g.distinct_saved_bytes == 8 * 8 * 4 + 8 * 3 * 4 and g.distinct_extra_bytes == 0, str(g)
    assert g.extra_saved_bytes == 0, str(g)  # the op's row agrees with the footer


def test_views_of_one_buffer_are_not_the_same_array() -> None:
    """graph() compared memory owners: `x[0] * x[1]` showed b as "same array as input 0", and the
    saves of two disjoint views counted once, at the size of one. A saved view of a dropped
    buffer keeps the whole buffer alive: the footer counts the buffer."""
    x = Tensor(np.arange(8, dtype=np.float32).reshape(2, 4))
    a, b = x[0], x[1]
    g = (a * b).sum().graph({"x": x, "a": a, "b": b})
    mul = next(n for n in g.ops if n.op == "Mul")
    assert [s.label for s in mul.saved] == ["same array as input 0", "same array as input 1"], str(g)
    assert g.distinct_saved_bytes == 32, str(g)
    z = x * 1.0
    p = (z[0] * z[1]).sum()
    del z
    g = p.graph()
    mul = [n for n in g.ops if n.op == "Mul"][-1]
    assert [s.label for s in mul.saved] == ["", f"shares memory with %{mul.index} a"], str(g)
    assert g.distinct_saved_bytes == g.distinct_extra_bytes == 32, str(g)
    big = Tensor(np.ones((100, 100), np.float32))
    z = big * 2.0
    p = (z[0] * Tensor(np.ones(100, np.float32))).sum()
    del z
    assert p.graph().distinct_extra_bytes == 100 * 100 * 4  # z[0] keeps all of z alive
    images = np.zeros((1000, 16), np.float32)  # a batch sliced from a dataset your code holds
    batch = Tensor(images[:8], requires_grad=False)
    g = batch.linear(Tensor(rand((16, 2), 4))).sum().graph()
    assert g.distinct_saved_bytes == 8 * 16 * 4 + 16 * 2 * 4, str(g)  # not the whole dataset


def test_graph_says_which_names_label_nothing_or_a_tensor_named_already() -> None:
    """A typo'd or stale tensor in `names` was ignored without a word, and of two names for one
    tensor the last was shown silently."""
    x, w, stale = Tensor(rand((2, 3), 1)), Tensor(rand((3, 2), 2)), Tensor(rand((2,), 3))
    text = str((x @ w).sum().graph({"x": x, "w": w, "weights": w, "stale": stale}))
    assert text.splitlines()[-2:] == ["  names: not in this graph, so not shown: 'stale'",
                                      "  names: 'w' names the same tensor as 'weights', which is shown"], text
    assert "names:" not in str((x @ w).sum().graph({"x": x, "w": w}))


def test_a_saved_view_of_a_live_intermediate_is_not_extra() -> None:
    """h = x + y, still held; Linear saves h.reshape(...), a view of h. The row and the footer
    said 512 B extra (only a direct input or the output counted as held)."""
    x, y, w = Tensor(rand((8, 4, 4), 7)), Tensor(rand((8, 4, 4), 8)), Tensor(rand((16, 3), 9))
    h = x + y
    g = h.reshape(8, 16).linear(w).graph({"h": h})
    linear = g.ops[-1]
    assert [s.alias for s in linear.saved] == ["%2 (live)", "input 1"], str(g)
    assert g.extra_saved_bytes == 0 and g.distinct_extra_bytes == 0, str(g)
    assert "shares memory with %2 (live)" in str(g)  # a reshape: h's memory, not h's very array
    g = (x + y).reshape(8, 16).linear(w).graph()  # no live h: only the Linear keeps that memory
    assert g.distinct_extra_bytes == 8 * 16 * 4, str(g)


def test_graph_of_a_leaf_and_of_a_no_grad_result() -> None:
    x = Tensor(rand((2, 3), 1))
    assert len(x.graph()) == 1 and x.graph().ops == []
    with topgrad.no_grad():
        y = x * 2.0
    assert len(y.graph()) == 1


def _attention_inputs(s: Sizes) -> list[np.ndarray]:
    B, T, S, D = 2, s.tokens, s.tokens - 1, s.dim
    return [rand((B, T, D), 1), rand((B, S, D), 2), rand((B, S, D), 3)]


# Per backend: op -> (inputs, function, (saved floats, extra floats)) from docs/cost-table.md.
def _cases(s: Sizes) -> dict[str, tuple[list[np.ndarray], Callable[..., Tensor]]]:
    N, D, M = s.batch * 2, s.dim, s.dim // 2 + 1
    B, H, C, Co, k, stride, pad = 2, s.image, s.channels, s.channels + 1, 3, 2, 1
    return {
        "Linear": ([rand((2, s.batch, D), 1), rand((D, M), 2), rand((M,), 3)],
                   lambda x, w, b: x.linear(w, b)),
        "Conv2d": ([rand((B, H, H, C), 4), rand((k, k, C, Co), 5), rand((Co,), 6)],
                   lambda x, w, b: x.conv2d(w, b, stride=stride, padding=pad)),
        "Conv2d-1x1": ([rand((B, H, H, C), 4), rand((1, 1, C, Co), 5)], lambda x, w: x.conv2d(w)),
        "BatchNorm": ([rand((N, 3, C), 7), rand((C,), 8), rand((C,), 9)],
                      lambda x, g, b: x.batchnorm(g, b)),
        "BatchNorm-eval": ([rand((N, 3, C), 7), rand((C,), 8), rand((C,), 9), rand((C,), 18),
                            np.abs(rand((C,), 19)) + 0.5],
                           lambda x, g, b, rm, rv: x.batchnorm(g, b, running_mean=rm, running_var=rv,
                                                                training=False)),
        "LayerNorm": ([rand((N, 3, D), 10), rand((D,), 11), rand((D,), 12)],
                      lambda x, g, b: x.layernorm(g, b)),
        "Attention": (_attention_inputs(s), lambda q, k_, v: topgrad.attention(q, k_, v)),
        "Mul": ([rand((N, D), 13), rand((D,), 14)], lambda a, b: a * b),
        "Mul-scalar": ([rand((N, D), 15)], lambda a: a * 2.0),  # keeps only the 2.0, as PyTorch
        "Mul-sub": ([rand((N, D), 16), rand((N, D), 17)], lambda a, b: a - b),  # a + b * -1.0
        # a constant mask: a is read only for the mask's gradient, which is never computed
        "Mul-mask": ([rand((N, D), 18), rand((N, D), 19)], lambda a, m: a * m.detach()),
    }


def _dims(case: str, inputs: list[np.ndarray]) -> dict[str, int]:
    x = inputs[0]
    if case == "Linear":
        return {"N": math.prod(x.shape[:-1]), "D": x.shape[-1], "M": inputs[1].shape[1]}
    if case.startswith("Conv2d"):
        kh, kw, cin, cout = inputs[1].shape
        stride, pad = (2, 1) if case == "Conv2d" else (1, 0)
        ho = (x.shape[1] + 2 * pad - kh) // stride + 1
        wo = (x.shape[2] + 2 * pad - kw) // stride + 1
        return {"X": x.size, "P": x.shape[0] * ho * wo, "K": kh * kw * cin, "Cout": cout,
                "pointwise": int(kh == kw == 1 and stride == 1 and pad == 0)}
    if case in ("BatchNorm", "BatchNorm-eval", "LayerNorm"):
        return {"N": math.prod(x.shape[:-1]), "C": x.shape[-1]}
    if case.startswith("Mul"):
        return {"n_a": x.size, "n_b": inputs[1].size if case in ("Mul", "Mul-mask") else 0}
    B, T, D = x.shape
    return {"B": B, "T": T, "S": inputs[1].shape[1], "D": D}


def _conv(d: dict[str, int]) -> tuple[int, int]:
    return d["P"] * d["K"] + d["K"] * d["Cout"], 0 if d["pointwise"] else d["P"] * d["K"]


MUL: dict[str, Callable[[dict[str, int]], tuple[int, int]]] = {
    "Mul": lambda d: (d["n_a"] + d["n_b"], 0),
    "Mul-scalar": lambda d: (0, 0),
    "Mul-sub": lambda d: (0, 0),
    "Mul-mask": lambda d: (d["n_b"], 0),
}

SAVED_FLOATS: dict[str, dict[str, Callable[[dict[str, int]], tuple[int, int]]]] = {
    "numpy": {
        "Linear": lambda d: (d["N"] * d["D"] + d["D"] * d["M"], 0),
        "Conv2d": lambda d: (d["X"] + d["K"] * d["Cout"], 0),
        "Conv2d-1x1": lambda d: (d["X"] + d["K"] * d["Cout"], 0),
        "BatchNorm": lambda d: (d["N"] * d["C"] + 3 * d["C"], d["N"] * d["C"] + 2 * d["C"]),
        "BatchNorm-eval": lambda d: (d["N"] * d["C"] + 4 * d["C"], 3 * d["C"]),
        "LayerNorm": lambda d: (d["N"] * d["C"] + d["N"] + d["C"], d["N"] * d["C"] + d["N"]),
        "Attention": lambda d: (d["B"] * d["T"] * d["D"] + 2 * d["B"] * d["S"] * d["D"]
                                + d["B"] * d["T"] * d["S"], d["B"] * d["T"] * d["S"]),
        **MUL,
    },
    "triton": {
        "Linear": lambda d: (d["N"] * d["D"] + d["D"] * d["M"], 0),
        "Conv2d": _conv,
        "Conv2d-1x1": _conv,
        "BatchNorm": lambda d: (d["N"] * d["C"] + 3 * d["C"], 2 * d["C"]),
        "BatchNorm-eval": lambda d: (d["N"] * d["C"] + 3 * d["C"], 2 * d["C"]),
        "LayerNorm": lambda d: (d["N"] * d["C"] + d["C"] + 2 * d["N"], 2 * d["N"]),
        "Attention": lambda d: (d["B"] * d["T"] * d["D"] + 2 * d["B"] * d["S"] * d["D"]
                                + 2 * d["B"] * d["T"], 2 * d["B"] * d["T"]),
        **MUL,
    },
}


@pytest.mark.parametrize("case", ["Linear", "Conv2d", "Conv2d-1x1", "BatchNorm", "BatchNorm-eval",
                                  "LayerNorm", "Attention", "Mul", "Mul-scalar", "Mul-sub", "Mul-mask"])
def test_saved_bytes_match_the_cost_table(case: str, backend_name: str, sizes: Sizes) -> None:
    if backend_name not in SAVED_FLOATS:
        pytest.skip(f"no saved-memory formulas for backend {backend_name!r} in docs/cost-table.md")
    inputs, fn = _cases(sizes)[case]
    out = fn(*(Tensor(a) for a in inputs))
    node = next(n for n in reversed(out.graph().nodes) if n.op == case.split("-")[0])
    saved, extra = SAVED_FLOATS[backend_name][case](_dims(case, inputs))
    detail = "\n".join(f"  {s.name} {s.shape} {s.dtype} {s.nbytes} B alias={s.alias}" for s in node.saved)
    assert node.saved_bytes == F32 * saved, (
        f"{case} saved {node.saved_bytes} B, the table says {F32 * saved}:\n{detail}")
    assert node.extra_saved_bytes == F32 * extra, (
        f"{case} saved {node.extra_saved_bytes} B beyond its inputs and output, the table says "
        f"{F32 * extra}:\n{detail}")


def test_graph_counts_bytes_of_numpy_and_torch_arrays() -> None:
    import torch
    from topgrad.arrays import nbytes

    assert nbytes(np.zeros((3, 4), np.float32)) == 48
    assert nbytes(torch.zeros(3, 4, dtype=torch.float64)) == 96
    assert nbytes(torch.zeros(8)[::2]) == 16
    assert nbytes((np.zeros(2, np.float32), None, 1.5)) == 8
    assert nbytes(None) == 0


def test_bytes_of_an_array_whose_dtype_is_a_name() -> None:
    """A third-party backend's array may give its dtype as a name: the size comes from the name
    ('float64' is 8 bytes, not the 4 a float32 guess would give), and an unknown one counts 0."""
    from types import SimpleNamespace

    from topgrad.arrays import itemsize, nbytes

    assert nbytes(SimpleNamespace(shape=(4, 2), dtype="float64")) == 64
    assert itemsize("int16") == 2 and itemsize(np.dtype(np.float32)) == 4
    assert itemsize("bool") == 0


# ---- topgrad.viz ----------------------------------------------------------------------------
def test_to_dot_has_a_node_per_tensor_and_an_edge_per_input() -> None:
    loss, tensors = _mlp_loss()
    dot = topgrad.viz.to_dot(loss, names=tensors)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    g = loss.graph()
    nodes = [line for line in dot.splitlines() if re.match(r"\s*n\d+ \[", line)]
    edges = [line for line in dot.splitlines() if "->" in line]
    assert len(nodes) == len(g)
    assert len(edges) == sum(len([p for p in n.parents if p != "None"]) for n in g)
    assert "w1" in dot and "Linear" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize(
    ("suffix", "magic"), [(".svg", b"<svg"), (".png", b"\x89PNG"), (".jpg", b"\xff\xd8")]
)
def test_to_dot_renders_pictures(tmp_path: Path, suffix: str, magic: bytes) -> None:
    loss, _ = _mlp_loss()
    path = tmp_path / f"g{suffix}"
    topgrad.viz.to_dot(loss, path)
    data = path.read_bytes()
    assert data.startswith(magic) if suffix != ".svg" else magic in data


@pytest.mark.parametrize("suffix", [".svgz", ".webp", ".eps"])
def test_to_dot_refuses_a_suffix_it_would_write_text_under(tmp_path: Path, suffix: str) -> None:
    """An unknown picture suffix got the DOT text under its name, silently."""
    with pytest.raises(ValueError, match=rf"to_dot writes DOT text \(.dot, .gv, .txt or no suffix\) or a "
                       rf"picture \(.gif, .jpeg, .jpg, .pdf, .png, .svg\), not \{suffix}$"):
        topgrad.viz.to_dot(_mlp_loss()[0], tmp_path / f"g{suffix}")
    assert not list(tmp_path.iterdir())
    topgrad.viz.to_dot(_mlp_loss()[0], tmp_path / "g.gv")
    assert (tmp_path / "g.gv").read_text().startswith("digraph")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_to_dot_into_a_missing_folder_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="could not write"):
        topgrad.viz.to_dot(_mlp_loss()[0], tmp_path / "no-such-folder" / "g.png")


@pytest.mark.parametrize(("names", "got"), [
    (["x"], "a list"), ({"x": 1.0}, "'x': a float"),
    ({"w": np.zeros((500, 500), np.float32)}, "'w': a ndarray"), ({1: Tensor.zeros(2)}, "1: a Tensor"),
])
def test_graph_names_must_map_names_to_tensors(names: object, got: str) -> None:
    """The message says what was passed in a few words (it printed the first 80 characters of
    its repr, cut off inside an array)."""
    with pytest.raises(TypeError, match=rf"^graph: names maps names to Tensors, as \{{'x': x, 'w': w\}}, "
                       rf"got {re.escape(got)}$"):
        _mlp_loss()[0].graph(names)  # type: ignore[arg-type]


def test_to_dot_without_graphviz_writes_the_dot_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topgrad.viz.shutil, "which", lambda name: None)
    loss, _ = _mlp_loss()
    with pytest.warns(RuntimeWarning, match="Graphviz") as caught:
        topgrad.viz.to_dot(loss, tmp_path / "g.svg")
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert caught[0].filename == __file__, "the warning should point at the caller's line"


# ---- topgrad.profile ------------------------------------------------------------------------
def test_a_profile_of_backward_alone_says_why_its_calls_are_zero() -> None:
    """`with profile(): loss.backward()` times ops whose forward ran before the block: the calls
    column (forward calls) reads 0 beside nonzero backward time, and a line says so."""
    loss, _ = _mlp_loss(0)
    with topgrad.profile() as p:
        loss.backward()
    assert p.stats["Linear"].calls == 0 and p.stats["Linear"].backward_calls == 2
    n = sum(s.backward_calls for s in p.stats.values())
    assert f"calls are forward calls; backward ms also holds {n} backward calls of ops made before the " \
        "block" in str(p), str(p)
    with topgrad.profile() as p:  # forward and backward inside: no such line
        _mlp_loss(1)[0].backward()
    assert "made before the block" not in str(p), str(p)


def test_profile_counts_calls_time_and_saved_bytes() -> None:
    with topgrad.profile() as p:
        for step in range(3):
            loss, _ = _mlp_loss(step)
            saved = loss.graph().saved_bytes
            loss.backward()
    assert p.stats["Linear"].calls == 6 and p.stats["Linear"].backward_calls == 6
    assert p.stats["Mean"].calls == 3
    assert sum(s.saved_bytes for s in p.stats.values()) == 3 * saved
    assert all(s.forward_s > 0 and s.backward_s > 0 for s in p.stats.values())
    text = str(p)
    rows = [line.split()[0] for line in text.splitlines()[2:2 + len(p.stats)]]
    assert rows == [name for name, _ in p.sorted()], "rows are sorted by total time"
    assert sorted(rows) == sorted(p.stats)
    times = [p.stats[name].total_s for name in rows]
    assert times == sorted(times, reverse=True)
    assert "wall time" in text


class _MaskedRelu(Op):
    """A user's op that keeps its mask as an attribute instead of saving it."""

    def forward(self, x: Any) -> Any:
        b = topgrad.get_backend()
        self.mask = b.asarray((b.to_numpy(x) > 0).astype(np.float32))
        return b.mul(x, self.mask)

    def backward(self, grad: Any) -> tuple[Any]:
        return (topgrad.get_backend().mul(grad, self.mask),)


def test_an_empty_profile_says_no_op_ran() -> None:
    """An empty block printed a table with no rows and "0.0 %"."""
    with topgrad.profile() as p:
        pass
    assert str(p).splitlines()[-1] == "(no op ran in the block)", str(p)


def test_profile_counts_arrays_an_op_keeps_as_attributes_as_graph_does() -> None:
    x = Tensor(rand((10, 10), 3))
    with topgrad.profile() as p:
        y = _MaskedRelu.apply(x)
    assert p.stats["_MaskedRelu"].saved_bytes == y.graph().saved_bytes == 400


def test_profile_loads_the_backend_before_its_clock_starts(backend_name: str) -> None:
    """In a fresh process the first op would import the backend inside the block, and the profile
    would show that one-time import as time outside the ops; profile() loads it on entry."""
    script = ("import topgrad\nfrom topgrad import registry\nwith topgrad.profile():\n"
              "    assert registry._current is not None, 'no backend loaded on entry'\n"
              "    print(registry._current.name)\n")
    env = {**os.environ, "TOPGRAD_BACKEND": backend_name}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == backend_name


def test_profile_unregisters_after_an_exception() -> None:
    with pytest.raises(ZeroDivisionError), topgrad.profile():
        Tensor(rand((2,), 0)).relu()
        1 / 0  # noqa: B018
    assert not Op._observers


def test_without_observers_apply_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_path(*args: Any) -> None:
        raise AssertionError("the observed path ran with no observer registered")

    monkeypatch.setattr("topgrad.op._apply_observed", slow_path)
    with topgrad.profile():
        pass
    loss, _ = _mlp_loss()
    loss.backward()


# ---- topgrad.gradcheck ----------------------------------------------------------------------
class _ScaledDouble(Op):
    """2x, with a backward that multiplies by `slope` (2.0 is right); written with backend helpers."""

    slope = 2.0

    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().mul(x, 2.0)

    def backward(self, grad: Any) -> tuple[Any]:
        return (topgrad.get_backend().mul(grad, self.slope),)


class _WrongDouble(_ScaledDouble):
    slope = 2.1


def test_gradcheck_passes_on_correct_ops(sizes: Sizes) -> None:
    x, w, b = rand((3, 4), 1), rand((4, 5), 2), rand((5,), 3)
    result = topgrad.gradcheck(lambda x, w, b: x.linear(w, b).logsoftmax(), x, w, b)
    assert result and result.checked == x.size + w.size + b.size
    assert "passed" in str(result) and "worst element" in str(result)
    q, k, v = (rand((1, 3, 2), i) for i in range(3))
    topgrad.gradcheck(lambda q, k, v: topgrad.attention(q, k, v, causal=True), q, k, v)
    topgrad.gradcheck(lambda x, g, b: x.layernorm(g, b), rand((3, 4), 4), rand((4,), 5), rand((4,), 6))
    topgrad.gradcheck(lambda x: (x * x).mean(), rand((2, 3), 7))


def test_gradcheck_leaves_batchnorm_running_statistics_as_they_were() -> None:
    """fn runs once per input element; BatchNorm in training mode updates its running statistics
    each time (in float64 during the check), and gradcheck puts them back."""
    mean0, var0 = rand((3,), 8), np.abs(rand((3,), 9)) + 0.5
    running_mean = Tensor(mean0.copy(), requires_grad=False)
    running_var = Tensor(var0.copy(), requires_grad=False)
    before = running_mean.data, running_var.data

    def fn(x: Tensor, g: Tensor, b: Tensor) -> Tensor:
        return x.batchnorm(g, b, running_mean=running_mean, running_var=running_var, training=True)

    assert topgrad.gradcheck(fn, rand((4, 3), 10), rand((3,), 11), rand((3,), 12))
    assert running_mean.data is before[0] and running_var.data is before[1], "the very arrays it had"
    np.testing.assert_array_equal(running_mean.numpy(), mean0)
    np.testing.assert_array_equal(running_var.numpy(), var0)
    assert running_mean.numpy().dtype == np.float32
    fn(Tensor(rand((4, 3), 10)), Tensor(rand((3,), 11)), Tensor(rand((3,), 12)))  # outside a check:
    assert not np.array_equal(running_mean.numpy(), mean0), "a training step still updates them"


@pytest.mark.parametrize("grad", [None, "zeros", "values"])
def test_gradcheck_leaves_the_weights_gradients_as_they_were(grad: str | None) -> None:
    """Its two backward passes (the float64 probe and the check) added into the .grad of every
    weight fn uses, so a check in the middle of training changed the next step (PyTorch's uses
    autograd.grad and touches no .grad). The arrays and values are put back; a later backward
    still adds into them."""
    w = Tensor(rand((3,), 14))
    before = {None: None, "zeros": np.zeros(3, np.float32), "values": rand((3,), 15)}[grad]
    w.grad = None if before is None else topgrad.get_backend().asarray(before.copy())
    held = w.grad
    assert topgrad.gradcheck(lambda x: (x * w).tanh(), rand((3,), 16))
    assert w.grad is held, "the very array it had (or None)"
    if before is not None:
        np.testing.assert_array_equal(to_numpy(w.grad), before)
    (w * 2.0).sum().backward()
    expected = np.full(3, 2.0, np.float32) + (0 if before is None else before)
    np.testing.assert_allclose(to_numpy(w.grad), expected, rtol=1e-6)


def test_gradcheck_puts_back_statistics_that_require_grad_and_ignores_other_threads() -> None:
    """The examples' BatchNorm makes its statistics with Tensor.zeros (requires_grad=True); and a
    model another thread trains while the check runs keeps that thread's updates."""
    import threading

    running_mean, running_var = Tensor.zeros(3), Tensor.ones(3)
    mine = Tensor.zeros(3), Tensor.ones(3)
    checking, done = threading.Event(), threading.Event()

    def fn(x: Tensor) -> Tensor:
        checking.set()
        done.wait(timeout=30)  # the other thread trains while this check runs
        return x.batchnorm(Tensor.ones(3), Tensor.zeros(3), running_mean=running_mean,
                           running_var=running_var, training=True)

    def train_other_model() -> None:
        checking.wait(timeout=30)
        Tensor(rand((4, 3), 13)).batchnorm(Tensor.ones(3), Tensor.zeros(3), running_mean=mine[0],
                                           running_var=mine[1], training=True)
        done.set()

    other = threading.Thread(target=train_other_model, daemon=True)
    other.start()
    try:
        assert topgrad.gradcheck(fn, rand((4, 3), 14))
    finally:
        done.set()
        other.join(timeout=30)
    np.testing.assert_array_equal(running_mean.numpy(), np.zeros(3, np.float32))
    np.testing.assert_array_equal(running_var.numpy(), np.ones(3, np.float32))
    assert not np.array_equal(mine[0].numpy(), np.zeros(3)), "the other thread's update was undone"


def test_gradcheck_finds_a_wrong_backward_and_names_the_element() -> None:
    x = rand((2, 3), 1)
    with pytest.raises(GradcheckError) as info:
        topgrad.gradcheck(lambda x, c: (_WrongDouble.apply(x) * c).sum(axis=1), x, Tensor(rand((3,), 2)))
    message = str(info.value)
    assert "FAILED" in message and "input 0" in message and "index (" in message
    worst = info.value.result.worst
    assert worst.input == 0 and len(worst.index) == 2
    assert 0.04 < worst.rel_err < 0.06, "a 5% error in the slope"
    result = topgrad.gradcheck(lambda x: _WrongDouble.apply(x), x, raise_on_failure=False)
    assert not result and result.failures == x.size
    assert topgrad.gradcheck(lambda x: _ScaledDouble.apply(x), x)


@pytest.mark.parametrize(("setting", "value"), [("atol", -1.0), ("rtol", -1e-3), ("eps", 0.0),
                                              ("eps", "1e-6"), ("atol", float("nan")), ("rtol", True)])
def test_gradcheck_refuses_a_tolerance_that_would_pass_anything(setting: str, value: object) -> None:
    """A negative atol or rtol made every error/tolerance ratio negative: a 5% wrong backward
    "passed". eps=0 gave NaN numerics, eps as text Python's own operand error."""
    with pytest.raises(ValueError, match=rf"gradcheck: {setting} must be a finite number >?=? ?0"):
        topgrad.gradcheck(lambda x: _WrongDouble.apply(x), rand((2, 3), 1), **{setting: value})


def test_gradcheck_takes_numpys_numbers_as_settings() -> None:
    """eps and the tolerances as numpy scalars, as b967371 took them (a float32 backend's step)."""
    assert topgrad.gradcheck(lambda x: x.logsoftmax(), rand((2, 3), 1), eps=np.float64(1e-3),
                             atol=np.float32(1e-3), rtol=np.int64(0))


def test_gradcheck_takes_the_inputs_as_a_tuple_as_pytorch_does() -> None:
    """torch.autograd.gradcheck(fn, (a, b)): read as one nested list, (a,) checked fn at a new
    leading axis of size 1, and a tuple holding a Tensor failed with "item() needs one element"."""
    x, c = rand((2, 3), 1), rand((3,), 2)
    for given in ((x, c), (Tensor(x), Tensor(c))):
        result = topgrad.gradcheck(lambda a, b: (a * b).logsoftmax(), given)
        assert result and result.checked == 9, result
    assert not topgrad.gradcheck(lambda a: _WrongDouble.apply(a), (x,), raise_on_failure=False)


def test_gradcheck_in_float32_catches_a_five_percent_error() -> None:
    x = rand((3, 4), 3)
    for dtype in ("float32", None):
        assert topgrad.gradcheck(lambda x: _ScaledDouble.apply(x).logsoftmax(), x, dtype=dtype)
        result = topgrad.gradcheck(lambda x: _WrongDouble.apply(x).logsoftmax(), x, dtype=dtype,
                                   raise_on_failure=False)
        assert not result, str(result)


class _WrongSquare(Op):
    """x * x with a backward 25% short (1.5 x for 2 x)."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        return topgrad.get_backend().mul(x, x)

    def backward(self, grad: Any) -> tuple[Any]:
        (x,) = self.saved
        b = topgrad.get_backend()
        return (b.mul(grad, b.mul(x, 1.5)),)


def test_gradcheck_in_float32_is_inconclusive_where_rounding_hides_a_25_percent_error(
    interpreted: bool,
) -> None:
    """The sum of 100 squares near 900 is good to ~1e-2 in float32, over a step of 2e-3: the
    numeric gradient was noise, and a 25% wrong backward passed (the backend had no float64).
    The check now fails as inconclusive and says what helps; a larger step then finds the error.
    An elementwise function of as many elements stays checkable: only the element moved."""
    x = rand((10, 10), 9, scale=30.0)

    def check(fn: Any, **options: Any) -> Any:
        return topgrad.gradcheck(fn, x, dtype="float32", raise_on_failure=False, **options)

    right = check(lambda t: (t * t).sum())  # the noise is as large for the right backward
    assert not right and right.failures == 0 and right.blur > 0.25
    assert "INCONCLUSIVE" in str(right) and "use a larger eps" in str(right)
    wider = check(lambda t: _WrongSquare.apply(t).sum(), eps=1e-2)
    assert "FAILED" in str(wider) and wider.failures > 0.8 * x.size
    if interpreted:  # the rest is core's arithmetic again, at ~15 ms per interpreted forward
        return
    assert not check(lambda t: _WrongSquare.apply(t).sum())
    assert check(lambda t: (t * t).sum(), eps=1e-2)
    assert check(lambda t: (t * t).relu()).blur < 0.1
    assert check(lambda t: _WrongSquare.apply(t)).failures == x.size


class _TinySquare(Op):
    """1e-4 * x * x, with a backward `slope` times the true one (1.0 is right)."""

    slope = 1.0

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        b = topgrad.get_backend()
        return b.mul(b.mul(x, x), 1e-4)

    def backward(self, grad: Any) -> tuple[Any]:
        (x,) = self.saved
        b = topgrad.get_backend()
        return (b.mul(grad, b.mul(x, 2e-4 * self.slope)),)


class _TinySquareTwiceAsSteep(_TinySquare):
    slope = 2.0


class _TinySquareFivePercentOff(_TinySquare):
    slope = 1.05


@pytest.mark.parametrize("dtype", ["float32", None])
def test_gradcheck_scales_atol_to_small_gradients(dtype: str | None) -> None:
    """Gradients of ~2e-4 sat under the fixed atol 1e-3 of float32, so a backward twice too
    steep passed. The default atol now scales with each input's typical gradient below 1."""
    x = rand((3, 4), 21)
    assert topgrad.gradcheck(lambda t: _TinySquare.apply(t), x, dtype=dtype)
    for wrong in (_TinySquareTwiceAsSteep, _TinySquareFivePercentOff):
        result = topgrad.gradcheck(lambda t, op=wrong: op.apply(t), x, dtype=dtype, raise_on_failure=False)
        assert not result and result.failures > 0.8 * x.size, str(result)
        # the report shows the tolerance applied, not only the default atol the error is below
        w = result.worst
        assert w.abs_err > w.tolerance and w.tolerance < 1e-4, str(result)
        assert f"abs err {w.abs_err:.3g}, tolerance {w.tolerance:.3g}," in str(result)
    # an input with small gradients next to one with large ones is checked at its own scale
    big = rand((3,), 22)
    result = topgrad.gradcheck(lambda t, u: _TinySquareTwiceAsSteep.apply(t).sum(axis=1) + u * 3.0, x, big,
                               dtype=dtype, raise_on_failure=False)
    assert not result and result.worst.input == 0, str(result)
    # a user's own atol is kept as given
    assert topgrad.gradcheck(lambda t: _TinySquareTwiceAsSteep.apply(t), x, dtype=dtype, atol=1e-3)


def test_gradcheck_sets_aside_only_the_gradients_a_backward_may_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check remembered every trainable leaf its ops saw, the two it makes per element under
    no_grad included: memory grew with the input's size squared (5,006 leaves for 50x50)."""
    keeper = importlib.import_module("topgrad.gradcheck")._StateKeeper  # the module: topgrad.gradcheck
    held: list[int] = []  # is the function
    restore = keeper.restore
    monkeypatch.setattr(keeper, "restore", lambda self: (held.append(len(self.grads)), restore(self)))
    w = Tensor(rand((3,), 51))
    assert topgrad.gradcheck(lambda t: (t * w).tanh(), rand((4, 3), 52))
    assert held[0] <= 3, "w, and the check's leaves of its two backward passes (float64 test, analytic)"


class _Nudged(Op):
    """The identity, whose backward adds `nudge` to every element of its gradient (0 is right)."""

    nudge = 0.0

    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().copy(x)

    def backward(self, grad: Any) -> tuple[Any]:
        b = topgrad.get_backend()
        return (b.add(grad, b.full(tuple(grad.shape), self.nudge)),)


class _NudgedByAMillionth(_Nudged):
    nudge = 1e-6


def _centred_sum(op: type[Op]) -> Any:
    """sum(u - mean(u)) of u = op(t): a gradient of 0, the sum of terms that cancel."""
    def fn(t: Tensor) -> Tensor:
        u = op.apply(t)
        return (u - u.mean(axis=-1, keepdims=True)).sum()
    return fn


@pytest.mark.parametrize("dtype", ["float32", None])
def test_gradcheck_passes_a_gradient_of_zero_made_of_cancelling_terms(dtype: str | None,
                                                                     backend_name: str) -> None:
    """A normalization summed has a gradient of 0 that rounding leaves as noise in both ways of
    computing it: the noise set the scale atol shrinks to, and every element FAILED (BatchNorm,
    LayerNorm); a shift-invariant input was INCONCLUSIVE at any eps (softmax). A second step
    now tells noise from a gradient, as torch.autograd.gradcheck passes all three."""
    x, c = np.random.default_rng(1).standard_normal((4, 5)), rand((4, 1), 44)  # an audit's inputs
    g, b = np.ones(5), np.zeros(5)
    for fn, args in ((lambda t, u, v: t.batchnorm(u, v).sum(), (x, g, b)),
                     (lambda t, u, v: t.layernorm(u, v).mean(), (x, g, b)),
                     (lambda t, u: (t + u).softmax(), (x, c))):
        result = topgrad.gradcheck(fn, *args, dtype=dtype)
        assert "gradient is 0 up to rounding" in result.note, str(result)
    in_float64 = dtype is None and backend_name == "numpy"  # the backend that keeps float64
    if in_float64:  # chosen although the output cancels to ~0
        assert topgrad.gradcheck(lambda t: t.layernorm(None, None).sum(axis=-1), x).precision == "float64"
    # a backward wrong by a millionth where the gradient is 0 is still caught
    assert topgrad.gradcheck(_centred_sum(_Nudged), x, dtype=dtype)
    if in_float64:
        wrong = topgrad.gradcheck(_centred_sum(_NudgedByAMillionth), x, raise_on_failure=False)
        assert wrong.failures == x.size, str(wrong)


class _CubeWritingIntoGrad(Op):
    """x ** 3 whose backward multiplies its incoming gradient in place (breaks the Op protocol)."""

    def forward(self, x: Any) -> Any:
        self.save_for_backward(x)
        b = topgrad.get_backend()
        return b.mul(b.mul(x, x), x)

    def backward(self, grad: Any) -> tuple[Any]:
        (x,) = self.saved
        b = topgrad.get_backend()
        grad *= b.mul(b.mul(x, x), 3.0)
        return (grad,)


def test_gradcheck_refuses_an_output_that_does_not_depend_on_the_inputs() -> None:
    """fn returning a constant, or a Tensor made from other Tensors, "passed": every gradient is 0
    both ways, so nothing was checked (the report did not even say how many elements it checked)."""
    x = rand((2,), 33)
    for fn, why in ((lambda t: t.detach() * 2.0, "it is a constant"),
                    (lambda t: Tensor([1.0, 2.0]) * 2.0, "none of them is in its graph")):
        says = rf"^gradcheck: fn's output does not depend on its inputs \({why}"
        with pytest.raises(ValueError, match=says):
            topgrad.gradcheck(fn, x)
    assert str(topgrad.gradcheck(lambda t: t * 0.0, x)).startswith("gradcheck passed on 2 elements (")
    assert str(topgrad.gradcheck(lambda t: t.tanh(), np.zeros((0,), np.float32))).startswith(
        "gradcheck passed on 0 elements (")


def test_gradcheck_says_fn_gave_float32_not_that_the_backend_did(backend_name: str) -> None:
    """A Tensor that fn makes is float32: the note blamed the backend ("backend 'numpy' gave float32
    for float64 inputs"), which keeps float64."""
    if backend_name != "numpy":
        pytest.skip("the numpy backend keeps float64")
    result = topgrad.gradcheck(lambda t: t * Tensor([1.0, 2.0], requires_grad=False), rand((2,), 34))
    assert result.precision == "float32"
    assert "fn gave float32 for float64 inputs (backend 'numpy', or a Tensor fn makes: Tensor(...) is " \
           "float32 unless dtype='float64')" in result.note, result.note


def test_gradcheck_fails_a_backward_that_writes_into_its_gradient() -> None:
    """The seed shared memory with the array the op wrote into, so the numeric gradient came out
    wrong and the report blamed a correct analytic value; in float32 the check passed."""
    x = rand((2, 3), 23)
    for dtype in ("float32", None):
        result = topgrad.gradcheck(lambda t: _CubeWritingIntoGrad.apply(t), x, dtype=dtype,
                                   raise_on_failure=False)
        assert not result and result.failures == 0, str(result)
        text = str(result)
        assert text.startswith("gradcheck FAILED (") and "wrote into its incoming gradient" in text
        # the report names the op the seed went to first (docs: "fails by name"; an Add there hands
        # the array on, so the writer may be further down), and its element line, within
        # tolerance, does not read as the failure
        assert "(the seed changed; it went first to _CubeWritingIntoGrad (which made fn's output), and" \
            in text, text
        assert "worst element (within its tolerance): " in text, text


def test_gradcheck_says_which_precision_it_used(backend_name: str) -> None:
    result = topgrad.gradcheck(lambda x: x.relu() * 3.0, rand((2, 2), 1) + 3.0)
    assert result.precision in ("float32", "float64")
    if result.precision == "float32":
        assert "float32" in result.note and backend_name in result.note
    forced = topgrad.gradcheck(lambda x: x.logsoftmax(), rand((2, 3), 2), dtype="float32")
    assert forced.precision == "float32" and forced.eps == 1e-3


def test_gradcheck_takes_nested_lists_and_numbers_and_repeats_itself() -> None:
    """The check reads and writes values as plain Python (no numpy in core): nested lists, 0-d
    inputs and numpy arrays alike; the same seed gives the same report, to the last digit."""
    def fn(x: Tensor, s: Tensor) -> Tensor:
        return (x * s).logsoftmax()

    first = topgrad.gradcheck(fn, [[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]], np.float32(1.5), seed=3)
    again = topgrad.gradcheck(fn, np.array([[0.5, -1.0, 2.0], [1.0, 0.25, -0.5]]), 1.5, seed=3)
    assert first and first.checked == 7 and str(first) == str(again), (str(first), str(again))
    assert first.worst is not None and all(type(k) is int for k in first.worst.index)
    with pytest.raises(ValueError, match="ragged"):
        topgrad.gradcheck(lambda x: x * 2.0, [[1.0, 2.0], [3.0]])


def test_gradcheck_leaves_its_inputs_alone() -> None:
    x_np = rand((2, 3), 1)
    x = Tensor(x_np.copy())
    topgrad.gradcheck(lambda t: t.logsoftmax(), x)
    np.testing.assert_array_equal(x.numpy(), x_np)
    assert x.grad is None
    with pytest.raises(TypeError, match="must return a Tensor"):
        topgrad.gradcheck(lambda t: 1.0, x)


# ---- topgrad.detect_anomaly -----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_anomaly_in_forward_names_op_phase_and_source_line() -> None:
    x = Tensor(np.ones((2, 3), np.float32))
    w = Tensor(np.full((3, 2), 3e38, np.float32))
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        h = x.relu()
        h.linear(w)  # the overflowing line
    err = info.value
    assert err.op == "Linear" and err.phase == "forward"
    assert err.built_at and "test_introspection.py" in err.built_at and "h.linear(w)" in err.built_at
    assert "Inf" in str(err) and "Linear (forward)" in str(err)


class _Log(Op):
    """A user's own op, defined in the module that uses it (as a script or a notebook would)."""

    def forward(self, x: Any) -> Any:
        return topgrad.get_backend().asarray(np.log(topgrad.get_backend().to_numpy(x)))

    def backward(self, grad: Any) -> tuple[Any]:
        return (grad,)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # log(-1) is the point
def test_anomaly_names_the_line_for_an_op_defined_beside_it() -> None:
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        _Log.apply(Tensor([1.0, -1.0]))  # the NaN line
    assert info.value.built_at and "_Log.apply(Tensor([1.0, -1.0]))" in info.value.built_at, str(info.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_anomaly_in_backward_names_the_line_that_built_the_op() -> None:
    x = Tensor([[0.1, 0.5, -0.3], [0.2, 0.0, 1.0]])
    with topgrad.detect_anomaly():
        big = x * 1e38  # finite forward
        loss = big.sum()
        with pytest.raises(topgrad.AnomalyError) as info:
            loss.backward(np.float32(10.0))  # 10 * 1e38 overflows in Mul's backward
    err = info.value
    assert err.op == "Mul" and err.phase == "backward"
    assert err.built_at and "big = x * 1e38" in err.built_at
    assert "gradient for input 0" in str(err) and "built at" in str(err)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_anomaly_names_an_overflow_where_the_gradients_of_two_uses_add_up() -> None:
    """Both uses of h give a finite gradient; their sum at h overflows. The error said "check the
    seed passed to backward" about a finite seed; it names the sum of the uses too."""
    x = Tensor([1.0, 2.0])
    with topgrad.detect_anomaly():
        h = x * 1.0
        loss = (h * 1.0).sum() + (h * 1.0).sum()
        with pytest.raises(topgrad.AnomalyError, match=r"the seed passed to backward, or, where this op's "
                           r"output is used more than once, the sum of those uses' gradients") as info:
            loss.backward(np.float32(2e38))
    assert info.value.op == "Mul" and "h = x * 1.0" in info.value.built_at


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_anomaly_says_when_bad_values_came_from_the_data() -> None:
    data = rand((2, 3), 1)
    data[0, 1] = np.nan
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError, match="already contained"):
        Tensor(data) * 2.0


def test_anomaly_mode_lets_finite_runs_through() -> None:
    with topgrad.detect_anomaly():
        loss, _ = _mlp_loss()
        loss.backward()
    assert not Op._observers


def test_anomaly_mode_reads_only_a_sum_per_finite_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each array is checked by one reduction on the backend (sum(a * 0)): only 0-d results come
    to the host, no op is recorded for it (another observer sees the model's ops alone), and the
    check adds no graph node."""
    backend = topgrad.get_backend()
    read: list[tuple[int, ...]] = []
    to_numpy = backend.to_numpy

    def recording(a: Any) -> Any:
        read.append(tuple(a.shape))
        return to_numpy(a)

    with topgrad.profile() as alone:
        loss, _ = _mlp_loss()
        loss.backward()
    monkeypatch.setattr(backend, "to_numpy", recording)
    with topgrad.profile() as watched, topgrad.detect_anomaly():
        loss, tensors = _mlp_loss()
        loss.backward()
    assert read and set(read) == {()}, f"arrays read whole on the host: {sorted(set(read))}"
    assert {k: (s.calls, s.backward_calls) for k, s in watched.stats.items()} == {
        k: (s.calls, s.backward_calls) for k, s in alone.stats.items()}
    ops = [n.op for n in loss.graph(tensors).ops]
    assert ops == ["Linear", "ReLU", "Linear", "LogSoftmax", "Mul", "Mean"], ops


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the check makes no NaN of an Inf (inf * 0 did)
def test_anomaly_counts_the_nan_and_inf_of_the_data() -> None:
    data = np.ones((2, 3), np.float32)
    data[0, 0], data[1, 1], data[1, 2] = np.nan, np.inf, -np.inf
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        Tensor(data, requires_grad=False) * 2.0
    assert "its output of shape (2, 3) has 1 NaN and 2 Inf among 6 values" in str(info.value), str(info.value)
    assert "input 0 already contained NaN/Inf" in str(info.value)


def test_anomaly_blames_a_number_or_a_keyword_operand_that_held_nan() -> None:
    """A NaN number (x * nan) or NaN running statistics (BatchNorm in eval, the classic poisoned
    model) were checked nowhere: the message said the op made the NaN and sent users to debug it."""
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        Tensor([1.0, 2.0]) * float("nan")
    text = str(info.value)
    assert "input 1 is the number nan, given by the line that built it." in text, text
    stats = {"running_mean": Tensor([0.0, 0.0], requires_grad=False),
             "running_var": Tensor([1.0, float("nan")], requires_grad=False)}
    with topgrad.detect_anomaly(), pytest.raises(topgrad.AnomalyError) as info:
        Tensor(rand((3, 2), 5)).batchnorm(Tensor([1.0, 1.0]), Tensor([0.0, 0.0]), training=False, **stats)
    assert "running_var already contained NaN/Inf" in str(info.value), str(info.value)


def test_anomaly_without_inf_does_not_say_the_gradients_before_were_finite() -> None:
    """With inf=False a +Inf and a -Inf gradient that met as NaN were called finite."""
    w = Tensor([1e-3, 2e-3])
    h = w * 1.0
    loss = (h * 3e38).sum() * 10.0 + (h * -3e38).sum() * 10.0
    with topgrad.detect_anomaly(inf=False), pytest.raises(topgrad.AnomalyError) as info:
        loss.backward()
    text = str(info.value)
    assert "was finite" not in text and "Inf is not checked: inf=False" in text and "-Inf" in text, text


# ---- TOPGRAD_TRACE --------------------------------------------------------------------------
def test_tracing_prints_each_op_with_shapes_and_time() -> None:
    out = io.StringIO()
    with tracing(out):
        loss, _ = _mlp_loss()
        loss.backward()
    lines = out.getvalue().splitlines()
    assert len(lines) == 12, "six ops forward, six backward"
    assert "Linear" in lines[0] and "forward" in lines[0] and "(4, 6) (6, 5) (5,) -> (4, 5)" in lines[0]
    assert lines[0].endswith("ms")
    assert "Mean" in lines[6] and "backward" in lines[6]
    out = io.StringIO()
    with tracing(out):  # a missing bias was "-", which ran into the "->" after it: "(6, 5) - -> (4, 5)"
        Tensor(rand((4, 6), 1)).linear(Tensor(rand((6, 5), 2)))
    assert "(4, 6) (6, 5) None -> (4, 5)" in out.getvalue(), out.getvalue()


def test_a_traced_backward_line_names_its_forward_line() -> None:
    """Backward runs the ops in reverse, so each backward line points at its op's forward line;
    an op whose forward ran before tracing began gets no pointer."""
    out = io.StringIO()
    x = Tensor([[1.0, -2.0, 3.0]])
    with tracing(out):
        h = x.relu()
        loss = (h * h).sum()
        loss.backward()
    lines = out.getvalue().splitlines()
    forward_line = {line.split()[2]: line.split()[1].rstrip("]") for line in lines if " forward " in line}
    backward = [line for line in lines if " backward " in line]
    assert [line.split()[2] for line in backward] == ["Sum", "Mul", "ReLU"]
    for line in backward:
        assert line.endswith(f"  (forward: line {forward_line[line.split()[2]]})"), line

    early = x.exp()
    out = io.StringIO()
    with tracing(out):
        early.sum().backward()
    exp_line = next(line for line in out.getvalue().splitlines() if "Exp" in line)
    assert "backward" in exp_line and exp_line.endswith(" ms"), exp_line


def test_topgrad_trace_variable_enables_tracing(backend_name: str) -> None:
    script = "import topgrad; x = topgrad.Tensor([[1.0, -2.0]]); x.relu().sum().backward()"
    env = {**os.environ, "TOPGRAD_TRACE": "1", "TOPGRAD_BACKEND": backend_name}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                              timeout=300)

    loud = run()
    assert loud.returncode == 0, loud.stderr
    trace = [line for line in loud.stderr.splitlines() if line.startswith("[topgrad")]
    assert [line.split()[2:4] for line in trace] == [
        ["ReLU", "forward"], ["Sum", "forward"], ["Sum", "backward"], ["ReLU", "backward"]]
    env["TOPGRAD_TRACE"] = "0"
    quiet = run()
    assert quiet.returncode == 0 and "[topgrad" not in quiet.stderr


def test_trace_enable_and_disable_start_and_stop_the_global_tracer() -> None:
    """`enable()` (what TOPGRAD_TRACE=1 does) traces every op until `disable()`; a second enable
    returns the same tracer, so one disable stops it."""
    out = io.StringIO()
    tracer = topgrad.trace.enable(out)
    try:
        assert topgrad.trace.enable() is tracer
        Tensor([[1.0, -2.0]]).relu()
    finally:
        topgrad.trace.disable()
    Tensor([[3.0]]).exp()  # after disable: not traced
    traced = [line.split()[2:4] for line in out.getvalue().splitlines()]
    assert traced == [["ReLU", "forward"]], out.getvalue()
    topgrad.trace.disable()  # a second disable is harmless


def test_trace_enable_with_a_stream_while_tracing_redirects_the_lines() -> None:
    """After TOPGRAD_TRACE=1 (or enable()), enable(buf) returned the tracer and kept writing to
    stderr: buf stayed empty, with no word. The stream given now is where the lines go."""
    first, second = io.StringIO(), io.StringIO()
    tracer = topgrad.trace.enable(first)
    try:
        Tensor([[1.0]]).relu()
        assert topgrad.trace.enable(second) is tracer
        Tensor([[1.0]]).exp()
        assert topgrad.trace.enable() is tracer  # no stream: where it was going
        Tensor([[1.0]]).log()
    finally:
        topgrad.trace.disable()
    assert [line.split()[2] for line in first.getvalue().splitlines()] == ["ReLU"], first.getvalue()
    assert [line.split()[2] for line in second.getvalue().splitlines()] == ["Exp", "Log"], second.getvalue()


def test_an_observer_must_subclass_observer() -> None:
    """An object with only some hooks would fail inside the engine, at the first op."""
    from topgrad.observe import observing

    class OnlyBefore:
        def before_forward(self, op: Op, args: tuple, params: dict) -> None:
            pass

    with pytest.raises(TypeError, match=r"subclass topgrad\.observe\.Observer"), observing(OnlyBefore()):
        pass


def test_graph_shows_a_leaf_made_trainable_after_the_forward_as_the_constant_backward_treats() -> None:
    """c.requires_grad = True after y was built: graph() said leaf (gets a gradient), backward gave
    c none (the op saw a constant, as PyTorch's graph would)."""
    w, c = Tensor(rand((3,), 61)), Tensor(rand((3,), 62), requires_grad=False)
    y = (w * c).sum()
    c.requires_grad = True
    kinds = {n.name: n.kind for n in y.graph({"w": w, "c": c}) if n.name}
    y.backward()
    assert kinds == {"w": "leaf", "c": "const"} and c.grad is None and w.grad is not None


def test_an_observer_leaving_does_not_hide_an_op_from_the_others() -> None:
    """Unregistering shifted the live list under a loop walking it: the observer after the one
    that left (another thread leaving its profile() block) missed that op, so anomaly mode could
    let a NaN through. Here the first observer leaves inside its own hook, the same shift."""
    from topgrad.observe import Observer, observing, unregister

    class LeavesAtOnce(Observer):
        def before_forward(self, op: Op, args: tuple, params: dict) -> None:
            unregister(self)

    class Counts(Observer):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def before_forward(self, op: Op, args: tuple, params: dict) -> None:
            self.seen.append(type(op).__name__)

    counts = Counts()
    with observing(LeavesAtOnce()), observing(counts):
        Tensor([1.0, 2.0]).relu()
    assert counts.seen == ["ReLU"]


# ---- the inspection tools on unusual graphs (an audit's findings) -------------------------------
def test_the_total_counts_a_live_buffers_saved_views_once() -> None:
    """x and x.reshape(...) saved by two Muls were two 'distinct' regions of x's buffer: the total
    said twice x's memory; a stride-0 broadcast of 16 bytes was counted at its logical 1.5 MiB."""
    x = Tensor(np.ones((100, 10), np.float32))
    loss = (x * x).sum() + (x.reshape(10, 100) * x.reshape(10, 100)).sum()
    assert loss.graph({"x": x}).distinct_saved_bytes == 100 * 10 * 4
    b = Tensor(np.broadcast_to(np.ones(4, np.float32), (1000, 4)), requires_grad=False)
    w = Tensor(np.ones(4, np.float32))
    if isinstance(b.data, np.ndarray):  # a constant keeps the caller's array; triton's is a dense copy
        assert (b * w).sum().graph({"b": b}).distinct_saved_bytes <= 4 * 4 + w.data.nbytes


def test_an_ops_repr_counts_saved_arrays_as_graph_does() -> None:
    """`save_for_backward(x, k=3)` showed 'saved 2 arrays' (the number counted) where graph()
    lists one."""
    class Keeps(Op):
        def forward(self, x: Any) -> Any:
            self.save_for_backward(x, k=3)
            return x * 2

        def backward(self, grad: Any) -> tuple[Any]:
            return (grad * 2,)

    y = Keeps.apply(Tensor([1.0, 2.0]))
    assert repr(y.op).endswith("saved 1 array>") and len(y.graph().nodes[-1].saved) == 1


def test_tracing_and_anomaly_mode_take_the_ops_the_engine_takes() -> None:
    """Tracing keyed its forward lines by the op, so an unhashable Op (a @dataclass) raised
    TypeError; anomaly mode checked the gradient of a plain value (x * 3.0's 3.0), which the
    engine drops unread, and raised AttributeError on a float."""
    from dataclasses import dataclass

    @dataclass(eq=True)
    class Double(Op):
        factor: float = 2.0

        def forward(self, x: Any) -> Any:
            return x * self.factor

        def backward(self, grad: Any) -> tuple[Any]:
            return (grad * self.factor,)

    class Scale(Op):
        def forward(self, x: Any, k: float) -> Any:
            self.k = k
            return x * k

        def backward(self, grad: Any) -> tuple[Any, float]:
            return grad * self.k, float("nan")

    out = io.StringIO()
    with tracing(out):
        Double.apply(Tensor([1.0, 2.0])).sum().backward()
    assert re.search(r"Double +backward .*\(forward: line 1\)$", out.getvalue().splitlines()[-1])
    x = Tensor([1.0, 2.0])
    with topgrad.detect_anomaly():
        Scale.apply(x, 3.0).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [3.0, 3.0])


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_names_with_control_characters_make_dot_that_graphviz_reads() -> None:
    """A control character in a name went into an HTML-like label as is, which XML has no place
    for: Graphviz refused the whole file."""
    x = Tensor([1.0, 2.0])
    h = x * 3.0
    dot = topgrad.viz.to_dot(h.sum(), names={"ctl\x01x": h, "nul\x00x": x})
    done = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ctl\\x01x" in done.stdout.decode()  # spelled out, as the picture shows it
