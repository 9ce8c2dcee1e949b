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
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from topgrad.testing.cases import CASES, OPTIONAL_OPS, Case
from topgrad.testing.helpers import HELPER_CHECKS
from topgrad.testing.opcheck import check_backward, check_forward, check_reference
from topgrad.testing.optimizers import OPTIMIZER_CHECKS
from topgrad.testing.outcome import RTOL, Outcome
from topgrad.testing.pytest_plugin import CHECKED, requested_backend
from topgrad.testing.runner import provides, selected

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


def _expect(outcome: Outcome | None) -> None:
    if outcome is not None and not outcome.ok:
        pytest.fail(outcome.message, pytrace=False)


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
        name = self.backend or requested_backend(request.config)
        how = ("its `backend`" if self.backend else
               "`backend` not set: --topgrad-backend, else $TOPGRAD_BACKEND, else the default")
        CHECKED.setdefault(type(self).__name__, (name, how))
        with selected(name):
            yield name

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
        _expect(check_forward(case, self.rtol))

    @pytest.mark.parametrize("case", _BACKWARD_CASES)
    def test_backward(self, case: Case, request: Any) -> None:
        """The op's backward matches the reference's (itself checked against finite differences)."""
        _expect(check_reference(case))
        _skip_if_not_provided(case)
        self._mark_expected(request, f"{case.id} backward", case.id, f"{case.op} backward", case.op)
        _expect(check_backward(case, self.rtol))

    @pytest.mark.parametrize("helper", list(HELPER_CHECKS))
    def test_helper(self, helper: str, request: Any) -> None:
        """One array helper (asarray, full, randn, add, ...) does what core expects."""
        self._mark_expected(request, helper)
        _expect(HELPER_CHECKS[helper](self.rtol))

    @pytest.mark.parametrize("optimizer", list(OPTIMIZER_CHECKS))
    def test_optimizer(self, optimizer: str, request: Any) -> None:
        """One optimizer's steps on this backend match the reference's."""
        self._mark_expected(request, optimizer)
        _expect(OPTIMIZER_CHECKS[optimizer](self.rtol))
