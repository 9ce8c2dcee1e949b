"""Project automation: `nox` runs lint, the test suite once per backend, and the wheel checks.

Each session builds its own virtualenv from the local distributions. torch is a test-only
dependency and is pinned here (`torch==2.13.0`) before anything else is installed, so that
the packages' ranges (`torch>=2.6`) are already met and no resolver downloads another build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests", "wheels"]
nox.options.reuse_existing_virtualenvs = False

TORCH = "torch==2.13.0"
MYPY = "mypy==2.4.1"  # pinned: a newer mypy may find new faults, and CI should not change by itself
# setuptools: the tests that install packages build them offline (tests/venvs.py) and skip without
# it; virtualenvs for Python 3.12+ no longer come with it
TEST_TOOLS = [
    "pytest>=7", "pytest-xdist>=3", "hypothesis>=6", "numpy>=2.0", "pluggy>=1.3", "tqdm", "setuptools"
]
# how the test sessions run pytest: on every core (pytest-xdist), so that on CI's two cores Triton's
# interpreter takes 12 minutes instead of 26. Capped at 8 workers (~0.5 GB each);
# `nox -s tests -- -n 0` runs it in one process (the last -n wins)
PYTEST = ["pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", "--maxprocesses=8"]
# backend name -> what its session installs beyond core, numpy backend and examples
BACKENDS = {
    "numpy": ["matplotlib"],  # topgrad-train --plot is tested here, its missing-matplotlib path with triton
    "triton": ["triton>=3.2", "./topgrad-triton"],
}
# triton: the interpreter runs the kernels; every kernel is also compiled for sm_90 (codegen and
# ptxas, no GPU needed, ~40 s), which catches what the interpreter lets through
BACKEND_ENV = {"numpy": {}, "triton": {"TRITON_INTERPRET": "1", "TOPGRAD_TRITON_COMPILE_CHECK": "90"}}
LOCAL = ["./topgrad-core", "./topgrad-numpy", "./topgrad-examples"]


def _install_for_tests(session: nox.Session, backend: str) -> dict[str, str]:
    """torch (pinned, first), the test tools and the local packages; returns the run's env."""
    session.install(TORCH)
    session.install(*TEST_TOOLS)
    extra = BACKENDS[backend]
    session.install("--no-deps", *LOCAL, *[e for e in extra if e.startswith("./")])
    remote = [e for e in extra if not e.startswith("./")]
    if remote:
        session.install(*remote)
    return {"TOPGRAD_BACKEND": backend, "OMP_NUM_THREADS": "1", **BACKEND_ENV[backend]}


@nox.session
@nox.parametrize("backend", list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """The whole backend-agnostic suite against PyTorch, on one backend."""
    env = _install_for_tests(session, backend)
    session.run(*PYTEST, f"--backend={backend}", *session.posargs, env=env)


@nox.session
@nox.parametrize("backend", list(BACKENDS))
def soak(session: nox.Session, backend: str) -> None:
    """Only the hypothesis-drawn tests, 400 draws each instead of CI's 25 (8 interpreted): finds
    the rare shapes that CI's fresh draws would otherwise meet one run at a time. Not run by
    default (on two cores numpy ~1 min, Triton's interpreter ~10); run it nightly or before a release."""
    env = _install_for_tests(session, backend)
    session.run(
        *PYTEST, f"--backend={backend}", "-m", "hypothesis", "--hypothesis-profile", "soak",
        *session.posargs, env=env,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over every package, the tests and the scripts; mypy over the four packages (they ship
    py.typed, so their hints are what users' type checkers read; settings in pyproject.toml)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.install(TORCH)
    session.install(MYPY, "numpy>=2.0", "pluggy>=1.3", "pytest>=7")
    session.run("mypy")


@nox.session
def wheels(session: nox.Session) -> None:
    """Build the four wheels and inspect them; install core, numpy and examples in clean virtualenvs,
    in the combinations users use (triton's is built and inspected only: installing it needs torch)."""
    session.install("build")
    session.run("python", "scripts/check_wheels.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side speed and memory of Topgrad-numpy and PyTorch eager on this CPU."""
    session.install(TORCH)
    session.install("numpy>=2.0", "pluggy>=1.3", "threadpoolctl", "tqdm")
    session.install("--no-deps", *LOCAL)
    session.run("python", "benchmarks/vs_torch.py", *session.posargs, env={"OMP_NUM_THREADS": "1"})
