"""topgrad-core's pytest plugin (entry point ``pytest11``): the ``--topgrad-backend`` option, and
which backend each conformance-kit test class checked.

pytest loads it in every run wherever topgrad-core is installed, in any project. So it is a module
of its own, outside the ``topgrad`` package: importing ``topgrad.testing.anything`` runs
``topgrad/__init__.py``, ~30 modules that pytest also assertion-rewrites (0.1-0.4 s a run). It
imports topgrad only where ``--topgrad-backend`` is given, and reads the kit's record only where the
kit ran.
"""

from __future__ import annotations

import sys
from typing import Any


def pytest_addoption(parser: Any) -> None:
    """The `--topgrad-backend NAME` option: which backend the kit's tests check."""
    parser.addoption(
        "--topgrad-backend",
        default=None,
        help="backend checked by the topgrad conformance kit (default: $TOPGRAD_BACKEND, else numpy, "
        "else the only one installed)",
    )


def pytest_configure(config: Any) -> None:
    """Fail once, with the registry's message, when --topgrad-backend names nothing loadable."""
    name = config.getoption("--topgrad-backend", default=None)
    if not name:
        return
    import pytest
    import topgrad
    from topgrad.testing.runner import LOAD_ERRORS

    try:
        topgrad.load_backend(name)
    except LOAD_ERRORS as exc:  # unknown, unusable here, or a name or op clash between plugins
        raise pytest.UsageError(f"--topgrad-backend {name}: {exc}") from exc


def pytest_report_header(config: Any) -> str | None:
    """Name the checked backend in pytest's header when one was asked for."""
    if config.getoption("--topgrad-backend", default=None):
        return f"topgrad conformance kit: backend {config.getoption('--topgrad-backend')!r}"
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which backend each kit test class checked, and how it was chosen: a
    `BackendConformance` subclass without `backend = ...` checks the default one, which the
    test ids do not show. Nothing where no kit test ran (the kit's module was never imported)."""
    suite = sys.modules.get("topgrad.testing.suite")
    if suite is None:
        return
    for cls, (name, how) in suite.CHECKED.items():
        if cls in suite.UNLOADED:
            terminalreporter.write_line(f"topgrad conformance kit: {cls} could not load backend {name!r} "
                                        f"({how}); its tests are skipped, and {suite.UNLOADED[cls]} says why")
        else:
            terminalreporter.write_line(f"topgrad conformance kit: {cls} checked backend {name!r} ({how})")
