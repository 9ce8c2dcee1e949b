"""topgrad.viz: the DOT text to_dot writes and how Graphviz reads it.

Runs on every backend (the drawing reads only the graph's structure); the tests that render need
Graphviz's `dot` and are skipped without it.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import topgrad
from topgrad import Op, Tensor

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")


def _rnn(steps: int) -> tuple[Tensor, dict[str, Tensor]]:
    """An RNN's loss after `steps` steps: W, U and b are used at every step."""
    w, u, b = Tensor.randn(8, 8, seed=0), Tensor.randn(4, 8, seed=1), Tensor.zeros(8)
    h = Tensor.zeros(2, 8, requires_grad=False)
    for t in range(steps):
        x = Tensor.randn(2, 4, seed=10 + t, requires_grad=False)
        h = (h @ w + x @ u + b).tanh()
    return h.sum(), {"W": w, "U": u, "b": b}


def _edges_from(dot: str, node: str) -> list[str]:
    """The edges of `dot` that start at a node whose id is `node` or a copy of it (`n0u3`)."""
    return re.findall(rf"^\s*({node}(?:u\d+)?) -> ", dot, flags=re.M)


def _node_ids(dot: str) -> list[str]:
    """The ids of the tensors' nodes in `dot` (n3, n0u1), without the literals' (c1)."""
    return re.findall(r"^\s*(n\d+(?:u\d+)?) \[", dot, flags=re.M)


# ---- a leaf many ops use ----------------------------------------------------------------------
def test_a_leaf_used_at_every_step_of_an_rnn_is_drawn_once_per_use() -> None:
    """A leaf with 30 consumers was one node with 30 long edges, which Graphviz's layout took
    minutes over (30 RNN steps: over 200 s). Each use now gets its own small copy, labelled as the
    same leaf and how often it is used, one edge each."""
    loss, names = _rnn(30)
    dot = topgrad.viz.to_dot(loss, names=names)
    g = loss.graph(names)
    w = next(n for n in g.nodes if n.name == "W")
    ids = _node_ids(dot)
    assert f"n{w.index}" not in ids, "the shared leaf is not one node any more"
    copies = [i for i in ids if i.startswith(f"n{w.index}u")]
    assert len(copies) == len(set(copies)) == 30
    assert len(_edges_from(dot, f"n{w.index}")) == 30 and len(set(_edges_from(dot, f"n{w.index}"))) == 30
    copy_lines = [line for line in dot.splitlines() if re.match(rf"\s*n{w.index}u\d+ \[", line)]
    assert all("W\\n(8, 8)\\nused 30 times" in line and "dashed" in line for line in copy_lines), copy_lines
    # every op still has all its inputs: one edge per argument, as before
    assert len([line for line in dot.splitlines() if "->" in line]) == sum(
        len([p for p in n.parents if p != "None"]) for n in g)


def test_a_leaf_used_a_few_times_stays_one_node() -> None:
    """Up to SHARED_LEAF_USES uses a leaf is one node with an edge to each op that uses it."""
    loss, names = _rnn(topgrad.viz.SHARED_LEAF_USES)
    dot = topgrad.viz.to_dot(loss, names=names)
    w = next(n for n in loss.graph(names).nodes if n.name == "W")
    assert f"n{w.index}" in _node_ids(dot) and not [i for i in _node_ids(dot) if "u" in i]
    assert _edges_from(dot, f"n{w.index}") == [f"n{w.index}"] * topgrad.viz.SHARED_LEAF_USES


@needs_dot
def test_the_rnn_with_copies_renders(tmp_path: Path) -> None:
    """The 30-step RNN, drawn to SVG (took minutes before the copies; ~0.1 s with them; not timed
    here, the time limit on `dot` keeps a slow machine from hanging)."""
    loss, names = _rnn(30)
    topgrad.viz.to_dot(loss, tmp_path / "rnn.svg", names=names)
    svg = (tmp_path / "rnn.svg").read_text(encoding="utf-8")
    assert svg.count("used 30 times") == 90  # W, U and b, 30 copies each


# ---- an op's output many ops use ----------------------------------------------------------------
def _rnn_with_wt(steps: int) -> tuple[Tensor, Tensor]:
    """An RNN's loss after `steps` steps and its `Wt = W.T`, computed once and used at every step."""
    w = Tensor.randn(8, 8, seed=0)
    wt = w.T
    h = Tensor.zeros(2, 8, requires_grad=False)
    for t in range(steps):
        h = (Tensor.randn(2, 8, seed=10 + t, requires_grad=False) + h.linear(wt)).tanh()
    return h.sum(), wt


