"""NOT RUNNABLE on the current engine (kept as the reference for PERF_NOTES #3, constant inputs):
it patched `Op.apply` / `Tensor.backward` as they were before debf223 (lean graph, now in core).

Emulations of two engine changes, to measure what PERF_NOTES.md recommends (not the core).

`install(lean_graph=..., constants=...)` replaces `Op.apply` in this process:

- lean graph: an op keeps, as parents, stand-in Tensors without data (same `_op`) instead of
  the Tensors it was applied to, so an intermediate output no op saved for backward is freed
  as soon as the model's code drops it, as in PyTorch (today the graph keeps every output);
- constants: Tensors passed to `mark_constant` (the input batch, one-hot labels) get no
  gradient; an op whose Tensor arguments are all constants builds no graph and its output is
  a constant; other ops learn which inputs need a gradient from `op.needs_input_grad`
  (`_prototype_ops` Linear and Conv2d then skip the input gradient of the first layer).

The slow path with observers (profilers, FLOP counting) is left as it is.
"""

from __future__ import annotations

import weakref
from typing import Any

from topgrad import Tensor
from topgrad import tensor as _tensor
from topgrad.op import Op

_original_apply = Op.__dict__["apply"]
_stand_ins: weakref.WeakKeyDictionary[Tensor, Tensor] = weakref.WeakKeyDictionary()
_constants: weakref.WeakSet[Tensor] = weakref.WeakSet()
_settings = {"lean_graph": False, "constants": False}


def mark_constant(t: Tensor) -> Tensor:
    """Declare that `t` needs no gradient (only has an effect once `install(constants=True)` ran)."""
    _constants.add(t)
    return t


def _parent(a: Any) -> Any:
    if not isinstance(a, Tensor):
        return a
    if _settings["constants"] and a in _constants:
        return None  # the engine passes no gradient to a non-Tensor parent
    if _settings["lean_graph"] and a._op is not None:
        return _stand_ins.get(a, a)
    return a


def _arrays(args: tuple[Any, ...]) -> list[Any]:
    return [a.data if isinstance(a, Tensor) else a for a in args]


def _apply(cls: type[Op], *args: Any, **params: Any) -> Tensor:
    if cls._observers:
        return _original_apply.__func__(cls, *args, **params)
    op = cls()
    tensors = [a for a in args if isinstance(a, Tensor)]
    constant = _settings["constants"] and bool(tensors) and all(a in _constants for a in tensors)
    if constant or not _tensor._grad_enabled:
        op.needs_input_grad = (False,) * len(args)
        out = Tensor._from_array(op.forward(*_arrays(args), **params), None)
        if constant:
            _constants.add(out)
        return out
    op.needs_input_grad = tuple(isinstance(a, Tensor) and a not in _constants for a in args)
    out = op.forward(*_arrays(args), **params)
    op.parents = tuple(_parent(a) for a in args)
    result = Tensor._from_array(out, op)
    if _settings["lean_graph"]:
        _stand_ins[result] = Tensor._from_array(None, op)
    return result


def install(lean_graph: bool = False, constants: bool = False) -> None:
    """Switch the emulations on (idempotent); with both False, restore the core's `Op.apply`."""
    _settings.update(lean_graph=lean_graph, constants=constants)
    Op.apply = classmethod(_apply) if (lean_graph or constants) else _original_apply
