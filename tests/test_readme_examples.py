"""The Python examples of the README, docs/inspecting.md and topgrad-triton's README run as
written and show what their comments say; the README's graph picture is what its script draws.

A file's ```python blocks run in order as one script (later blocks use the names of earlier
ones) in a fresh interpreter on the default backend, in a temporary directory; ```python norun
blocks are cheat sheets with `...` in them, not run. The README's backend block selects the
triton backend, so that file needs topgrad-triton (the interpreter, without a GPU: conftest
turns it on).
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def script(path: Path) -> str:
    """The file's runnable Python blocks, joined in order."""
    text = path.read_text()
    return "\n".join(m.group(2) for m in FENCE.finditer(text) if "norun" not in m.group(1).split())


def run(path: Path, cwd: Path) -> list[str]:
    """Run the file's script as a newcomer would, on the default backend (no TOPGRAD_BACKEND):
    its printed lines, or a failure with its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}
    done = subprocess.run([sys.executable, "-c", script(path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{path.relative_to(ROOT)}:\n{done.stderr[-3000:]}"
    return done.stdout.splitlines()


def needs_triton() -> None:
    if importlib.util.find_spec("topgrad_triton") is None or importlib.util.find_spec("triton") is None:
        pytest.skip("the example selects the triton backend, which is not installed here")


def test_readme_examples(tmp_path: Path) -> None:
    """The first example's gradient shape, and the written-out softmax within ~2.4e-7 of LogSoftmax
    (with numpy alone, as the quickstart installs)."""
    lines = run(ROOT / "README.md", tmp_path)
    assert lines[-2].startswith("(3, 2) "), lines[-2]
    assert float(lines[-1]) < 1e-6, lines[-1]


def test_the_cheat_sheets_backward_by_hand_runs_for_a_matrix_product() -> None:
    """The cheat sheet's `g_x, g_w = t.op.backward(g_t)` raised "too many values to unpack" for
    t = x @ w (or x.linear(w)): Linear's backward returns one entry per positional input, the
    bias's None too. Its line, run as written for a product, a Linear and a one-input op."""
    import topgrad

    line = next(text for text in (ROOT / "README.md").read_text().splitlines() if ".op.backward(g_t)" in text)
    x, w = topgrad.Tensor.randn(2, 3, seed=0), topgrad.Tensor.randn(3, 4, seed=1)
    for t, inputs in ((x @ w, 3), (x.linear(w, topgrad.Tensor.zeros(4)), 3), (x.relu(), 1)):
        names = {"t": t, "g_t": topgrad.get_backend().ones(t.shape)}
        exec(line.split("#")[0].strip(), names)  # the README line itself
        assert len(names["grads"]) == inputs, (line, t)


def test_inspecting_guide_example(tmp_path: Path) -> None:
    """The graph, the picture (or its DOT text without Graphviz) and the profile table."""
    lines = run(ROOT / "docs" / "inspecting.md", tmp_path)
    text = "\n".join(lines)
    assert "Linear" in text and "LogSoftmax" in text and "backward ms" in text, text[-2000:]
    assert (tmp_path / "graph.svg").exists() or (tmp_path / "graph.dot").exists()
    assert lines[-1] == "[('Mean', ()), ('LogSoftmax', (32, 10)), ('Linear', (32, 10))]", lines[-1]


def test_triton_readme_examples(tmp_path: Path) -> None:
    """Selecting the backend and its precision, as the package's README shows them (they print
    nothing: the script must run without an error)."""
    needs_triton()
    run(ROOT / "topgrad-triton" / "README.md", tmp_path)


def _texts(markup: str) -> list[str]:
    return [html.unescape(re.sub(r"<[^>]+>", "", t)).strip() for t in markup]


def test_the_readmes_graph_picture_is_what_draw_graph_draws_now(tmp_path: Path) -> None:
    """docs/attention-graph.svg is drawn by scripts/draw_graph.py on the default backend, and went
    stale once (it showed Attention saving five arrays after it saved four). Redrawn here as DOT
    (no Graphviz needed), in a child process on the default backend whatever this run's is:
    every line a box shows (op, shape, kept settings, saves, bytes) is in the SVG, and the SVG
    shows no such line the drawing does not."""
    dot = tmp_path / "attention.dot"
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}  # drawn on the default backend
    script = ROOT / "scripts" / "draw_graph.py"
    done = subprocess.run([sys.executable, str(script), "attention", "--out", str(dot)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    drawn = [line for label in re.findall(r"label=<(.*?)>\];", dot.read_text())
             for line in _texts(label.split("<br/>"))]
    svg = (ROOT / "docs" / "attention-graph.svg").read_text()
    shown = _texts(re.findall(r"<text[^>]*>(.*?)</text>", svg))
    detail = re.compile(r"^(saves |kept: |\d.* saved$)")
    assert sorted(t for t in shown if detail.match(t)) == sorted(t for t in drawn if detail.match(t)), (
        "docs/attention-graph.svg is stale: redraw it with "
        "`python scripts/draw_graph.py attention --out docs/attention-graph.svg`")
