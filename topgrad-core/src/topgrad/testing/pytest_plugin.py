"""pytest plugin (entry point ``pytest11``): adds ``--topgrad-backend`` for the conformance kit."""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        "--topgrad-backend",
        default=None,
        help="backend checked by the topgrad conformance kit (default: $TOPGRAD_BACKEND, else numpy)",
    )
