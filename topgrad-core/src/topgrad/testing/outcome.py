"""The result of one check, and how errors are measured."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

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

    @classmethod
    def failed(cls, message: str, error: float = float("inf")) -> Outcome:
        """A failed check with its message (and error, inf when there is none to measure)."""
        return cls(False, error, message)

    @classmethod
    def crashed(cls, where: str, exc: BaseException) -> Outcome:
        """A check that raised: the message names where, the exception and its origin."""
        if isinstance(exc, ReadBackError):  # the step ran; the kit could not read its result
            return cls(False, float("inf"), f"{where}: reading the result back failed: {exc}", True)
        notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))
        return cls(False, float("inf"), f"{where} raised {type(exc).__name__}: {exc}{_origin(exc)}{notes}",
                   True)


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