def test_an_op_output_used_at_every_step_gets_a_dashed_copy_per_use() -> None:
    """Only leaves were copied, so an RNN's `Wt = W.T` (a Permute) was one box with an edge to
    every step: at 50 steps `dot` ran past its 60 s limit and no picture came. Each use now gets
    a dashed copy titled with the op's %i; the box itself stays, with the edge from W into it."""
    loss, wt = _rnn_with_wt(5)
    dot = topgrad.viz.to_dot(loss, names={"Wt": wt})
    g = loss.graph({"Wt": wt})
    node = next(n for n in g.nodes if n.name == "Wt")
    assert node.op == "Permute" and topgrad.viz.SHARED_USES < 5
    assert _edges_from(dot, f"n{node.index}") == [f"n{node.index}u{i}" for i in range(5)], \
        "no edge from the box itself, one from each copy"
    copy_lines = [line for line in dot.splitlines() if re.match(rf"\s*n{node.index}u\d+ \[", line)]
    assert len(copy_lines) == 5
    assert all("dashed" in line and f"%{node.index} Permute Wt\\n(8, 8)\\nused 5 times" in line
               for line in copy_lines), copy_lines
    assert f"n{node.index}" in _node_ids(dot), "the op is still drawn once, where it is computed"
    box = re.search(rf"^\s*n{node.index} \[.*$", dot, flags=re.M)
    assert box and "used 5 times" in box.group() and "dashed" not in box.group(), box
    assert re.findall(rf"^\s*n(\d+) -> n{node.index};", dot, flags=re.M) == [node.parents[0][1:]]
    consumers = {f"n{n.index}" for n in g.nodes if f"%{node.index}" in n.parents}
    assert {m for m in re.findall(rf"^\s*n{node.index}u\d+ -> (n\d+)", dot, flags=re.M)} == consumers
    assert len([line for line in dot.splitlines() if "->" in line]) == sum(
        len([p for p in n.parents if p != "None"]) for n in g)


def test_the_old_name_of_the_limit_still_reads_it() -> None:
    """SHARED_LEAF_USES, its name when only leaves were copied, still reads the limit."""
    assert topgrad.viz.SHARED_LEAF_USES == topgrad.viz.SHARED_USES == 3


