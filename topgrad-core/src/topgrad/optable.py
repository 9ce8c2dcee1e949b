"""A backend's op table: its own ops merged with what plugins give through `topgrad_ops`.

The merge does not depend on the order plugins were found in: plain entries add ops the
backend lacks, `override(Op)` entries replace ops it has (or another plugin added), and
two plugins claiming one name is an `OpConflictError`. A plugin whose answer is malformed
is skipped with a warning naming it, so it never breaks the backend.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, TypeGuard

from topgrad.errors import OpConflictError
from topgrad.warning_location import warn


def _is_op(value: Any) -> TypeGuard[type]:
    from topgrad.op import Op  # here: topgrad.op imports the engine, which imports the registry

    return isinstance(value, type) and issubclass(value, Op) and value is not Op


class override:  # noqa: N801 - lower case: it reads as a marker, `topgrad.override(Op)`
    """Marks an op given through `topgrad_ops` as a replacement for the backend's own."""

    def __init__(self, op: type) -> None:
        if not _is_op(op):
            raise TypeError(f"topgrad.override takes an Op subclass (the class, not an instance), got {op!r}")
        self.op = op

    def __repr__(self) -> str:
        return f"override({self.op.__name__})"


class OpTable:
    """A backend's op table after plugins are merged in: `table.Add`, `table.Conv2d`, ..."""

    def __init__(
        self, backend_name: str, ops: dict[str, type], origins: dict[str, str] | None = None,
        strays: dict[str, str] | None = None, own: dict[str, type] | None = None,
    ) -> None:
        self._backend_name = backend_name
        self._origins = dict(origins or {})
        self._strays = dict(strays or {})  # name -> what the backend's `ops` held there instead of an Op
        # the backend's own ops before plugins': a backend object loaded again (an instance as its
        # load target, reloaded when a plugin is added) or a wrapper given this table merges anew
        self._own = dict(ops if own is None else own)
        self.__dict__.update(ops)

    def names(self) -> list[str]:
        """The op names in the table, sorted: what its repr, its errors and the kit list."""
        return sorted(k for k in self.__dict__ if not k.startswith("_"))

    def origins(self) -> dict[str, str]:
        """Op name -> where it came from, for the ops plugins added or replaced (the rest are the
        backend's own): a failure in one of them is that plugin's, not the backend's."""
        return dict(self._origins)

    def why_missing(self, name: str) -> str:
        """Why the table has no op `name`: what it has, and what in the backend's `ops` looks
        meant as that op (a class not derived from Op, a near spelling)."""
        backend, names = repr(self._backend_name), self.names()
        if name in self._strays:
            return (f"backend {backend} has no op {name!r}: its `ops` holds {self._strays[name]}, not a "
                    "topgrad.Op subclass (an op is a class deriving from topgrad.Op)")
        if not names:
            return (f"backend {backend} has no ops at all, so no {name!r}: its `ops` attribute holds no "
                    "topgrad.Op subclasses (set it to a module, namespace or dict of them)")
        near = near_names(name, names)
        spelled = f" (it has {near[0]!r}: is that name misspelled?)" if near else ""
        return f"backend {backend} has no op {name!r}{spelled}; it has: {', '.join(names)}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        advice = "" if name in self._strays or not self.names() else (
            ". Use a backend that implements it, or add it with a plugin's topgrad_ops hook.")
        raise AttributeError(self.why_missing(name) + advice)

    def __repr__(self) -> str:
        return f"OpTable({self._backend_name!r}: {', '.join(self.names())})"


def near_names(name: str, names: list[str]) -> list[str]:
    """The name in `names` that `name` probably meant: the same in another case ('Relu' for
    'ReLU'), else the closest spelling; empty when none is close."""
    return [n for n in names if n.lower() == name.lower()] or difflib.get_close_matches(name, names, n=1)


def _contents(ops: Any) -> Iterable[tuple[Any, Any]]:
    """(name, value) for the public names of a backend's `ops`, as `from ops import *` takes them: a
    module's `__all__` where it has one, else every attribute (a dict's keys) not starting with "_",
    so that a base class the ops share (`_BoxOp`) is not an op; nothing for None."""
    if ops is None:
        return ()
    if isinstance(ops, Mapping):
        return ((k, v) for k, v in ops.items() if not (isinstance(k, str) and k.startswith("_")))
    names = getattr(ops, "__all__", None) if isinstance(ops, ModuleType) else None
    public = [str(n) for n in names] if isinstance(names, (list, tuple)) else dir(ops)
    return ((a, getattr(ops, a, None)) for a in public if not a.startswith("_"))


