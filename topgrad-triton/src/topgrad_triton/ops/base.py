"""`TritonOp`: the base class of every op of the Triton backend; forward and backward run guarded.

A subclass defines `forward` and `backward` as any `topgrad.Op` does; `__init_subclass__`
wraps both in `guard.guarded("Name.forward")` / `("Name.backward")`, so any torch compute
op inside them raises `TorchComputeError`.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, TypeAlias

import topgrad
import torch
from topgrad.arguments import not_a_tensor

from topgrad_triton.guard import guarded
from topgrad_triton.kernels import elementwise as ew

Grad: TypeAlias = "torch.Tensor | None"
"""One entry of a backward's result: a torch.Tensor, or None where no gradient is due."""

OTHER_BACKEND_HINT = "is it a Tensor made under another backend? Make it again after set_backend"
"""Tensors keep the arrays of the backend they were made under: after `set_backend("triton")` an
older Tensor reaches these ops as a numpy array (the engine names a positional one itself)."""

BY_HAND_HINT = "an Op's forward and backward, called by hand, take the backend's arrays: pass t.data"

RAW_ARRAY_HINT = ("the triton backend takes no raw numpy arrays, where numpy's does; a Tensor made under "
                  "another backend arrives as one too: make it again after set_backend")


def check_tensors(op: str, optional: tuple[str, ...] = (), **operands: Any) -> None:
    """TypeError naming `op` and the operand for any operand that is not a torch tensor, before
    any kernel sees it: one message for None, a raw numpy array, a list or a Tensor of another
    backend. The operands named in `optional` (a bias, gamma, beta) may be None."""
    for name, a in operands.items():
        if a is None and name in optional:
            continue
        if a is None:
            raise TypeError(f"{op}: {name} must be a Tensor, got None")
        if not isinstance(a, torch.Tensor):
            if isinstance(a, topgrad.Tensor):
                raise TypeError(f"{op}: {name} is a topgrad Tensor where a torch tensor is due "
                                f"({BY_HAND_HINT})")
            if isinstance(a, (list, tuple, int, float, str)):  # in the words of the Tensor methods
                raise not_a_tensor(op, name, a)
            raise TypeError(f"{op}: {name} must be a Tensor, got {type(a).__name__}: wrap an array as "
                            f"Tensor({name}) ({RAW_ARRAY_HINT})")


def _wrap(cls: type, method: str) -> None:
    fn = cls.__dict__.get(method)
    if fn is None or getattr(fn, "_guarded", False):
        return

    @functools.wraps(fn)
    def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
        with guarded(f"{type(self).__name__}.{method}"):  # the op's name, where a base class wrote it
            return fn(self, *args, **kwargs)

    @functools.wraps(fn)
    def inner_backward(self: Any, grad: Any) -> Any:
        if not isinstance(grad, torch.Tensor) and isinstance(grad, topgrad.Tensor):
            raise TypeError(f"{type(self).__name__}.backward: grad is a topgrad Tensor where a torch tensor "
                            f"is due ({BY_HAND_HINT})")
        with guarded(f"{type(self).__name__}.backward"):
            return fn(self, grad)

    wrapped = inner_backward if method == "backward" else inner
    wrapped._guarded = True  # type: ignore[attr-defined]
    setattr(cls, method, wrapped)


class TritonOp(topgrad.Op):
    """An op whose forward and backward may only allocate and view with torch; math is Triton's."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap(cls, "forward")
        _wrap(cls, "backward")


class Pointwise(TritonOp):
    """y = f(x) by one elementwise kernel (`function`), whose gradient is one kernel (`gradient`)
    of the upstream gradient and either y or x, whichever the derivative is a function of: that
    one is saved (`from_output`)."""

    function: ClassVar[int]
    gradient: ClassVar[int]
    from_output: ClassVar[bool] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) by one elementwise kernel; saves y or x, whichever the derivative needs."""
        name = type(self).__name__
        check_tensors(name, x=x)
        out = ew.elementwise(self.function, x, name=name)
        if self.from_output:
            self.save_for_backward(out=out)
        else:
            self.save_for_backward(x=x)
        return out

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor]:
        """The gradient kernel applied to grad and the saved array."""
        (saved,) = self.saved
        return (ew.elementwise(self.gradient, grad, saved, name=type(self).__name__),)
