"""The result of one check, and how errors are measured."""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from types import CodeType
from typing import Any

import numpy as np

from topgrad.backend import Backend
from topgrad.errors import qualified_name
from topgrad.registry import get_backend

RTOL = 1e-4
"""Default tolerance: |backend - reference| <= RTOL * max(1, |reference|) elementwise (float32)."""


@dataclass
class Outcome:
    """Whether a check passed, its largest error and, when it failed, why."""

    ok: bool
    error: float = 0.0
    message: str = ""
    raised: bool = False  # the check raised (the table says "crashed" instead of an error)
    lacks: str = ""  # a helper the backend left unimplemented stopped the check: it was not run

    @classmethod
    def failed(cls, message: str, error: float = float("inf")) -> Outcome:
        """A failed check with its message (and error, inf when there is none to measure)."""
        return cls(False, error, message)

    @classmethod
    def not_run(cls, helper: str) -> Outcome:
        """A check stopped by a required helper the backend lacks (not a failure of what it checks)."""
        return cls(False, float("inf"), f"not run: backend lacks {helper}", lacks=helper)

    @classmethod
    def crashed(cls, where: str, exc: BaseException) -> Outcome:
        """A check that raised: "raised {exception}: {message} (at its origin)", led by `where` only
        where the failure line's prefix ("Tanh[()] forward: ", "sqrt: ") does not say it already."""
        helper = lacking_helper(exc)
        if helper:  # not the check's failure: the helper's own row says what to implement
            return cls.not_run(helper)
        if isinstance(exc, ReadBackError):  # the step ran; the kit could not read its result (the
            # failure line names the step: "sqrt: ...", "Add[(2,3)+(2,3)] forward: ...")
            return cls(False, float("inf"), f"reading the result back failed: {exc}", True)
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        raised = f"{where} raised" if where else "raised"
        return cls(False, float("inf"), f"{raised} {type(exc).__name__}: {exc}{_origin(exc)}{notes}", True)


REQUIRED_HELPERS: tuple[str, ...] = tuple(
    name for name, member in vars(Backend).items()
    if inspect.isfunction(member) and "_missing" in member.__code__.co_names
)
"""The array helpers `topgrad.Backend` leaves to subclasses (its body raises `self._missing(...)`)."""

_BASE_CODE: dict[CodeType, str] = {getattr(Backend, name).__code__: name for name in REQUIRED_HELPERS}


def missing_helpers(backend: Backend) -> list[str]:
    """The required helpers `backend` does not implement: found before any check runs, so that one
    row names each, instead of every check that calls it failing with the same traceback."""
    def inherited(name: str) -> bool:
        method = getattr(backend, name, None)
        return method is None or getattr(method, "__func__", method) is getattr(Backend, name)

    return [name for name in REQUIRED_HELPERS if inherited(name)]


def lacking_helper(exc: BaseException | None) -> str:
    """The required helper whose unimplemented base method raised `exc` (or what caused it), else ""."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError):
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None and tb.tb_frame.f_code in _BASE_CODE:
                return _BASE_CODE[tb.tb_frame.f_code]
        exc = exc.__cause__ or exc.__context__
    return ""


def helper_advice(backend: Backend, helper: str) -> str:
    """What a missing helper is and what to do: the base class's signature and first docstring line."""
    method = getattr(Backend, helper)
    params = list(inspect.signature(method).parameters.values())[1:]
    signature = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
    what = (method.__doc__ or "").strip().split("\n")[0]
    return (f"backend {backend.name!r} does not implement the array helper {helper}({signature}): {what} "
            f"Implement it in {qualified_name(type(backend))} (docs/writing-a-backend.md, section 3, "
            "lists the helpers); the checks that need it are not run")


class ReadBackError(TypeError):
    """`to_numpy` gave no numpy array: the kit's own read of a result failed, not the op."""


def host_values(array: Any) -> np.ndarray:
    """The backend array's values through its `to_numpy`, which must return a numpy.ndarray: every
    check reads results that way, so another type is named here instead of failing each check
    with a misleading message (an in-place write, a wrong value)."""
    values = get_backend().to_numpy(array)
    if not isinstance(values, np.ndarray):
        raise ReadBackError(f"to_numpy returned a {qualified_name(type(values))}; it must return a "
                        "numpy.ndarray of the array's values (the kit reads every result through it): "
                        "fix the to_numpy row first")
    return values


def _origin(exc: BaseException) -> str:
    """' (at file:line in func)' for the innermost frame of the exception, to point authors at it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {last.filename}:{last.lineno} in {last.name})"


def max_error(actual: Any, expected: Any) -> float:
    """max |actual - expected| / max(1, |expected|): relative for large values, absolute near 0."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if actual.size == 0:
        return 0.0
    diff = np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))
    return float(np.nan_to_num(diff, nan=np.inf).max())


def compare(what: str, actual: Any, expected: Any, rtol: float) -> Outcome:
    """Compare shapes, then values, of a backend result (as numpy) and the float64 reference."""
    actual = np.asarray(actual)
    if actual.shape != np.shape(expected):
        return Outcome.failed(f"{what}: shape {actual.shape}, expected {np.shape(expected)}")
    err = max_error(actual, expected)
    if not err <= rtol:
        where = np.unravel_index(
            np.argmax(np.abs(actual - expected) / np.maximum(1.0, np.abs(expected))), actual.shape
        ) if actual.ndim else ()
        got, want = actual[where], np.asarray(expected)[where]
        return Outcome.failed(
            f"{what}: max error {err:.2e} > {rtol:.2g} at index {tuple(int(i) for i in where)} "
            f"(got {float(got):.{_digits(err)}g}, expected {float(want):.{_digits(err)}g})", err,
        )
    return Outcome(True, err)


def _digits(err: float) -> int:
    """Significant digits that show an error of `err` between two values (6 hid 1e-7 at --rtol 0)."""
    if not 0 < err < 1e-5:
        return 6
    return min(17, 2 + int(-np.log10(err)))


def merge(outcomes: list[Outcome]) -> Outcome:
    """One outcome for several: ok when all are, the largest error, the messages of failures."""
    if not outcomes:
        return Outcome(True)
    return Outcome(
        all(o.ok for o in outcomes),
        max(o.error for o in outcomes),
        "; ".join(o.message for o in outcomes if not o.ok),
        any(o.raised for o in outcomes),
    )
