"""`BackendConformance`: the kit as pytest test classes to subclass in a backend's own suite.

    import topgrad.testing

    class TestMyBackend(topgrad.testing.BackendConformance):
        backend = "mybackend"    # None: --topgrad-backend, else $TOPGRAD_BACKEND, else the default
        rtol = 1e-4              # tighten it for a float64 backend
        expected_failures = {"Attention": "not written yet"}   # strict xfail, by name

One test per op case (forward and backward), per helper and per optimizer, with the
same ids as the rows of `python -m topgrad.testing`. `expected_failures` maps a name to a
reason: an op (``"Conv2d"``), a case (``"Conv2d[3x3 s2 p1]"``), either followed by
``" forward"`` or ``" backward"`` (as the kit's failure lines begin), a helper or an
optimizer label. Those tests are strict xfails: a check that starts passing says so.
Override a test method to drop a check altogether, as with pandas' extension tests.

A backend that does not load gives one error, at the first test of the class, and skips the
others, pointing at it; a required array helper the backend lacks fails its own test
(``test_helper[asarray]``), and the tests that need it are skipped, pointing at that one.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NoReturn

import pytest

from topgrad import registry
from topgrad.testing.cases import CASES, OPTIONAL_OPS, Case
from topgrad.testing.helpers import HELPER_CHECKS
from topgrad.testing.opcheck import check_backward, check_forward, check_reference
from topgrad.testing.optimizers import OPTIMIZER_CHECKS
from topgrad.testing.outcome import RTOL, Outcome, helper_advice, lacking_helper, missing_helpers
from topgrad.testing.runner import LOAD_ERRORS, helper_row, provides, selected

CHECKED: dict[str, tuple[str, str]] = {}
"""Kit test classes run in this session -> (the backend each checked, how it was chosen); the
pytest plugin (`topgrad_pytest_plugin`) prints it at the end of the run."""

UNLOADED: dict[str, str] = {}
"""Kit test classes whose backend did not load -> the test that reported the load error."""


def requested_backend(config: Any) -> tuple[str, str]:
    """The backend a class without `backend = ...` checks, and what chose it: --topgrad-backend,
    else $TOPGRAD_BACKEND, else the default."""
    name = config.getoption("--topgrad-backend", default=None)
    if name:
        return name, "chosen by --topgrad-backend"
    name = os.environ.get("TOPGRAD_BACKEND")
    if name:
        return name, "chosen by $TOPGRAD_BACKEND"
    return registry._default_name(), "the default: no --topgrad-backend, no $TOPGRAD_BACKEND"


_OP_CASES = [pytest.param(case, id=case.id) for case in CASES]
_BACKWARD_CASES = [pytest.param(case, id=case.id) for case in CASES if case.raises is None]


def _check_names() -> set[str]:
    """Every name `expected_failures` may use: ops, cases, either with " forward"/" backward",
    helpers and optimizers."""
    names = {*HELPER_CHECKS, *OPTIMIZER_CHECKS}
    for case in CASES:
        for base in (case.op, case.id):
            names.update({base, f"{base} forward", f"{base} backward"})
    return names


def _skip_if_not_provided(case: Case) -> None:
    if case.op in OPTIONAL_OPS and not provides(case.op):
        pytest.skip(f"{case.op} is an optional op this backend does not provide")


_FIRST = pytest.StashKey[dict[tuple[type, str], str]]()
"""(test class, problem) -> the test that reported it: the others skip and point there."""


def _report_once(request: Any, problem: str, message: str, skipped: str) -> NoReturn:
    """Fail the first test of this class that meets `problem` with `message`; skip the others, naming it."""
    first = request.config.stash.setdefault(_FIRST, {})
    where = first.setdefault((request.cls, problem), request.node.nodeid)
    if where == request.node.nodeid:
        pytest.fail(message, pytrace=False)
    pytest.skip(f"{skipped}: {where} says why")


def _own_test(request: Any, helper: str) -> str | None:
    """The node id of this class's test of `helper`'s row where this session runs it, else None."""
    name = f"test_helper[{helper_row(helper)}]"
    return next((item.nodeid for item in request.session.items
                 if getattr(item, "cls", None) is request.cls and item.name == name), None)


def _skip_lacking(request: Any, helper: str) -> NoReturn:
    """Skip a test that needs a helper the backend lacks, pointing at the helper's own test, which
    fails saying what to implement; where that test is not selected, this class's first test that
    needs the helper fails so instead."""
    backend = registry.get_backend()
    skipped = f"not run: backend {backend.name!r} lacks {helper}"
    own = _own_test(request, helper)
    if own == request.node.nodeid:
        pytest.fail(helper_advice(backend, helper), pytrace=False)
    if own is not None:
        pytest.skip(f"{skipped}: {own} says what to implement")
    _report_once(request, f"lacks {helper}", helper_advice(backend, helper), skipped)


def _expect(request: Any, outcome: Outcome | None, what: str = "") -> None:
    """Fail with the outcome's message, led by `what` failed ("Conv2d[3x3 s2 p1] backward", as the
    kit's failure lines begin), or skip where a helper the backend lacks stopped the check."""
    if outcome is not None and outcome.lacks:
        _skip_lacking(request, outcome.lacks)
    if outcome is not None and not outcome.ok:
        pytest.fail(f"{what}: {outcome.message}" if what else outcome.message, pytrace=False)


