"""The conformance kit: checks a backend's ops, helpers and optimizers against a float64 numpy reference.

Three ways to run it (numpy is needed only then: ``pip install numpy``, topgrad-core's ``[testing]``):

- ``python -m topgrad.testing NAME`` prints a table and exits 0 only when every check passes;
- ``pytest --pyargs topgrad.testing --topgrad-backend NAME`` runs the same checks under pytest;
- ``class TestMine(topgrad.testing.BackendConformance): backend = "mine"`` in your own suite.

Importing this package is cheap: numpy loads with the first attribute that needs it. The pytest
plugin (``--topgrad-backend``) is the top-level module `topgrad_pytest_plugin`, which imports no
topgrad module in projects that never use the kit.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BackendConformance": "topgrad.testing.suite",
    "run": "topgrad.testing.runner",
    "format_report": "topgrad.testing.runner",
    "Report": "topgrad.testing.runner",
    "CASES": "topgrad.testing.cases",
    "RTOL": "topgrad.testing.outcome",
}

__all__ = sorted(_LAZY)

NEEDS_NUMPY = "the conformance kit needs numpy: pip install numpy (topgrad-core's [testing] extra)"
"""What to say where the kit runs without numpy (its references are numpy)."""

NEEDS_PYTEST = ("topgrad.testing.BackendConformance is a pytest suite and needs pytest: pip install pytest "
                "(topgrad-core's [testing] extra); `python -m topgrad.testing NAME` runs the same checks "
                "without it")
"""What to say where the pytest suite is asked for without pytest installed."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            if exc.name == "pytest":
                raise ModuleNotFoundError(NEEDS_PYTEST, name="pytest") from exc
            if exc.name != "numpy":
                raise
            raise ModuleNotFoundError(NEEDS_NUMPY, name="numpy") from exc
        return getattr(module, name)
    raise AttributeError(f"module 'topgrad.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
