"""Throwaway virtualenvs for tests that install packages: they see this interpreter's packages."""

from __future__ import annotations

import importlib.util
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def make_venv(root: Path) -> Path:
    """A venv at `root` that also sees this interpreter's packages (no downloads); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    parents = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    lines = [f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(parents) if Path(p).is_dir()]
    Path(purelib, "_parent_env.pth").write_text("".join(lines))
    return python


def offline_pip() -> dict[str, str]:
    """Environment that keeps `pip install` offline: no index, and builds without isolation (an
    isolated build downloads setuptools). Skips the calling test where setuptools is not here."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("installing a package offline needs setuptools here to build it (pip install setuptools)")
    return {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}  # "0" turns isolation off (pip's quirk)
