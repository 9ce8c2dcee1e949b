"""Where a benchmark's numbers came from: the repository's commit, printed in every header."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def git_commit() -> str:
    """The repository's commit (with `+changes` when the work tree differs), or `unknown`."""
    def git(*a: str) -> str:
        try:
            res = subprocess.run(["git", "-C", str(HERE), *a], capture_output=True, text=True, check=False)
        except OSError:
            return ""
        return res.stdout.strip() if res.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    return (head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")) or "unknown"
