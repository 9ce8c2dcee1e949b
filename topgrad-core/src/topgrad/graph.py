"""The graph behind a tensor, as data you can print: ops, shapes, parents, what each op saved.

`t.graph()` (or `topgrad.graph.build(t)`) walks the graph that produced `t` and returns a
`Graph`: its nodes in topological order (leaves included), each with its op, output shape,
parents and the arrays the op keeps for backward, with their shapes and bytes (`saves` for
`save_for_backward`'s, which backward releases, `keeps` for attributes, which it does not);
`print` shows it, with totals per op type at the end, the total counting each array once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Any

from topgrad.arrays import dtype_name, is_array, itemsize, nbytes, shape_of
from topgrad.indexing import index_text, is_index
from topgrad.op import Op
from topgrad.tensor import Tensor, _toposort

# Attributes of an op that are the engine's bookkeeping, not what the op saved.
_ENGINE_ATTRS = frozenset({"parents", "_out_shape", "_out_dtype", "_output", "_intermediate", "_saved_names"})


@dataclass(frozen=True)
class SavedArray:
    """One array an op keeps for backward."""

    name: str  # its save_for_backward keyword (`out`), "#0", "#1" by position, else the attribute's name
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    alias: str | None = None  # "input 0", "output", "%3 (live)": memory the graph holds anyway
    shares: str | None = None  # "%3 #0": an earlier save of the same memory (its output, say)
    view: bool = False  # part of that memory (a reshape, a slice), not the very same elements
    attribute: bool = False  # kept as an attribute (`self.x = x`): backward does not release it

    @property
    def verb(self) -> str:
        """How the graph's text and picture say it: "saves" (released by backward), "keeps" (an
        attribute, which backward does not release)."""
        return "keeps" if self.attribute else "saves"

    @property
    def same_as(self) -> str | None:
        """What this array also is, as the graph labels it: the alias, else the earlier save."""
        return self.alias or self.shares

    @property
    def label(self) -> str:
        """"same array as input 0", "shares memory with %3 (live)", or "" for memory of its own."""
        if not self.same_as:
            return ""
        return f"{'shares memory with' if self.view else 'same array as'} {self.same_as}"


@dataclass
class Node:
    """One tensor of the graph: a leaf (op is None) or the output of an op."""

    index: int
    op: str | None
    shape: tuple[int, ...]
    dtype: str
    parents: tuple[str, ...]  # "%3" for a tensor of the graph, else the literal ("2.0", "None")
    saved: list[SavedArray] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)  # small settings the op kept (stride, axis)
    released: bool = False  # backward ran through this node and freed what it saved
    built_at: str | None = None  # "file.py:12" where the op ran, when anomaly mode recorded it
    name: str | None = None  # the tensor's name, when `build` was given names (model.state())
    output_bytes: int = 0
    constant: bool = False  # a leaf backward gives no gradient (requires_grad=False: an input batch)

    @property
    def kind(self) -> str:
        """The op's name, or 'leaf' / 'const' for a leaf that gets a gradient / does not."""
        return self.op or ("const" if self.constant else "leaf")

    @property
    def saved_bytes(self) -> int:
        """Bytes of the arrays this op saved for backward."""
        return sum(s.nbytes for s in self.saved)

    @property
    def extra_saved_bytes(self) -> int:
        """Saved bytes that no live Tensor holds (an input or output of this op that your code
        still references would be): memory held only for backward."""
        return sum(s.nbytes for s in self.saved if s.alias is None)


@dataclass
class OpTotals:
    """Totals for one op type over a graph."""

    count: int = 0
    saved_arrays: int = 0
    saved_bytes: int = 0
    extra_saved_bytes: int = 0
    output_bytes: int = 0


