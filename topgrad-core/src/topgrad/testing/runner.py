"""Running the whole kit on one backend and reporting it as a table, one row per op, helper, optimizer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from topgrad import registry
from topgrad.testing.cases import CASES, OP_NAMES, OPTIONAL_OPS, Case
from topgrad.testing.helpers import HELPER_CHECKS
from topgrad.testing.opcheck import check_backward, check_forward, check_reference
from topgrad.testing.optimizers import OPTIMIZER_CHECKS
from topgrad.testing.outcome import RTOL, Outcome, merge

R = TypeVar("R")


@dataclass
class Row:
    """One line of the report: an op (forward and backward over all its cases), a helper or an optimizer."""

    section: str  # "op", "helper" or "optimizer"
    name: str
    forward: Outcome | None  # None: not run (an optional op the backend does not provide)
    backward: Outcome | None = None  # None: not applicable
    failures: list[str] = field(default_factory=list)  # "case: message" for each failed case
    note: str = ""  # the max-error cell where there is no error to show: "missing" for an absent op

    @property
    def ok(self) -> bool:
        """Whether forward and backward (where run) both passed."""
        return all(o is None or o.ok for o in (self.forward, self.backward))

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
        """How many rows ran and passed (an absent optional op is not counted)."""
        return sum(row.ok and row.forward is not None for row in self.rows)

    @property
    def failed(self) -> int:
        """How many rows failed."""
        return sum(not row.ok for row in self.rows)

    @property
    def ok(self) -> bool:
        """Whether no row failed: the kit's exit status."""
        return self.failed == 0


def _guarded(where: str, check: Callable[[], R]) -> R | Outcome:
    try:
        return check()
    except Exception as exc:
        return Outcome.crashed(where, exc)


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
    forwards, backwards, failures = [], [], []
    for case in cases if cases is not None else [c for c in CASES if c.op == op]:
        reference = check_reference(case)
        if not reference.ok:  # never blame the backend for the kit's own mistake
            raise AssertionError(reference.message)
        fwd = _guarded("forward", partial(check_forward, case, rtol))
        forwards.append(fwd)
        if not fwd.ok:
            failures.append(f"{case.id} forward: {fwd.message}")
        if fwd.raised and case.raises is None:  # backward would run the same forward: one line, not two
            backwards.append(Outcome(False, float("inf"), "not run: forward raised", raised=True))
            continue
        bwd = _guarded("backward", partial(check_backward, case, rtol))
        if bwd is not None:
            backwards.append(bwd)
            if not bwd.ok:
                failures.append(f"{case.id} backward: {bwd.message}")
    return Row("op", op, merge(forwards), merge(backwards), failures)


def _single(section: str, name: str, check: Callable[[float], Outcome], rtol: float) -> Row:
    outcome = _guarded(name, lambda: check(rtol)) or Outcome(True)
    return Row(section, name, outcome, None, [] if outcome.ok else [f"{name}: {outcome.message}"])


@contextlib.contextmanager
def selected(name: str) -> Iterator[None]:
    """Select backend `name` for the duration, then restore the previous selection."""
    previous = registry._current, registry._selected
    registry.set_backend(name)
    try:
        yield
    finally:
        registry._current, registry._selected = previous


def run(name: str, rtol: float = RTOL, only: str | None = None) -> Report:
    """Check backend `name`: every op, helper and optimizer (rows whose name contains `only`)."""
    rows = []
    with selected(name):
        for op in OP_NAMES:
            if only is None or only.lower() in op.lower():
                rows.append(op_row(op, rtol))
        for section, checks in (("helper", HELPER_CHECKS), ("optimizer", OPTIMIZER_CHECKS)):
            for label, check in checks.items():
                if only is None or only.lower() in label.lower():
                    rows.append(_single(section, label, check, rtol))
    return Report(name, rows)


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
    absent = len(report.rows) - report.passed - report.failed
    absent_part = f"{absent} not provided, " if absent else ""  # "M failed" stays last, for scripts
    lines += ["", f"{report.passed} passed, {absent_part}{report.failed} failed"]
    return "\n".join(lines)
