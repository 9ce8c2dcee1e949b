"""Topgrad: a small, readable automatic-differentiation framework with pluggable backends.

The engine is two files: `tensor.py` (Tensor and backward) and `op.py` (the Op protocol).
Backends are pluggy plugins found through the ``topgrad`` entry point group.
"""

from topgrad import optim
from topgrad.backend import Backend, BackendSpec
from topgrad.errors import (
    BackendConflictError,
    BackendNotFoundError,
    BackendUnavailableError,
    OpConflictError,
)
from topgrad.hookspecs import hookimpl, hookspec
from topgrad.op import Op
from topgrad.registry import (
    available_backends,
    get_backend,
    load_backend,
    override,
    register_backend,
    register_plugin,
    set_backend,
)
from topgrad.tensor import Tensor, attention, no_grad

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendConflictError",
    "BackendNotFoundError",
    "BackendSpec",
    "BackendUnavailableError",
    "Op",
    "OpConflictError",
    "Tensor",
    "attention",
    "available_backends",
    "get_backend",
    "hookimpl",
    "hookspec",
    "load_backend",
    "no_grad",
    "optim",
    "override",
    "register_backend",
    "register_plugin",
    "set_backend",
]
