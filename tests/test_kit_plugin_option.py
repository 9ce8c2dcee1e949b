"""`python -m topgrad.testing NAME --plugin MODULE` given a module it cannot import: the hint names
the module and the PYTHONPATH that work for the guide's src/ layout, and following it works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = """\
import topgrad
from topgrad_unp import BACKEND  # a package's module imports its package


@topgrad.hookimpl
def topgrad_backends():
    return [topgrad.BackendSpec(BACKEND, "topgrad_unp.backend:Unp")]
"""


def _kit(cwd: Path, *args: str, path: str = "") -> subprocess.CompletedProcess[str]:
    """The kit run in `cwd` with `path` (relative to it) first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [path and str(cwd / path), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "topgrad.testing", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A backend project of the guide's src/ layout, not installed: src/topgrad_unp/plugin.py."""
    package = tmp_path / "src" / "topgrad_unp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('BACKEND = "unp"\n')
    (package / "plugin.py").write_text(PLUGIN)
    return tmp_path


FOLLOW = "--plugin topgrad_unp.plugin with src on PYTHONPATH (PYTHONPATH=src python -m topgrad.testing ...)"


@pytest.mark.parametrize(("plugin", "path", "hint"), [
    # was "--plugin plugin with src/topgrad_unp on PYTHONPATH", which fails: plugin imports topgrad_unp
    ("src/topgrad_unp/plugin.py", "", f"--plugin takes a module name, not a file: {FOLLOW}"),
    ("plugin", "src/topgrad_unp", f"it is the module topgrad_unp.plugin of a package: {FOLLOW}"),
    # was "give an importable module name (its folder on PYTHONPATH)", for each of these
    ("topgrad_unp.plugin", "", "topgrad_unp is in src, which is not on PYTHONPATH: run PYTHONPATH=src "
                               "python -m topgrad.testing ..."),
    ("topgrad_unp.plugn", "src", "the package topgrad_unp has no module 'topgrad_unp.plugn': check the name"),
    ("elsewhere.plugin", "", "give the module's dotted name (elsewhere.plugin) with the folder that contains "
                             "its package on PYTHONPATH (for a src/ layout: PYTHONPATH=src)"),
])
def test_a_plugin_that_does_not_import_gets_a_hint_that_works(
    project: Path, plugin: str, path: str, hint: str
) -> None:
    done = _kit(project, "unp", "--plugin", plugin, path=path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: --plugin {plugin}: cannot import it (") and hint in done.stderr, \
        done.stderr
    assert "Traceback" not in done.stderr


def test_following_the_hint_registers_the_plugin(project: Path) -> None:
    done = _kit(project, "--plugin", "topgrad_unp.plugin", "--list", path="src")
    assert done.returncode == 0 and "unp" in done.stdout.split(), done.stdout + done.stderr
