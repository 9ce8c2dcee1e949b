"""A backend's op table: its own ops merged with what plugins give through `topgrad_ops`.

The merge does not depend on the order plugins were found in: plain entries add ops the
backend lacks, `override(Op)` entries replace ops it has (or another plugin added), and
two plugins claiming one name is an `OpConflictError`. A plugin whose answer is malformed
is skipped with a warning naming it, so it never breaks the backend.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeGuard

from topgrad.errors import OpConflictError, warn


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
        self, backend_name: str, ops: dict[str, type], origins: dict[str, str] | None = None
    ) -> None:
        self._backend_name = backend_name
        self._origins = dict(origins or {})
        self.__dict__.update(ops)

    def names(self) -> list[str]:
        """The op names in the table, sorted: what its repr, its errors and the kit list."""
        return sorted(k for k in self.__dict__ if not k.startswith("_"))

    def origins(self) -> dict[str, str]:
        """Op name -> where it came from, for the ops plugins added or replaced (the rest are the
        backend's own): a failure in one of them is that plugin's, not the backend's."""
        return dict(self._origins)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if not self.names():
            raise AttributeError(
                f"backend {self._backend_name!r} has no ops at all, so no {name!r}: its `ops` "
                "attribute holds no topgrad.Op subclasses (set it to a module, namespace or dict of them)"
            )
        raise AttributeError(
            f"backend {self._backend_name!r} has no op {name!r}; it has: {', '.join(self.names())}. "
            "Use a backend that implements it, or add it with a plugin's topgrad_ops hook."
        )

    def __repr__(self) -> str:
        return f"OpTable({self._backend_name!r}: {', '.join(self.names())})"


def own_ops(ops: Any) -> dict[str, type]:
    """The Op subclasses a backend's `ops` holds: a module, a namespace or a dict of them."""
    items = ops.items() if isinstance(ops, Mapping) else ((a, getattr(ops, a, None)) for a in dir(ops))
    return {name: value for name, value in items if _is_op(value)} if ops is not None else {}


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


def merge(backend_name: str, own: dict[str, type], given: list[tuple[str, Any]]) -> OpTable:
    """The table of backend `backend_name`: its `own` ops with each plugin's `topgrad_ops` answer
    (`given`: (plugin name, answer) pairs) merged in."""
    table = dict(own)
    added: dict[str, tuple[str, Any]] = {}  # op name -> (plugin, Op subclass or override marker)
    replaced: dict[str, tuple[str, Any]] = {}
    origins: dict[str, str] = {}
    for plugin, ops in given:
        why = malformed(ops)
        if why:
            warn(f"topgrad: plugin {plugin!r}: topgrad_ops({backend_name!r}) {why}; it must return a "
                 "dict of op name -> Op subclass, or topgrad.override(Op) to replace an op. Its ops "
                 "are skipped.")
            continue
        for name, value in ops.items():
            claims = replaced if isinstance(value, override) else added
            if name in claims:
                verb = "overridden" if claims is replaced else "given"
                raise OpConflictError(
                    f"op {name!r} of backend {backend_name!r} is {verb} by two plugins, "
                    f"{claims[name][0]!r} and {plugin!r}; uninstall (or stop registering) one of them"
                )
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
            near = [n for n in table if n.lower() == name.lower()]  # 'Relu' for 'ReLU'
            near = near or difflib.get_close_matches(name, list(table), n=1)
            warn(f"topgrad: plugin {plugin!r} overrides op {name!r}, which backend {backend_name!r} "
                 f"does not have{f' (did you mean {near[0]!r}?)' if near else ''}; the override is "
                 "skipped (give a new op without override())")
            continue
        table[name] = marker.op
        origins[name] = f"plugin {plugin!r} replaces the backend's"
    return OpTable(backend_name, table, origins)