@needs_dot
def test_a_200_step_rnn_with_w_t_renders(tmp_path: Path) -> None:
    """The RNN with `W.T` at 200 steps, drawn to SVG: `dot` gave up on 50 steps before the copies
    (a warning and no picture); with them it draws in about a second. Not timed: a warning fails."""
    loss, wt = _rnn_with_wt(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = topgrad.viz.write(topgrad.viz.to_dot(loss, names={"Wt": wt}), tmp_path / "rnn.svg")
    assert out == tmp_path / "rnn.svg"
    assert out.read_text(encoding="utf-8").count("used 200 times") == 201  # the box and 200 copies


def test_dot_runs_under_a_time_limit_and_leaves_the_dot_text_when_it_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dot` ran with no time limit, so to_dot could hang for hours on a graph Graphviz grinds on.
    It now runs for at most DOT_TIMEOUT_S seconds; past that the DOT text is written next to the
    picture's name and a warning says how to draw it by hand."""
    calls: list[dict[str, Any]] = []

    def slow_dot(args: list[str], **kwargs: Any) -> Any:
        calls.append(kwargs)
        raise subprocess.TimeoutExpired(args, kwargs.get("timeout") or 0)

    monkeypatch.setattr(topgrad.viz.shutil, "which", lambda name: "/usr/bin/dot")
    monkeypatch.setattr(topgrad.viz.subprocess, "run", slow_dot)
    loss, names = _rnn(2)
    with pytest.warns(RuntimeWarning) as caught:
        out = topgrad.viz.write(topgrad.viz.to_dot(loss, names=names), tmp_path / "g.svg")
    assert calls and calls[0]["timeout"] == topgrad.viz.DOT_TIMEOUT_S == 60
    assert out == tmp_path / "g.dot" and out.read_text(encoding="utf-8").startswith("digraph")
    message = str(caught[0].message)
    assert "took over 60 s" in message and str(out) in message, message
    assert f"dot -Tsvg {out} -o {tmp_path / 'g.svg'}" in message, message
    assert caught[0].filename == __file__, "the warning should point at the caller's line"


# ---- the %i a box refers to -------------------------------------------------------------------
def _titles(dot: str) -> dict[str, str]:
    """Each node id of `dot` and the first line of its label (`%3 <b>Linear</b>`, `%0 W`)."""
    labelled = re.findall(r'^\s*(n\d+(?:u\d+)?) \[.*?label=<?"?(.*?)"?>?\];$', dot, flags=re.M)
    return {node: re.split(r"<br/>|\\n", label)[0] for node, label in labelled}


@needs_dot
def test_every_index_a_box_refers_to_is_shown_on_its_node(tmp_path: Path) -> None:
    """Boxes read `saves x (2, 8) (%9 out)`, as graph()'s text does, but no node showed its %i:
    the reference led nowhere. Each node's title now starts with its %i, in the SVG too."""
    loss, names = _rnn(2)
    dot = topgrad.viz.to_dot(loss, tmp_path / "g.svg", names=names)
    titles = _titles(dot)
    for node in loss.graph(names).nodes:
        assert titles[f"n{node.index}"].startswith(f"%{node.index} "), titles
    referred = set(re.findall(r"\(%(\d+) ", dot))
    assert referred, "the RNN's Linear saves the previous step's Tanh output: (%i out)"
    svg = (tmp_path / "g.svg").read_text(encoding="utf-8")
    shown = [re.sub(r"<[^>]+>", "", t).strip() for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]
    for i in referred:
        assert any(t.split()[:1] == [f"%{i}"] for t in shown), (i, shown)  # `%9`, then `Tanh` in bold


def test_copies_of_a_shared_leaf_show_its_index() -> None:
    """The per-use copies of a shared leaf carry the leaf's %i, so they read as the same tensor."""
    loss, names = _rnn(topgrad.viz.SHARED_LEAF_USES + 1)
    dot = topgrad.viz.to_dot(loss, names=names)
    w = next(n for n in loss.graph(names).nodes if n.name == "W")
    copies = {node: title for node, title in _titles(dot).items() if node.startswith(f"n{w.index}u")}
    assert len(copies) == topgrad.viz.SHARED_LEAF_USES + 1
    assert set(copies.values()) == {f"%{w.index} W"}, copies


# ---- the file's encoding -----------------------------------------------------------------------
def test_dot_text_is_written_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Labels may hold any character (a name such as "Δw", a literal cut short with `…`); write()
    used the locale's encoding, so under LC_ALL=C (ASCII) to_dot(t, "g.dot") raised
    UnicodeEncodeError. It writes UTF-8, as Graphviz reads."""
    script = ("import topgrad\nfrom topgrad import Tensor\n"
              "x = Tensor.randn(2, 3, seed=0)\n"
              f"topgrad.viz.to_dot((x * 2.0).relu().sum(), {str(tmp_path / 'g.dot')!r}, "
              "names={'\\u0394w': x})\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Δw" in (tmp_path / "g.dot").read_text(encoding="utf-8")


# ---- escaping: what a name says is what the picture shows ------------------------------------
def _svg_texts(dot: str) -> list[str]:
    """The text lines Graphviz draws for `dot`, entities decoded, as a reader sees them."""
    done = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    texts = re.findall(r"<text[^>]*>(.*?)</text>", done.stdout.decode("utf-8"), flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in texts]


@needs_dot
def test_backslashes_and_entities_in_names_are_drawn_as_written() -> None:
    """In a box (an HTML-like label) Graphviz expanded `\\N`, `\\G`, `\\L` (an op or name `\\N\\G\\L_op`
    read `n1topgrad\\L_op`: the node's id and the graph's name); in a leaf's quoted label it decoded
    entities (`&amp;` read `&`, `&#x41;` read `A`). Both now show as written."""

    class Twice(Op):
        """x * 2, under a name with backslashes."""

        def forward(self, x: Any) -> Any:
            return x * 2.0

        def backward(self, grad: Any) -> tuple[Any]:
            return (grad * 2.0,)

    Twice.__name__ = "\\N\\G\\L_op"
    x = Tensor([1.0, 2.0])
    h = Twice.apply(x) * 3.0
    dot = topgrad.viz.to_dot(h.sum(), names={"x&amp;&#x41;<b>\\N": x, "h\\G\\L&amp;": h})
    shown = _svg_texts(dot)
    assert "\\N\\G\\L_op" in shown, shown
    assert "h\\G\\L&amp;" in shown, shown
    assert "%0 x&amp;&#x41;<b>\\N" in shown, shown


@needs_dot
def test_a_control_character_in_a_box_is_drawn_as_backslash_x() -> None:
    """A control character cannot go into the file; it is spelled \\xNN, and that spelling is what
    the box and the ellipse show (its backslash not taken for a Graphviz escape)."""
    x = Tensor([1.0, 2.0])
    h = x * 3.0
    shown = _svg_texts(topgrad.viz.to_dot(h.sum(), names={"ctl\x01x\\N": h, "nul\x00x": x}))
    assert "ctl\\x01x\\N" in shown and "%0 nul\\x00x" in shown, shown
