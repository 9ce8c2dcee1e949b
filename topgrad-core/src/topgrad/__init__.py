"""Topgrad: a small, readable automatic-differentiation framework with pluggable backends.

The engine is two files: `tensor.py` (Tensor and backward) and `op.py` (the Op protocol).
Backends are pluggy plugins found through the ``topgrad`` entry point group.
"""

import os as _os

from topgrad import optim, trace, viz
from topgrad import pytorch_names as _pytorch_names
from topgrad import tensor as _tensor
from topgrad.anomaly import AnomalyError, detect_anomaly
from topgrad.backend import Backend, BackendSpec
from topgrad.errors import (
    BackendConflictError,
    BackendNotFoundError,
    BackendUnavailableError,
    OpConflictError,
)
from topgrad.gradcheck import GradcheckError, gradcheck
from topgrad.hookspecs import hookimpl, hookspec
from topgrad.op import Op
from topgrad.optable import override
from topgrad.profiler import profile
from topgrad.registry import (
    available_backends,
    get_backend,
    load_backend,
    register_backend,
    register_plugin,
    set_backend,
)
from topgrad.tensor import Tensor, attention, cat, no_grad, stack

_tensor.__class__ = _pytorch_names.EngineModule  # topgrad.tensor(data), torch's spelling, says what to write

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """Asked only for a missing attribute: the error names the Topgrad way to do what `torch.<name>`
    does (`topgrad.randn` -> `Tensor.randn`)."""
    from topgrad.pytorch_names import module_hint

    way = module_hint(name)
    raise AttributeError(f"module 'topgrad' has no attribute {name!r}" + (f": {way}" if way else ""),
                         name=name)


if _os.environ.get("TOPGRAD_TRACE", "0").strip().lower() not in ("", "0", "false", "no", "off"):
    trace.enable()

__all__ = [
    "AnomalyError",
    "Backend",
    "BackendConflictError",
    "BackendNotFoundError",
    "BackendSpec",
    "BackendUnavailableError",
    "GradcheckError",
    "Op",
    "OpConflictError",
    "Tensor",
    "attention",
    "available_backends",
    "cat",
    "detect_anomaly",
    "get_backend",
    "gradcheck",
    "hookimpl",
    "hookspec",
    "load_backend",
    "no_grad",
    "optim",
    "override",
    "profile",
    "register_backend",
    "register_plugin",
    "set_backend",
    "stack",
    "trace",
    "viz",
]
