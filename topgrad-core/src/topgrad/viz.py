"""Draw the graph behind a tensor with Graphviz: `to_dot(t)` gives DOT text, `to_dot(t, "g.svg")` a picture.

Leaves are grey ellipses, ops are boxes showing the output shape and what the op saved for
backward; edges run from inputs to the op that consumed them, numbered by argument position.
Rendering SVG/PNG/PDF needs the `dot` program (Graphviz); without it the DOT text is written.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topgrad.graph import Graph, _shape_text, build, format_attrs, human_bytes
from topgrad.warning_location import warn

if TYPE_CHECKING:
    from topgrad.tensor import Tensor

_PICTURES = {".svg", ".png", ".pdf", ".jpg", ".jpeg", ".gif"}
_TEXT = {".dot", ".gv", ".txt", ""}  # DOT text is written under these as it is


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
    for n in g.nodes:
        if n.op is None:
            kind = "const" if n.constant else "leaf"  # as graph() prints it
            label = f"{_escape(n.name or kind)}\\n{_shape_text(n.shape)}"
            lines.append(f'  n{n.index} [shape=ellipse, style=filled, fillcolor="#e8e8e8", label="{label}"];')
            continue
        title = f"<b>{_html(n.op)}</b>" + (f" {_html(n.name)}" if n.name else "")
        rows = [title, _html(_shape_text(n.shape))]
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
    for n in g.nodes:
        many = len(n.parents) > 1
        for position, parent in enumerate(n.parents):
            edge_label = f' [label="{position}"]' if many else ""
            if parent.startswith("%"):
                lines.append(f"  n{parent[1:]} -> n{n.index}{edge_label};")
            elif parent != "None":
                literal += 1
                lines.append(f'  c{literal} [shape=plaintext, label="{_escape(parent)}"];')
                lines.append(f"  c{literal} -> n{n.index}{edge_label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(dot_text: str, path: str | Path) -> Path:
    """Write DOT text to `path` (.dot, .gv, .txt or no suffix); a picture (.svg, .png, .pdf, .jpg,
    .jpeg, .gif) is rendered with Graphviz's `dot` when it is installed. Any other suffix
    (`g.svgz`, `graph.v2`) is a ValueError: the text would go under a name that says otherwise."""
    path = Path(path)
    if path.suffix.lower() in _TEXT:
        path.write_text(dot_text)
        return path
    if path.suffix.lower() not in _PICTURES:  # `.svgz`, `.webp`: DOT text under a picture's name
        raise ValueError(f"{path}: to_dot writes DOT text ({', '.join(sorted(s for s in _TEXT if s))} or no "
                         f"suffix) or a picture ({', '.join(sorted(_PICTURES))}), not {path.suffix}")
    exe = shutil.which("dot")
    if exe is None:
        fallback = path.with_suffix(".dot")
        fallback.write_text(dot_text)
        warn(f"Graphviz's `dot` program is not installed, so {path} was not drawn; the DOT text is in "
             f"{fallback} (install Graphviz, e.g. `apt install graphviz`, to render pictures)")
        return fallback
    fmt = {"jpg": "jpeg"}.get(path.suffix[1:].lower(), path.suffix[1:].lower())
    done = subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot_text.encode(), capture_output=True)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip()
        raise OSError(f"Graphviz's dot could not write {path}: {why}")
    return path


def _spelled(text: str, backslash: str) -> str:
    """`text` with each control character but tab and newline (Graphviz refuses them; XML has no
    place for them) written out as `backslash` + xNN."""
    return "".join(c if c >= " " or c in "\t\n" else f"{backslash}x{ord(c):02x}" for c in text)


def _escape(text: str) -> str:
    """`text` inside a DOT string: backslash and quote escaped, control characters as \\xNN."""
    return _spelled(text.replace("\\", "\\\\").replace('"', '\\"'), "\\\\")


def _html(text: Any) -> str:
    """`text` for an HTML-like label: &, <, > escaped, control characters as \\xNN."""
    return _spelled(str(text), "\\").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
