"""Collected by ``pytest --pyargs topgrad.testing [--topgrad-backend NAME]``: the kit on one backend."""

from __future__ import annotations

from topgrad.testing import NEEDS_NUMPY

try:
    import numpy  # noqa: F401
except ImportError:  # say what to install, not a bare import error
    raise ImportError(NEEDS_NUMPY) from None

from topgrad.testing.suite import BackendConformance


class TestConformance(BackendConformance):
    """The backend named by --topgrad-backend, else $TOPGRAD_BACKEND, else the default one."""
