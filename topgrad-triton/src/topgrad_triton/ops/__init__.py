"""The op table of the Triton backend: every op of the table, required and optional, as a `TritonOp`.

BatchNorm, LayerNorm and Attention live in `ops/norm.py` and `ops/attention.py`; the
table includes them when those modules are present.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from topgrad_triton.ops.base import TritonOp

_MODULES = {
    "topgrad_triton.ops.elementwise": ("Add", "Mul", "Div", "ReLU"),
    "topgrad_triton.ops.pointwise": ("Exp", "Log", "Sqrt", "Abs", "Tanh", "Sigmoid"),
    "topgrad_triton.ops.reduce": ("Sum", "Mean", "Max"),
    "topgrad_triton.ops.softmax": ("LogSoftmax", "Softmax"),
    "topgrad_triton.ops.linear": ("Linear",),
    "topgrad_triton.ops.reshape": ("Reshape", "Permute", "Slice", "Concat"),
    "topgrad_triton.ops.conv": ("Conv2d",),
    "topgrad_triton.ops.pool": ("MaxPool2d",),
    "topgrad_triton.ops.norm": ("BatchNorm", "LayerNorm"),
    "topgrad_triton.ops.attention": ("Attention",),
}


def table() -> SimpleNamespace:
    """A namespace of the op classes (`table().Add`, ...); modules not yet written are skipped."""
    ops: dict[str, type] = {}
    for module_name, names in _MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for name in names:
            if hasattr(module, name):
                ops[name] = getattr(module, name)
    return SimpleNamespace(**ops)


__all__ = ["TritonOp", "table"]
