"""Collected by ``pytest --pyargs topgrad.testing [--topgrad-backend NAME]``: the kit on one backend."""

from __future__ import annotations

try:
    import numpy  # noqa: F401
except ImportError:  # the kit's references are numpy; say what to install, not a bare import error
    raise ImportError("the conformance kit needs numpy: pip install 'topgrad-core[testing]'") from None

from topgrad.testing.suite import BackendConformance


class TestConformance(BackendConformance):
    """The backend named by --topgrad-backend, else $TOPGRAD_BACKEND, else the default one."""