class Graph:
    """The nodes behind a tensor in topological order, and totals per op type."""

    def __init__(
        self, nodes: list[Node], distinct_saved_bytes: int, distinct_extra_bytes: int = 0,
        distinct_saved_arrays: int | None = None,
    ) -> None:
        self.nodes = nodes
        self.distinct_saved_bytes = distinct_saved_bytes  # each saved buffer once: the real memory
        self.distinct_extra_bytes = distinct_extra_bytes  # of which no live Tensor holds it too
        # how many distinct arrays (buffers) those are; by default the per-op count
        self.distinct_saved_arrays = (sum(len(n.saved) for n in nodes) if distinct_saved_arrays is None
                                      else distinct_saved_arrays)
        self.name_notes: list[str] = []  # names given to graph() that label nothing, or one tensor twice

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    @property
    def ops(self) -> list[Node]:
        """The nodes made by an op (leaves left out)."""
        return [n for n in self.nodes if n.op is not None]

    @property
    def saved_bytes(self) -> int:
        """Bytes of all arrays saved for backward, an array counted once per op that saved it (a
        ReLU's output, saved by the ReLU and the next Linear, twice): `distinct_saved_bytes` is
        the memory."""
        return sum(n.saved_bytes for n in self.nodes)

    @property
    def extra_saved_bytes(self) -> int:
        """Per-op sum of saved bytes that no live Tensor holds (see `distinct_extra_bytes`)."""
        return sum(n.extra_saved_bytes for n in self.nodes)

    def totals(self) -> dict[str, OpTotals]:
        """Per op type: how many nodes, arrays and bytes saved, bytes of outputs."""
        out: dict[str, OpTotals] = {}
        for n in self.ops:
            t = out.setdefault(n.op or "", OpTotals())
            t.count += 1
            t.saved_arrays += len(n.saved)
            t.saved_bytes += n.saved_bytes
            t.extra_saved_bytes += n.extra_saved_bytes
            t.output_bytes += n.output_bytes
        return out

    def to_dot(self, **kwargs: Any) -> str:
        """Graphviz DOT text of this graph (see `topgrad.viz.graph_to_dot`)."""
        from topgrad.viz import graph_to_dot

        return graph_to_dot(self, **kwargs)

    def __repr__(self) -> str:
        return f"<Graph: {len(self.ops)} ops, {len(self.nodes) - len(self.ops)} leaves>"

    def __str__(self) -> str:
        return format_graph(self)


def _trained_by_some_op(order: list[Any]) -> set[int]:
    """The ids of the leaves some op of `order` will give a gradient: one that was a constant when
    the op ran (requires_grad set True only after the forward) gets none from it (`Op.needs_grad`)."""
    return {id(p) for op in order if not isinstance(op, Tensor)
            for i, p in enumerate(op.parents) if isinstance(p, Tensor) and not op._constants >> i & 1}


