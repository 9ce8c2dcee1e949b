"""pytest plugin (entry point ``pytest11``): the ``--topgrad-backend`` option and the kit's fixture.

Loaded in every pytest run where topgrad-core is installed, so it imports nothing heavy.
"""

from __future__ import annotations

import os
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


def requested_backend(config: Any) -> str:
    """The backend the kit checks: --topgrad-backend, else $TOPGRAD_BACKEND, else the default."""
    name = config.getoption("--topgrad-backend", default=None) or os.environ.get("TOPGRAD_BACKEND")
    if name:
        return name
    from topgrad.registry import _default_name

    return _default_name()


def pytest_report_header(config: Any) -> str | None:
    """Name the checked backend in pytest's header when one was asked for."""
    if config.getoption("--topgrad-backend", default=None):
        return f"topgrad conformance kit: backend {config.getoption('--topgrad-backend')!r}"
    return None


CHECKED: dict[str, tuple[str, str]] = {}
"""Kit test classes run in this session -> (the backend each checked, how it was chosen)."""

UNLOADED: dict[str, str] = {}
"""Kit test classes whose backend did not load -> the test that reported the load error."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which backend each kit test class checked, and how it was chosen: a
    `BackendConformance` subclass without `backend = ...` checks the default one, which the
    test ids do not show."""
    for cls, (name, how) in CHECKED.items():
        if cls in UNLOADED:
            terminalreporter.write_line(f"topgrad conformance kit: {cls} could not load backend {name!r} "
                                        f"({how}); its tests are skipped, and {UNLOADED[cls]} says why")
        else:
            terminalreporter.write_line(f"topgrad conformance kit: {cls} checked backend {name!r} ({how})")
