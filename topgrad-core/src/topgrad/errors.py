"""The errors the plugin registry raises, each saying what to install or fix, and how messages
name types."""

from __future__ import annotations

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


class BackendNotFoundError(LookupError):
    """No installed plugin offers a backend of that name."""


class BackendUnavailableError(RuntimeError):
    """The backend is installed but cannot run here (import failed, no GPU, ...)."""


class OpConflictError(RuntimeError):
    """Two plugins give the same op (or two overrides of one op) to one backend."""


class BackendConflictError(RuntimeError):
    """Two plugins offer a backend under the same name."""
