"""Running the whole kit on one backend and reporting it as a table, one row per op, helper, optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from topgrad import registry
from topgrad.errors import (
    BackendConflictError,
    BackendNotFoundError,
    BackendUnavailableError,
    OpConflictError,
)
from topgrad.testing.cases import CASES, OP_NAMES, OPTIONAL_OPS, Case
from topgrad.testing.helpers import HELPER_CHECKS
from topgrad.testing.opcheck import check_backward, check_forward, check_reference
from topgrad.testing.optimizers import OPTIMIZER_CHECKS
from topgrad.testing.outcome import RTOL, Outcome, helper_advice, merge, missing_helpers
from topgrad.testing.selection import matcher

R = TypeVar("R")

LOAD_ERRORS = (BackendNotFoundError, BackendUnavailableError, BackendConflictError, OpConflictError)
"""What loading a backend raises when it cannot be checked at all (not installed, broken, a clash)."""


@dataclass
class Row:
    """One line of the report: an op (forward and backward over all its cases), a helper or an optimizer."""

    section: str  # "op", "helper" or "optimizer"
    name: str
    forward: Outcome | None  # None: not run (an optional op the backend does not provide)
    backward: Outcome | None = None  # None: not applicable
    failures: list[str] = field(default_factory=list)  # "case: message" for each failed case
    note: str = ""  # the max-error cell where there is no error to show: "missing" for an absent op
    lacks: str = ""  # a helper the backend does not implement kept some of its checks from running

    @property
    def ok(self) -> bool:
        """Whether forward and backward (where run) both passed."""
        return all(o is None or o.ok for o in (self.forward, self.backward))

    @property
    def not_run(self) -> bool:
        """Whether a missing helper stopped some checks and none of those that ran failed."""
        return bool(self.lacks) and self.ok

    @property
    def crashed(self) -> bool:
        """Whether forward or backward raised rather than failed a comparison."""
        return any(o is not None and o.raised for o in (self.forward, self.backward))

    @property
    def error(self) -> float:
        """The larger of forward's and backward's errors: the table's max-error cell."""
        return max(o.error if o else 0.0 for o in (self.forward, self.backward))


@dataclass
class Report:
    """One backend's rows of the kit's table, as `python -m topgrad.testing` prints them."""

    backend: str
    rows: list[Row]

    @property
    def passed(self) -> int:
        """How many rows ran and passed (not an absent optional op, nor a row a missing helper stopped)."""
        return sum(row.ok and row.forward is not None and not row.lacks for row in self.rows)

    @property
    def not_run(self) -> int:
        """How many rows a missing helper kept from running (its own row fails, and says what to do)."""
        return sum(row.not_run for row in self.rows)

    @property
    def failed(self) -> int:
        """How many rows failed."""
        return sum(not row.ok for row in self.rows)

    @property
    def ok(self) -> bool:
        """Whether no row failed: the kit's exit status."""
        return self.failed == 0


def _guarded(check: Callable[[], R]) -> R | Outcome:
    """The check's result, or its crash as an outcome led by "raised": the failure line's prefix
    names the row and the direction ("sqrt: ", "Tanh[()] forward: ")."""
    try:
        return check()
    except Exception as exc:
        return Outcome.crashed("", exc)


def provides(op: str) -> bool:
    """Whether the selected backend's op table has `op`."""
    ops = registry.get_backend().ops
    return op in ops.names() if hasattr(ops, "names") else hasattr(ops, op)


def op_row(op: str, rtol: float = RTOL, cases: list[Case] | None = None) -> Row:
    """Run every case of `op` (forward, backward, and the reference's own gradient check); an op
    of the required table that the backend lacks is one failure, not one per case, and an
    optional op it lacks is a row that says so."""
    if not provides(op):
        if op in OPTIONAL_OPS:
            return Row("op", op, None, None, [], "not provided (optional)")
        backend = registry.get_backend()
        why = (backend.ops.why_missing(op) if hasattr(backend.ops, "why_missing")
               else f"backend {backend.name!r} has no op {op!r}")
        missing = Outcome(False, float("inf"), why)
        return Row("op", op, missing, missing, [f"{op}: {why}"], "missing")
    forwards: list[Outcome] = []
    backwards: list[Outcome] = []
    failures: list[str] = []
    lacks = {"forward": "", "backward": ""}  # a helper the backend lacks stopped a case there
    for case in cases if cases is not None else [c for c in CASES if c.op == op]:
        reference = check_reference(case)
        if not reference.ok:  # never blame the backend for the kit's own mistake
            raise AssertionError(reference.message)
        fwd = _guarded(partial(check_forward, case, rtol))
        if fwd.lacks:  # backward needs the same helper to make its inputs: neither runs
            lacks["forward"] = lacks["backward"] = fwd.lacks
            continue
        forwards.append(fwd)
        if not fwd.ok:
            failures.append(f"{case.id} forward: {fwd.message}")
        if fwd.raised and case.raises is None:  # backward would run the same forward: one line, not two
            backwards.append(Outcome(False, float("inf"), "not run: forward raised", raised=True))
            continue
        bwd = _guarded(partial(check_backward, case, rtol))
        if bwd is not None and bwd.lacks:
            lacks["backward"] = bwd.lacks
        elif bwd is not None:
            backwards.append(bwd)
            if not bwd.ok:
                failures.append(f"{case.id} backward: {bwd.message}")
    helper = lacks["forward"] or lacks["backward"]
    return Row("op", op, _cell(forwards, lacks["forward"]), _cell(backwards, lacks["backward"]), failures,
               f"not run: backend lacks {helper}" if helper and not failures else "", helper)