def _run(check: Callable[[float], Outcome], rtol: float) -> Outcome:
    """A helper or optimizer check; one stopped by a helper the backend lacks says so (`lacks`)."""
    try:
        return check(rtol)
    except Exception as exc:
        helper = lacking_helper(exc)
        if not helper:
            raise
        return Outcome.not_run(helper)


class BackendConformance:
    """Subclass with a name starting with ``Test`` and set `backend`; pytest collects the rest."""

    backend: ClassVar[str | None] = None
    rtol: ClassVar[float] = RTOL
    expected_failures: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A name in `expected_failures` that matches no check is a typo: say so at import."""
        super().__init_subclass__(**kwargs)
        known = _check_names()
        for name in cls.expected_failures:
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=1)
                raise ValueError(
                    f"{cls.__name__}.expected_failures names {name!r}, which is no check of the kit"
                    f"{f'; did you mean {near[0]!r}?' if near else ''} (names: an op, a case as the kit's "
                    "failure lines print it, either followed by ' forward' or ' backward', a helper or "
                    "an optimizer)"
                )

    @pytest.fixture(autouse=True)
    def _topgrad_selected_backend(self, request: Any) -> Iterator[str]:
        name, how, error = self.backend or "the default backend", "its `backend`", None
        try:
            if not self.backend:
                name, how = requested_backend(request.config)
            registry.load_backend(name)
        except LOAD_ERRORS as exc:
            error = exc
        if error is not None:  # one error for the class, not one per test (outside `except`: no chain)
            self._not_loaded(request, name, how, error)
        CHECKED.setdefault(type(self).__name__, (name, how))
        with selected(name):
            yield name

    def _not_loaded(self, request: Any, name: str, how: str, exc: Exception) -> NoReturn:
        """Error at the first test of the class with the load error; skip the others, naming it."""
        cls = type(self).__name__
        CHECKED.setdefault(cls, (name, how))
        UNLOADED.setdefault(cls, request.node.nodeid)
        message = (f"{cls}: backend {name!r} ({how}) did not load (its other tests are skipped): "
                   f"{type(exc).__name__}: {exc}")
        _report_once(request, "load", message, f"not run: backend {name!r} did not load")

    def _mark_expected(self, request: Any, *names: str) -> None:
        for name in names:
            if name in self.expected_failures:
                reason = self.expected_failures[name]
                if not name.endswith((" forward", " backward")):  # a strict XPASS then says which to use
                    reason += (f" ({name!r} marks forward and backward alike; '{name} forward' or "
                               f"'{name} backward' marks one)")
                request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
                return

    @pytest.mark.parametrize("case", _OP_CASES)
    def test_forward(self, case: Case, request: Any) -> None:
        """The op's forward on this case matches the float64 reference."""
        _skip_if_not_provided(case)
        self._mark_expected(request, f"{case.id} forward", case.id, f"{case.op} forward", case.op)
        _expect(request, check_forward(case, self.rtol), f"{case.id} forward")

    @pytest.mark.parametrize("case", _BACKWARD_CASES)
    def test_backward(self, case: Case, request: Any) -> None:
        """The op's backward matches the reference's (itself checked against finite differences)."""
        _expect(request, check_reference(case))
        _skip_if_not_provided(case)
        self._mark_expected(request, f"{case.id} backward", case.id, f"{case.op} backward", case.op)
        _expect(request, check_backward(case, self.rtol), f"{case.id} backward")

    @pytest.mark.parametrize("helper", list(HELPER_CHECKS))
    def test_helper(self, helper: str, request: Any) -> None:
        """One array helper (asarray, full, randn, add, ...) does what core expects."""
        self._mark_expected(request, helper)
        backend = registry.get_backend()
        missing = [h for h in missing_helpers(backend) if helper_row(h) == helper]
        if missing:  # the one test that says what to implement; the tests that need it are skipped
            pytest.fail("; ".join(helper_advice(backend, h) for h in missing), pytrace=False)
        _expect(request, _run(HELPER_CHECKS[helper], self.rtol))  # a helper calling super() fails here too

    @pytest.mark.parametrize("optimizer", list(OPTIMIZER_CHECKS))
    def test_optimizer(self, optimizer: str, request: Any) -> None:
        """One optimizer's steps on this backend match the reference's."""
        self._mark_expected(request, optimizer)
        _expect(request, _run(OPTIMIZER_CHECKS[optimizer], self.rtol))
