"""The errors the plugin registry raises, each saying what to install or fix, how messages name
types, and the texts of the engine's (op.py's) errors, so that the engine reads without them."""

from __future__ import annotations

import inspect
import math
from typing import Any


def type_name(value: Any) -> str:
    """`value`'s type as error messages name it: `list`, `Tensor` (Topgrad's), but `torch.Tensor`
    and `numpy.ndarray`, so that another library's Tensor does not read as Topgrad's."""
    kind = type(value)
    package = kind.__module__.split(".")[0]
    return kind.__name__ if package in ("builtins", "topgrad") else f"{package}.{kind.__qualname__}"


def qualified_name(kind: type) -> str:
    """A type's full dotted name (`numpy.ndarray`, `topgrad.tensor.Tensor`): for messages about a
    backend's array type, where the module matters."""
    return f"{kind.__module__}.{kind.__qualname__}"


def numpy_scalar_hint(value: Any, kind: type) -> str:
    """' (numpy gives a scalar ...)' where `value` is a numpy scalar and the backend's arrays are
    numpy's: numpy's arithmetic on 0-d arrays returns scalars, and np.asarray is the fix. Empty
    otherwise (for another backend, np.asarray would be the wrong advice)."""
    numpy_scalar = type(value).__module__ == "numpy" and type(value).__name__ != "ndarray"
    if numpy_scalar and qualified_name(kind) == "numpy.ndarray":
        return " (numpy gives a scalar for 0-d arrays: np.asarray(...) of it is one)"
    return ""


def counted(n: int, noun: str) -> str:
    """`n` with `noun`, plural unless it is 1: "1 gradient", "2 gradients"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def name_the_op(exc: Exception, cls: type, method: str, operands: tuple[Any, ...]) -> None:
    """Note on a backend's error that does not name its op (numpy's "cannot reshape array of size
    243 into shape (18)" from a third-party backend) which op's forward or backward raised it, and
    on what shapes; the built-in backends' errors name the op already, and get no note."""
    if cls.__name__ in str(exc) or not hasattr(exc, "add_note"):
        return
    shapes = ", ".join(str(tuple(a.shape)) for a in operands if hasattr(a, "shape")) or "no arrays"
    what = "operands of shapes" if method == "forward" else "a gradient of shape"
    exc.add_note(f"raised in {cls.__name__}.{method} ({cls.__module__}) on {what} {shapes}")


def not_an_array(op_name: str, out: Any, kind: type, tensor_type: type) -> TypeError:
    """A forward's result that is not one of the backend's arrays (`kind`): a numpy scalar (from
    np.sum) would be taken for a plain number by the next op, which then returns no gradient for it."""
    keyword = (" (a Tensor given to apply by keyword reaches forward as a Tensor: only positional "
               "arguments become arrays and inputs of the graph)") if isinstance(out, tensor_type) else ""
    return TypeError(f"{op_name}.forward returned a {qualified_name(type(out))}; it must return one "
                     f"backend array ({qualified_name(kind)}, the type the backend's zeros((0,)) returns), "
                     "a 0-d result too "
                     f"(np.asarray(np.sum(x)) for numpy), never a Tensor{keyword}")


def released_text(name: str) -> str:
    """The error for op `name`'s saved arrays, read or claimed after backward released them."""
    return (f"{name}: backward through this graph ran already and its saved arrays were released; run "
            "the forward pass again before calling backward")


def note_saved_nothing(exc: Exception, op_type: Any) -> None:
    """Note on `exc` that op `op_type` saved nothing, where its own backward raised it by unpacking
    or indexing an empty `saved` (called only for an op that saved nothing)."""
    if _failed_on_empty(op_type.backward, exc) and hasattr(exc, "add_note"):
        exc.add_note(f"{op_type.__name__} saved nothing for backward: if its backward reads "
                     "self.saved, its forward must call self.save_for_backward(...)")


def _failed_on_empty(method: Any, exc: Exception) -> bool:
    """Whether `exc` is what unpacking or indexing an empty `saved` raises ("expected 2, got 0",
    "tuple index out of range"), raised in `method`'s own code (a backward written by hand), not in
    a kernel or helper a backend's backward calls, nor by an array method it calls (`g.reshape`)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = getattr(inspect.unwrap(method), "__code__", None)  # under a decorator (numpy's `quiet`)
    empty = str(exc).endswith("got 0)") if isinstance(exc, ValueError) else (
        isinstance(exc, IndexError) and str(exc) == "tuple index out of range")
    return empty and tb is not None and tb.tb_frame.f_code is code


def shape_fix(got: tuple[int, ...], want: tuple[int, ...]) -> str:
    """How a backward's gradient of shape `got` becomes one of its input's shape `want`."""
    if math.prod(got) > math.prod(want):
        return "a broadcast input's gradient must be summed back to its shape"
    if math.prod(got) < math.prod(want):
        return "a reduced input's gradient must be expanded back to its shape, e.g. by broadcasting"
    return "transpose or reshape it to the input's shape: check the order of its axes"


class BackendNotFoundError(LookupError):
    """No installed plugin offers a backend of that name."""


class BackendUnavailableError(RuntimeError):
    """The backend is installed but cannot run here (import failed, no GPU, ...)."""


class OpConflictError(RuntimeError):
    """Two plugins give the same op (or two overrides of one op) to one backend."""


class BackendConflictError(RuntimeError):
    """Two plugins offer a backend under the same name."""