def build(t: Tensor, names: Mapping[str, Tensor] | None = None) -> Graph:
    """Describe the graph that produced `t`, leaves first, `t` last.

    `names` maps names to tensors (a model's parameters, `{"x": x}`) to label those nodes.
    The graph's nodes are ops and leaf Tensors; an op's output may be freed already, so its
    shape and dtype come from the op.
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"graph: needs a Tensor, got {type(t).__name__}")
    if names is not None:
        check_names(names)
    order = _toposort(t._op) if t._op is not None else [t]
    index = {id(node): i for i, node in enumerate(order)}
    label = {id(tensor): name for name, tensor in (names or {}).items()}
    nodes: list[Node] = []
    seen_saved: dict[tuple[int, Any], int] = {}  # (owner's id, region) -> bytes: each saved memory once
    first_save: dict[int, tuple[str, Any]] = {}  # memory owner's id -> ("%3 #0", array): its first save
    live = _live_roots(order)  # memory owner's id -> ("%i", array): a live Tensor holding it
    trainable = _trained_by_some_op(order)
    for i, item in enumerate(order):
        if isinstance(item, Tensor):
            constant = not item.requires_grad or (t._op is not None and id(item) not in trainable)
            node = Node(i, None, item.shape, dtype_name(item.data), (), constant=constant)
            node.output_bytes = nbytes(item.data)
            node.name = label.get(id(item))
            nodes.append(node)
            continue
        op, output = item, item.output()
        parents = tuple(f"%{index[id(p)]}" if id(p) in index else _literal(p) for p in op.parents)
        saved = saved_arrays(op, output, live)
        for j, (s, array) in enumerate(saved):
            root = _root(array)
            key = id(root)
            if key in live:  # memory your code holds anyway: each distinct part saved, once
                seen_saved[key, _region(array)] = s.nbytes
            else:  # held only for backward: a saved view keeps its whole buffer alive
                seen_saved[key, None] = max(seen_saved.get((key, None), 0), s.nbytes, nbytes(root))
            if s.alias is None and key in first_save:  # shown whatever Tensors your code still holds
                first, first_array = first_save[key]
                saved[j] = (replace(s, shares=first, view=not _same(array, first_array)), array)
            first_save.setdefault(key, (f"%{i} {s.name}", array))
        node = Node(
            i, type(op).__name__, tuple(int(d) for d in op._out_shape), _dtype_text(op._out_dtype), parents,
            saved=[s for s, _ in saved], attrs=_settings(op), released=op._released,
            built_at=str(b) if (b := getattr(op, "_built_at", None)) else None,  # anomaly mode's BuiltAt
        )
        node.output_bytes = math.prod(node.shape) * itemsize(op._out_dtype)
        node.name = label.get(id(output)) if output is not None else None
        nodes.append(node)
    extra = sum(b for (key, _), b in seen_saved.items() if key not in live)  # an alias is live memory too
    per_owner: dict[int, int] = {}
    for (key, _), b in seen_saved.items():
        per_owner[key] = per_owner.get(key, 0) + b
    # a live buffer's saved views (x and x.reshape, x and x[0], a stride-0 broadcast) count once:
    # no more than the buffer itself
    held = sum(min(b, nbytes(_root(live[key][1]))) if key in live else b for key, b in per_owner.items())
    graph = Graph(nodes, held, extra, distinct_saved_arrays=len(seen_saved))
    shown = [n if isinstance(n, Tensor) else n.output() for n in order]  # an output may be freed: None
    leaves = {f"%{i}": n for i, n in enumerate(order) if isinstance(n, Tensor) and id(n) not in label}
    ids = {id(t) for t in shown if t is not None}
    graph.name_notes = _name_notes(names or {}, ids, leaves, label)
    return graph


_NAMES_LISTED = 6  # missing names listed in full; the rest as "and 12 more"


def _name_notes(
    names: Mapping[str, Tensor], ids: AbstractSet[int], leaves: Mapping[str, Tensor],
    label: Mapping[int, str],
) -> list[str]:
    """What the printed graph says about `names` that label no node (of the tensors `ids`) or a
    tensor that another name labels too (the last one given is shown).

    A missing tensor that may get a gradient (a typo'd or stale parameter) is listed, the first few
    of many. Not listed: a constant (an input batch, a model's running statistics), except where an
    unnamed leaf of the graph shares its memory (the batch, reshaped before use)."""
    notes = []
    missing = [(name, t) for name, t in names.items() if id(t) not in ids]
    unused = [name for name, t in missing if t.requires_grad]
    if unused:
        notes.append(f"not in this graph, so not shown: {_some(unused)}")
    viewed = []
    for name, t in missing:
        if t.requires_grad:
            continue
        views = [key for key, leaf in leaves.items() if _overlap(leaf.data, t.data)]
        if views:
            share = "shares" if len(views) == 1 else "share"
            viewed.append(f"{name!r} ({_some(views, quote=False)} {share} its memory)")
    if viewed:
        notes.append("not in this graph, as a reshaped or sliced tensor is a new one: "
                     + _some(viewed, quote=False))
    for name, t in names.items():
        if id(t) in ids and label[id(t)] != name:
            notes.append(f"{name!r} names the same tensor as {label[id(t)]!r}, which is shown")
    return notes


def _some(items: list[str], quote: bool = True) -> str:
    """"'a', 'b' and 12 more": the first few of a long list."""
    shown = [repr(i) if quote else i for i in items[:_NAMES_LISTED]]
    rest = len(items) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def check_names(names: Any, who: str = "graph") -> None:
    """A TypeError that says what `names` was, where it is not {name: Tensor} (a list of tensors,
    a dict of arrays): its type, or the first entry that is not a str key with a Tensor value.
    `who` takes it (graph, detect_anomaly)."""
    if not isinstance(names, Mapping):
        got = f"a {type(names).__name__}"
    else:
        wrong = [(k, v) for k, v in names.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
        if not wrong:
            return
        got = f"{wrong[0][0]!r:.40}: a {type(wrong[0][1]).__name__}"
    also = "" if who == "graph" else " (the mapping graph() takes)"
    raise TypeError(f"{who}: names maps names to Tensors, as {{'x': x, 'w': w}}{also}, got {got}")


def _dtype_text(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def held_arrays(op: Op) -> list[tuple[str, Any]]:
    """(name, array) for what `op` keeps for backward: its `save_for_backward` arrays (by their
    keyword, else '#0', ...) and its array attributes (by name); `saved_arrays` and the profiler
    both count these."""
    return [(name, array) for name, array, _ in _held(op)]


def saved_count(op: Op) -> int:
    """How many arrays `op` saved with save_for_backward, as graph() lists them: a saved None or
    number is none, a tuple's arrays count each."""
    return sum(not attribute for *_, attribute in _held(op))


def _held(op: Op) -> list[tuple[str, Any, bool]]:
    """`held_arrays`, each with True where it is an attribute (`self.x = x`), which backward does
    not release, rather than a `save_for_backward` array, which it does."""
    saved: list[tuple[str, Any]] = []
    names = op._saved_names
    for i, item in enumerate(() if op._released else op.saved):
        _collect(names[i] if i < len(names) else f"#{i}", item, saved)
    kept: list[tuple[str, Any]] = []
    for name, value in vars(op).items():
        if name not in _ENGINE_ATTRS and not name.startswith("__"):
            _collect(name, value, kept)
    return [(name, array, False) for name, array in saved] + [(name, array, True) for name, array in kept]


def saved_arrays(
    op: Op, output: Tensor | None = None, live: Mapping[int, tuple[str, Any]] | None = None
) -> list[tuple[SavedArray, Any]]:
    """What `op` keeps for backward (`held_arrays`), each with its shape, dtype, size and alias
    (an input, the output, or the memory of another live Tensor of the graph: `live`), and whether
    it is an attribute."""
    found = []
    for name, array, attribute in _held(op):
        alias, view = _alias(array, op, output) or _live_alias(array, live) or (None, False)
        found.append((SavedArray(name, shape_of(array) or (), dtype_name(array), nbytes(array), alias,
                                 view=view, attribute=attribute), array))
    return found


def _live_roots(order: list[Any]) -> dict[int, tuple[str, Any]]:
    """Memory owner's id -> ("%i", its array) for every Tensor of the graph still alive (leaves,
    and outputs your code holds): a saved view of one (`h.reshape(...)` saved by the next op) is
    no extra."""
    roots: dict[int, tuple[str, Any]] = {}
    for i, item in enumerate(order):
        tensor = item if isinstance(item, Tensor) else item.output()
        if tensor is not None:
            roots.setdefault(id(_root(tensor.data)), (f"%{i}", tensor.data))
    return roots


def _live_alias(array: Any, live: Mapping[int, tuple[str, Any]] | None) -> tuple[str, bool] | None:
    """("%3 (live)", view) where `array` is memory of a live Tensor of the graph, else None."""
    held_by = None if live is None else live.get(id(_root(array)))
    return None if held_by is None else (f"{held_by[0]} (live)", not _same(array, held_by[1]))


_NESTING = 16  # containers inside containers walked by _collect; deeper ones are not looked into


def _collect(name: str, value: Any, found: list[tuple[str, Any]], within: tuple[int, ...] = ()) -> None:
    """Append (name, array) for `value` if it is an array, or for each array inside it when it is a
    tuple, list or mapping (`cache['big']`: a dict of arrays lives as long as the graph too). A
    container that holds itself is not walked again, nor one nested deeper than `_NESTING`."""
    if isinstance(value, Tensor):  # keyword Tensors (running stats) are not saved arrays
        return
    if is_array(value):
        found.append((name, value))
        return
    if isinstance(value, (tuple, list)):
        items: Any = ((f"{name}[{j}]", item) for j, item in enumerate(value))
    elif isinstance(value, Mapping):
        items = ((f"{name}[{_literal(key)}]", item) for key, item in value.items())
    else:
        return
    if id(value) in within or len(within) >= _NESTING:
        return
    for label, item in items:
        _collect(label, item, found, (*within, id(value)))


def _root(a: Any) -> Any:
    """The array that owns `a`'s memory: follows numpy's `.base` and torch's `._base`."""
    for _ in range(64):  # a chain of views is short; the bound guards against odd objects
        base = getattr(a, "_base", None)
        if base is None:
            base = getattr(a, "base", None)
        if base is None or base is a:
            return a
        a = base
    return a


def _same(a: Any, b: Any) -> bool:
    """True when `a` and `b` are the same elements: one object, or views of one owner at one address
    with one shape and strides (`x[0]` and `x[1]` share an owner, not their elements)."""
    if a is b:
        return True
    if _root(a) is not _root(b):
        return False
    where = _region(a)
    return where is None or where == _region(b)  # where unknown: as one


def _overlap(a: Any, b: Any) -> bool:
    """Whether `a` and `b`, views of one owner, span common bytes (the batch and its reshape do; two
    slices of one dataset array do not). Where the extent is unknown: as shared."""
    if _root(a) is not _root(b):
        return False
    spans = [_extent(a), _extent(b)]
    if None in spans:
        return True
    (lo_a, hi_a), (lo_b, hi_b) = spans  # type: ignore[misc]
    return lo_a < hi_b and lo_b < hi_a


def _extent(a: Any) -> tuple[int, int] | None:
    """[first, last + 1) bytes an array's elements span, from its address, shape and strides."""
    where = _region(a)
    if where is None:
        return None
    address, shape, strides = where
    if 0 in shape:
        return address, address
    size = a.element_size() if callable(getattr(a, "element_size", None)) else a.itemsize
    step = size if callable(getattr(a, "data_ptr", None)) else 1  # torch's strides count elements
    low = sum(min(0, (n - 1) * st * step) for n, st in zip(shape, strides))
    high = sum(max(0, (n - 1) * st * step) for n, st in zip(shape, strides))
    return address + low, address + high + size


def _region(a: Any) -> tuple[Any, ...] | None:
    """(address, shape, strides) of a torch or numpy array (read duck-typed: core has neither);
    None for another kind of array."""
    try:
        if callable(getattr(a, "data_ptr", None)):
            return a.data_ptr(), tuple(a.shape), tuple(a.stride())
        return a.__array_interface__["data"][0], tuple(a.shape), tuple(a.strides)
    except (AttributeError, KeyError, TypeError, RuntimeError):
        return None


def _alias(array: Any, op: Op, output: Tensor | None) -> tuple[str, bool] | None:
    """(the input or output whose memory `array` is, whether it is only part of it), else None:
    an input or output holding the very same elements is named before one it is a view of."""
    held = [(f"input {j}", p.data if isinstance(p, Tensor) else _output_data(p))
            for j, p in enumerate(op.parents)]
    held.append(("output", output.data if output is not None else None))
    owners = [(name, data) for name, data in held if data is not None and _root(data) is _root(array)]
    for name, data in owners:
        if _same(array, data):
            return name, False
    return (owners[0][0], True) if owners else None


def _output_data(node: Any) -> Any:
    """The array an op node produced, while its output Tensor is alive; else None."""
    output = node.output() if isinstance(node, Op) else None
    return None if output is None else output.data


def _settings(op: Op) -> dict[str, Any]:
    """Small public settings an op kept (stride=2, axis=-1), for display."""
    out = {}
    for name, value in vars(op).items():
        if name.startswith("_") or name in _ENGINE_ATTRS:
            continue
        if isinstance(value, (bool, int, float, str)) or (
            isinstance(value, tuple) and len(value) <= 8 and all(isinstance(v, int) for v in value)
        ):
            out[name] = value
        elif is_index(value) and len(value) <= 8:  # a Slice's index, as Python code writes it
            out[name] = index_text(value)
    return out


def format_attrs(attrs: dict[str, Any]) -> str:
    """'stride=2 scale=0.125': the small values an op kept, floats as Python writes them (2.0)
    up to six significant digits."""
    return " ".join(f"{k}={_short_float(v) if isinstance(v, float) else v}" for k, v in attrs.items())


def _short_float(v: float) -> str:
    text = repr(v)
    return text if len(text) <= 8 else f"{v:.6g}"


def _literal(value: Any) -> str:
    """A plain value as a parent or key shows it, at most 12 characters: numbers (numpy's scalars
    too: `2.5`, not `np.float32(…`) by their value, anything else by its repr, cut short."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        text = _short_float(float(value))
    else:
        text = repr(value)
    return text if len(text) <= 12 else text[:11] + "…"


# ---- printing -----------------------------------------------------------------------
def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


_ATTRIBUTE_TAG = "(attribute, not released by backward)"


def _printable(name: str) -> str:
    """`name` as it is, or as Python writes it ('a\\nb') where it holds a newline or another
    character that would break the row."""
    return name if name.isprintable() else repr(name)


def format_graph(g: Graph) -> str:
    """The text `print(graph)` shows: one line per node, saved arrays under it, totals. Columns are
    as wide as their longest entry."""
    n_ops, n_leaves = len(g.ops), len(g.nodes) - len(g.ops)
    lines = [f"graph: {n_ops} op{'' if n_ops == 1 else 's'}, {n_leaves} lea{'f' if n_leaves == 1 else 'ves'}"]
    if not g.ops and g.nodes and g.nodes[0].constant:
        lines.append("  (a constant: an input made with requires_grad=False, or a result computed")
        lines.append("   under no_grad or from constants only, which records no graph)")
    saves = [s for n in g.nodes for s in n.saved]
    width = max([len(n.kind) for n in g.nodes] + [len("total")])
    index_w = max([len(str(n.index)) for n in g.nodes] + [4])
    shape_w = max([len(_shape_text(n.shape)) for n in g.nodes] + [0])
    dtype_w = max([len(n.dtype) for n in g.nodes] + [0])
    save_name_w = max([len(s.name) for s in saves] + [0])
    save_shape_w = max([len(_shape_text(s.shape)) for s in saves] + [0])
    save_dtype_w = max([len(s.dtype) for s in saves] + [0])
    save_bytes_w = max([len(human_bytes(s.nbytes)) for s in saves] + [0])
    for n in g.nodes:
        settings = format_attrs(n.attrs)
        head = (f"  %{n.index:<{index_w}} {n.kind:<{width}}  {_shape_text(n.shape):<{shape_w}}  "
                f"{n.dtype:<{dtype_w}}")
        if n.name:
            head += f"  {_printable(n.name)}"
        if n.parents:
            head += "  <- " + ", ".join(n.parents)
        if settings:
            head += f"  [kept: {settings}]"
        if n.built_at:
            head += f"  @ {n.built_at}"
        lines.append(head.rstrip())
        if n.op is not None and n.released:
            lines.append("        (saved arrays released by backward)")
        for s in n.saved:
            notes = [note for note in (s.label, _ATTRIBUTE_TAG if s.attribute else "") if note]
            lines.append(
                f"        {s.verb} {s.name:<{save_name_w}}  {_shape_text(s.shape):<{save_shape_w}}  "
                f"{s.dtype:<{save_dtype_w}}  {human_bytes(s.nbytes):>{save_bytes_w}}  "
                f"{'  '.join(notes)}".rstrip()
            )
    totals = g.totals()
    if totals:
        lines.append("")
        lines.append(f"  {'op':<{width}}  {'count':>6} {'saved arrays':>13} {'saved bytes':>12} "
                     f"{'of which extra':>15} {'output bytes':>13}")
        rows = sorted(totals.items(), key=lambda kv: -kv[1].saved_bytes)
        rows.append(("total", OpTotals(
            sum(t.count for t in totals.values()), g.distinct_saved_arrays,
            g.distinct_saved_bytes, g.distinct_extra_bytes, sum(t.output_bytes for t in totals.values()),
        )))
        for name, t in rows:
            lines.append(f"  {name:<{width}}  {t.count:>6} {t.saved_arrays:>13} "
                         f"{human_bytes(t.saved_bytes):>12} {human_bytes(t.extra_saved_bytes):>15} "
                         f"{human_bytes(t.output_bytes):>13}")
        lines.append("  (total: each saved array once. A row counts an array once per op that saved it: "
                     "the rows")
        lines.append(f"   add up to {human_bytes(g.saved_bytes)} saved, "
                     f"{human_bytes(g.extra_saved_bytes)} extra. "
                     "extra: saved arrays that no live Tensor holds (not")
        lines.append("   an input or output your code still references): memory held only for backward.")
        lines.append("   output bytes: every op's output at its size, whether still held or already freed)")
        if any(s.attribute for s in saves):
            lines.append("  (keeps: an array held as an op attribute, self.x = x, not given to "
                         "save_for_backward:")
            lines.append("   backward does not release it, so it lives as long as the graph)")
    lines += [f"  names: {note}" for note in g.name_notes]
    return "\n".join(lines)