def own_ops(ops: Any) -> dict[str, type]:
    """The Op subclasses a backend's `ops` holds: a module, a namespace or a dict of them; of a
    merged table, the backend's own ones only (plugins' ops are merged again, not claimed twice)."""
    if isinstance(ops, OpTable):
        return dict(ops._own)
    return {name: value for name, value in _contents(ops) if _is_op(value)}


def strays(ops: Any) -> dict[str, str]:
    """What a backend's `ops` holds that looks meant as an op but is not an Op subclass: any
    non-Op value of a dict, and in a module or namespace a class with forward and backward (its
    `(topgrad.Op)` base forgotten). The table names them when such an op is asked for."""
    if isinstance(ops, OpTable):
        return dict(ops._strays)
    found = {}
    for name, value in _contents(ops):
        if _is_op(value) or not isinstance(name, str):
            continue
        if isinstance(value, type) and hasattr(value, "forward") and hasattr(value, "backward"):
            found[name] = f"the class {value.__name__}, which does not derive from topgrad.Op"
        elif isinstance(ops, Mapping):
            found[name] = (f"an instance of {type(value).__name__} (give the class itself)"
                           if _is_op(type(value)) else f"{value!r}")
    return found


def malformed(given: Any) -> str | None:
    """Why a `topgrad_ops` answer cannot be used, or None when it is a dict of ops."""
    if not isinstance(given, Mapping):
        return f"returned a {type(given).__name__}, not a dict"
    for name, value in given.items():
        if not isinstance(name, str):
            return f"has a key {name!r} that is not an op name (a str)"
        if not isinstance(value, override) and not _is_op(value):
            return f"gives {name!r} = {value!r}, not an Op subclass"
    return None


def merge(
    backend_name: str, own: dict[str, type], given: list[tuple[str, Any]],
    strayed: dict[str, str] | None = None, clash: Callable[[str, str], str] | None = None,
    hooks: Mapping[str, object] | None = None,
) -> OpTable:
    """The table of backend `backend_name`: its `own` ops with each plugin's `topgrad_ops` answer
    (`given`: (plugin name, answer) pairs) merged in; `strayed` (see `strays`) explains gaps.
    `clash(a, b)` names two plugins that claim one op and says how to keep one. A warning about a
    plugin's answer points at its hook function in `hooks` (plugin name -> function), where the fix goes."""
    hooks = hooks or {}
    table = dict(own)
    added: dict[str, tuple[str, Any]] = {}  # op name -> (plugin, Op subclass or override marker)
    replaced: dict[str, tuple[str, Any]] = {}
    origins: dict[str, str] = {}
    for plugin, ops in given:
        why = malformed(ops)
        if why:
            warn(f"topgrad: plugin {plugin!r}: topgrad_ops({backend_name!r}) {why}; it must return a "
                 "dict of op name -> Op subclass, or topgrad.override(Op) to replace an op. Its ops "
                 "are skipped.", hooks.get(plugin))
            continue
        for name, value in ops.items():
            claims = replaced if isinstance(value, override) else added
            if name in claims:
                verb = "overridden" if claims is replaced else "given"
                both = (clash(claims[name][0], plugin) if clash is not None else
                        f"{claims[name][0]!r} and {plugin!r}; uninstall (or stop registering) one of them")
                raise OpConflictError(f"op {name!r} of backend {backend_name!r} is {verb} by two plugins, "
                                      f"{both}")
            claims[name] = (plugin, value)
    for name, (plugin, op) in added.items():
        if name in own:
            raise OpConflictError(
                f"plugin {plugin!r} gives op {name!r}, which backend {backend_name!r} already has; "
                f"return topgrad.override({op.__name__}) to replace it"
            )
        table[name] = op
        origins[name] = f"added by plugin {plugin!r}"
    for name, (plugin, marker) in replaced.items():
        if name not in table:
            near = near_names(name, list(table))
            warn(f"topgrad: plugin {plugin!r} overrides op {name!r}, which backend {backend_name!r} "
                 f"does not have{f' (did you mean {near[0]!r}?)' if near else ''}; the override is "
                 "skipped (give a new op without override())", hooks.get(plugin))
            continue
        table[name] = marker.op
        origins[name] = f"plugin {plugin!r} replaces the backend's"
    return OpTable(backend_name, table, origins, {k: v for k, v in (strayed or {}).items() if k not in table},
                   own=own)