def _cell(outcomes: list[Outcome], lacks: str) -> Outcome | None:
    """The outcomes of one column merged; None (the cell says "-", not "ok") where a missing helper
    kept some of them from running and none of those that ran failed."""
    merged = merge(outcomes)
    return None if lacks and merged.ok else merged


def _single(section: str, name: str, check: Callable[[float], Outcome], rtol: float) -> Row:
    outcome = _guarded(lambda: check(rtol)) or Outcome(True)  # its failure line starts "{name}: "
    if outcome.lacks:
        return Row(section, name, None, None, [], outcome.message, outcome.lacks)
    return Row(section, name, outcome, None, [] if outcome.ok else [f"{name}: {outcome.message}"])


def helper_row(helper: str) -> str:
    """The label of the helper check that covers `helper`: "full" is checked by "zeros/ones/full";
    a helper no check covers gets a row of its own name."""
    return next((label for label in HELPER_CHECKS if helper in label.split("/")), helper)


def _missing_helper_row(helper: str) -> Row:
    """The failing row of a required helper the backend lacks, saying what to implement (run, its
    check would fail with the base class's NotImplementedError, as every check calling it does)."""
    advice = helper_advice(registry.get_backend(), helper)
    label = helper_row(helper)
    return Row("helper", label, Outcome.failed(advice), None, [f"{label}: {advice}"], "missing")


@contextlib.contextmanager
def selected(name: str) -> Iterator[None]:
    """Select backend `name` for the duration, then restore the previous selection."""
    previous = registry._current, registry._selected
    registry.set_backend(name)
    try:
        yield
    finally:
        registry._current, registry._selected = previous


def _op_cases(op: str, selects: Callable[[str], bool]) -> list[Case] | None:
    """The cases of `op` that `-k` selects: all where it selects the op's name, else those whose id
    it selects (the failure lines' names: "Conv2d[3x3 s2 p1]"); None where it selects none."""
    cases = [c for c in CASES if c.op == op]
    if selects(op):
        return cases
    return [c for c in cases if selects(c.id)] or None


def run(name: str, rtol: float = RTOL, only: str | None = None) -> Report:
    """Check backend `name`: every op, helper and optimizer, or those `only` selects (`matcher`: a
    substring or a pytest-like -k expression of row names and case ids)."""
    selects = matcher(only)
    with selected(name):
        ops = [op_row(op, rtol, cases) for op in OP_NAMES if (cases := _op_cases(op, selects)) is not None]
        helpers = {label: _single("helper", label, check, rtol) for label, check in HELPER_CHECKS.items()
                   if selects(label)}
        optimizers = [_single("optimizer", label, check, rtol) for label, check in OPTIMIZER_CHECKS.items()
                      if selects(label)]
        # a lacking helper's row says what to implement, also where -k left it out but a row needed it
        lacking = [h for h in missing_helpers(registry.get_backend()) if helper_row(h) in helpers]
        lacking += [row.lacks for row in [*ops, *helpers.values(), *optimizers] if row.lacks]
        helpers.update((helper_row(h), _missing_helper_row(h)) for h in dict.fromkeys(lacking))
    in_order = [helpers[label] for label in HELPER_CHECKS if label in helpers]
    in_order += [row for label, row in helpers.items() if label not in HELPER_CHECKS]
    return Report(name, [*ops, *in_order, *optimizers])


def _mark(outcome: Outcome | None) -> str:
    return "-" if outcome is None else ("ok" if outcome.ok else "FAIL")


def format_report(report: Report) -> str:
    """The table, the failures in detail, and the closing line `N passed, M failed`."""
    width = max([len(r.name) for r in report.rows] + [len("op")])
    lines = [f"{'op':<{width}}  {'forward':<7}  {'backward':<8}  max error", "-" * (width + 31)]
    section = "op"
    for row in report.rows:
        if row.section != section:
            section = row.section
            lines.append(f"-- {section}s")
        infinite = "crashed" if row.crashed else "-"
        err = row.note or (f"{row.error:.1e}" if row.error != float("inf") else infinite)
        lines.append(f"{row.name:<{width}}  {_mark(row.forward):<7}  {_mark(row.backward):<8}  {err}")
    failures = [f for row in report.rows for f in row.failures]
    if failures:
        lines += ["", "failures:"] + [f"  {f}" for f in failures]
    absent = len(report.rows) - report.passed - report.not_run - report.failed
    absent_part = f"{absent} not provided, " if absent else ""  # "M failed" stays last, for scripts
    not_run_part = f"{report.not_run} not run, " if report.not_run else ""
    lines += ["", f"{report.passed} passed, {absent_part}{not_run_part}{report.failed} failed"]
    return "\n".join(lines)
