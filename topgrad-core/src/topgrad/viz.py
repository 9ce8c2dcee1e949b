"""Draw the graph behind a tensor with Graphviz: `to_dot(t)` gives DOT text, `to_dot(t, "g.svg")` a picture.

Leaves are grey ellipses, ops are boxes showing the output shape and what the op saved for
backward, each titled with its `%i` as graph()'s text numbers it (a save reads `(%3 out)`); edges
run from inputs to the op that consumed them, numbered by argument position.
A tensor used by more than `SHARED_USES` ops (an RNN's weight, used at every step, or its `W.T`
computed once and used at every step) gets one dashed copy next to each use, noting how often it is
used, in place of an edge from its node: Graphviz's layout of dozens of long edges from one node
took minutes. A shared leaf is drawn only as these copies; a shared op's box is still drawn once,
where it is computed, with its inputs' edges, and reads `used N times`. Rendering SVG/PNG/PDF
needs the `dot` program (Graphviz); without it, or when it runs past `DOT_TIMEOUT_S` seconds, the
DOT text is written instead, with a warning.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topgrad.graph import Graph, Node, _shape_text, build, format_attrs, human_bytes
from topgrad.warning_location import warn

if TYPE_CHECKING:
    from topgrad.tensor import Tensor

_PICTURES = {".svg", ".png", ".pdf", ".jpg", ".jpeg", ".gif"}
_TEXT = {".dot", ".gv", ".txt", ""}  # DOT text is written under these as it is
SHARED_USES = 3  # a tensor with more consumers than this gets a dashed copy at each use
SHARED_LEAF_USES = SHARED_USES  # its name when only leaves were copied
DOT_TIMEOUT_S = 60.0  # seconds `dot` may take to draw a picture before to_dot gives up on it


def to_dot(
    t: Tensor, path: str | Path | None = None, *, names: Mapping[str, Tensor] | None = None,
    show_saved: bool = True, rankdir: str = "TB",
) -> str:
    """DOT text of the graph behind `t`; with `path` also write it (.dot, .gv, .txt or no suffix, or
    a picture via `dot`: .svg, .png, .pdf, .jpg, .gif; another suffix is a ValueError).

    `names` (e.g. a model's `{name: parameter}`) labels those tensors in the picture.
    """
    if isinstance(path, Mapping):
        raise TypeError("to_dot(t, path=None, *, names=None): the second argument is the file path; "
                        "give the names by keyword, to_dot(t, names={...})")
    text = graph_to_dot(build(t, names), show_saved=show_saved, rankdir=rankdir)
    if path is not None:
        write(text, path)
    return text


def graph_to_dot(g: Graph, *, show_saved: bool = True, rankdir: str = "TB") -> str:
    """DOT text of a `Graph` built by `topgrad.graph.build`."""
    lines = [
        "digraph topgrad {",
        f"  rankdir={rankdir};",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, color="#555555"];',
    ]
    last = g.nodes[-1].index if g.nodes else -1
    uses = Counter(int(p[1:]) for n in g.nodes for p in n.parents if p.startswith("%"))
    copied = {n.index: n for n in g.nodes if uses[n.index] > SHARED_USES}
    for n in g.nodes:
        if n.op is None:
            if n.index not in copied:  # a shared leaf is drawn at each edge below
                lines.append(f"  n{n.index} [{_leaf_attrs(n)}];")
            continue
        title = f"%{n.index} <b>{_html(n.op)}</b>" + (f" {_html(n.name)}" if n.name else "")
        rows = [title, _html(_shape_text(n.shape))]
        if n.index in copied:  # its consumers get dashed copies below, not edges from this box
            rows.append(f'<font point-size="8">used {uses[n.index]} times</font>')
        if n.attrs:
            rows.append(f'<font point-size="8">kept: {_html(format_attrs(n.attrs))}</font>')
        if show_saved and n.saved:
            for s in n.saved:
                rows.append(f'<font point-size="8">{s.verb} {_html(s.name)} {_html(_shape_text(s.shape))}'
                            f"{' (' + _html(s.same_as) + ')' if s.same_as else ''}</font>")
            rows.append(f'<font point-size="8">{human_bytes(n.saved_bytes)} saved</font>')
        elif n.released:
            rows.append('<font point-size="8">released</font>')
        fill = "#ffd9a8" if n.index == last else "#d8e8ff"
        label = "<" + "<br/>".join(rows) + ">"
        lines.append(f'  n{n.index} [shape=box, style="rounded,filled", fillcolor="{fill}", label={label}];')
    literal = 0
    copies: Counter[int] = Counter()
    for n in g.nodes:
        many = len(n.parents) > 1
        for position, parent in enumerate(n.parents):
            edge_label = f' [label="{position}"]' if many else ""
            if parent.startswith("%") and int(parent[1:]) in copied:
                shared = copied[int(parent[1:])]
                copy = f"n{shared.index}u{copies[shared.index]}"
                copies[shared.index] += 1
                attrs = (_leaf_attrs(shared, uses[shared.index]) if shared.op is None
                         else _op_copy_attrs(shared, uses[shared.index]))
                lines.append(f"  {copy} [{attrs}];")
                lines.append(f"  {copy} -> n{n.index}{edge_label};")
            elif parent.startswith("%"):
                lines.append(f"  n{parent[1:]} -> n{n.index}{edge_label};")
            elif parent != "None":
                literal += 1
                lines.append(f'  c{literal} [shape=plaintext, label="{_escape(parent)}"];')
                lines.append(f"  c{literal} -> n{n.index}{edge_label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _leaf_attrs(n: Node, uses: int = 0) -> str:
    """DOT attributes of a leaf's ellipse: `%i name` (or leaf/const) and shape; `uses` > 0 draws one
    dashed copy of a shared leaf, noting how many ops use it."""
    kind = "const" if n.constant else "leaf"  # as graph() prints it
    label = f"%{n.index} {_escape(n.name or kind)}\\n{_shape_text(n.shape)}"
    if uses:
        label += f"\\nused {uses} times"
    style = "filled,dashed" if uses else "filled"
    return f'shape=ellipse, style="{style}", fillcolor="#e8e8e8", label="{label}"'


def _op_copy_attrs(n: Node, uses: int) -> str:
    """DOT attributes of one dashed copy of op `n`'s output, drawn at a consumer in place of a long
    edge from its box: `%i Op name`, shape and how many ops use it, as a leaf's copy reads."""
    title = f"%{n.index} {_escape(n.op or '')}" + (f" {_escape(n.name)}" if n.name else "")
    label = f"{title}\\n{_shape_text(n.shape)}\\nused {uses} times"
    return f'shape=box, style="rounded,filled,dashed", fillcolor="#d8e8ff", label="{label}"'


def write(dot_text: str, path: str | Path) -> Path:
    """Write DOT text to `path` (.dot, .gv, .txt or no suffix); a picture (.svg, .png, .pdf, .jpg,
    .jpeg, .gif) is rendered with Graphviz's `dot` when it is installed and finishes within
    `DOT_TIMEOUT_S` seconds; else the DOT text goes next to it (same name, .dot) with a warning.
    Any other suffix (`g.svgz`, `graph.v2`) is a ValueError: the text would go under a name that
    says otherwise."""
    path = Path(path)
    if path.suffix.lower() in _TEXT:
        path.write_text(dot_text, encoding="utf-8")
        return path
    if path.suffix.lower() not in _PICTURES:  # `.svgz`, `.webp`: DOT text under a picture's name
        raise ValueError(f"{path}: to_dot writes DOT text ({', '.join(sorted(s for s in _TEXT if s))} or no "
                         f"suffix) or a picture ({', '.join(sorted(_PICTURES))}), not {path.suffix}")
    exe = shutil.which("dot")
    if exe is None:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_text, encoding="utf-8")
        warn(f"Graphviz's `dot` program is not installed, so {path} was not drawn; the DOT text is in "
             f"{fallback} (install Graphviz, e.g. `apt install graphviz`, to render pictures)")
        return fallback
    fmt = {"jpg": "jpeg"}.get(path.suffix[1:].lower(), path.suffix[1:].lower())
    try:
        done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(),
                              capture_output=True, timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # Graphviz's layout can grind for hours on a large graph
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_text, encoding="utf-8")
        warn(f"Graphviz's `dot` took over {DOT_TIMEOUT_S:g} s to draw {path} and was stopped, so the picture "
             f"was not drawn; the DOT text is in {fallback}. Draw it by hand, with no time limit: "
             f"`dot -T{fmt} {fallback} -o {path}` (or raise topgrad.viz.DOT_TIMEOUT_S)")
        return fallback
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip()
        raise OSError(f"Graphviz's dot could not write {path}: {why}")
    return path


def _spelled(text: str, backslash: str) -> str:
    """`text` with each control character but tab and newline (Graphviz refuses them; XML has no
    place for them) written out as `backslash` + xNN."""
    return "".join(c if c >= " " or c in "\t\n" else f"{backslash}x{ord(c):02x}" for c in text)


def _escape(text: str) -> str:
    """`text` inside a DOT string: backslash and quote escaped, & as &amp; (Graphviz reads entities
    in any label, so `&amp;` showed as `&`), control characters as \\xNN."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("&", "&amp;")
    return _spelled(escaped, "\\\\")


def _html(text: Any) -> str:
    """`text` for an HTML-like label: &, <, > escaped, backslash doubled (Graphviz expands `\\N`,
    `\\G`, `\\L` there too, even written &#92;N: the node's id, the graph's name), control
    characters as \\xNN."""
    escaped = _spelled(str(text).replace("\\", "\\\\"), "\\\\")
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
