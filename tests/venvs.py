"""Throwaway virtualenvs for tests that install packages: they see this interpreter's packages."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
from pathlib import Path


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
