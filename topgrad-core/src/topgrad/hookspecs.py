"""The hooks a Topgrad plugin may implement (entry point group ``topgrad``).

A plugin is a module registered under the ``topgrad`` entry point group. It must be
cheap to import: heavy libraries load only inside the `BackendSpec.load` target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from topgrad.backend import BackendSpec
    from topgrad.op import Op

hookspec = pluggy.HookspecMarker("topgrad")
hookimpl = pluggy.HookimplMarker("topgrad")


@hookspec
def topgrad_backends() -> list[BackendSpec]:
    """Return the backends this plugin offers, as `BackendSpec` objects (nothing is loaded yet)."""


@hookspec
def topgrad_ops(backend: str) -> dict[str, type[Op]] | None:
    """Return ops to add to the op table of the backend named `backend`, or None.

    To replace an op the backend already has, give `topgrad.override(OpClass)` as the value.
    """
