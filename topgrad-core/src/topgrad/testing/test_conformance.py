"""Collected by ``pytest --pyargs topgrad.testing [--topgrad-backend NAME]``: the kit on one backend."""

from __future__ import annotations

from topgrad.testing.suite import BackendConformance


class TestConformance(BackendConformance):
    """The backend named by --topgrad-backend, else $TOPGRAD_BACKEND, else the default one."""
