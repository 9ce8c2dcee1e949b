"""Shared test setup: pick the backend under test and keep torch to one thread.

The backend comes from `--backend NAME`, else `$TOPGRAD_BACKEND`, else numpy.
Every op test compares Topgrad (float32) with PyTorch at 1e-4: see `helpers.assert_as_accurate`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import pytest
from hypothesis import settings

# Hypothesis draws per drawn test. The Triton interpreter runs kernels in numpy, one program at a
# time: fewer draws there (`_interpreted`; the triton backend on a GPU gets the default profile).
# `soak` (`nox -s soak`) draws many more, to find the rare shapes that a CI run's fresh draws
# would otherwise meet one at a time.
# Fresh draws on CI too: Hypothesis's own "ci" profile, which these would inherit where $CI is
# set, fixes the seed, and then every CI run and every soak drew the same shapes. A failure
# prints the blob that replays it (@reproduce_failure).
_DRAWS = {"deadline": None, "derandomize": False, "print_blob": True}
settings.register_profile("interpreter", max_examples=8, **_DRAWS)
settings.register_profile("default", max_examples=25, **_DRAWS)
settings.register_profile("soak", max_examples=400, **_DRAWS)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", default=None, help="topgrad backend under test (default: $TOPGRAD_BACKEND or numpy)"
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--backend") or os.environ.get("TOPGRAD_BACKEND") or "numpy"
    os.environ["TOPGRAD_BACKEND"] = name
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
    _interpret_triton_kernels(name, gpu=torch is not None and torch.cuda.is_available())
    if not config.getoption("hypothesis_profile", None):  # `--hypothesis-profile soak` wins
        settings.load_profile("interpreter" if _interpreted(name) else "default")


def _interpreted(backend: str) -> bool:
    """Whether the backend under test runs its kernels in an interpreter (Triton's, TRITON_INTERPRET=1,
    set by `_interpret_triton_kernels` where there is no GPU)."""
    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def _interpret_triton_kernels(backend: str, gpu: bool) -> None:
    """Without a GPU, Triton kernels run in Triton's interpreter, for the triton backend and for
    the Triton test modules in any run. It must be on before any kernel is defined, so it is set
    here, before collection imports them; and since interpreted kernels touch host memory, every
    address they compute is checked (`interpreter_bounds`)."""
    if backend != "triton" and importlib.util.find_spec("triton") is None:
        return
    if not gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ.get("TRITON_INTERPRET") == "1":
        from interpreter_bounds import install

        why_not = install()
        if why_not:
            warnings.warn(f"Triton kernels run without bounds checks: {why_not}", stacklevel=1)


@pytest.fixture(scope="session")
def backend_name() -> str:
    return os.environ["TOPGRAD_BACKEND"]


@pytest.fixture(autouse=True)
def _selected_backend(backend_name: str):
    import topgrad

    topgrad.set_backend(backend_name)
    yield


@pytest.fixture(autouse=True)
def _many_blocks_when_drawn(request: pytest.FixtureRequest, backend_name: str):
    """A drawn (Hypothesis) test of the interpreted triton backend cuts every launch into several
    small blocks (`topgrad_triton.runtime.many_blocks`): the interpreter's own blocks hold any
    drawn shape whole, so a wrong mask, block loop, chunk partial or second pass would pass every
    draw. Fixed-shape tests keep the real block sizes (and `LONG` rows cross those)."""
    if not (_interpreted(backend_name) and hasattr(request.function, "hypothesis")):
        yield
        return
    from topgrad_triton import runtime

    with runtime.many_blocks():
        yield


@pytest.fixture(scope="session")
def interpreted(backend_name: str) -> bool:
    """True where kernels run in an interpreter: tests choose smaller shapes, never fewer ops."""
    return _interpreted(backend_name)


@pytest.fixture
def triton_backend():
    """The triton backend selected; skipped where it cannot run (no GPU, interpreter not usable)."""
    import topgrad

    try:
        return topgrad.set_backend("triton")
    except topgrad.BackendUnavailableError as exc:
        pytest.skip(str(exc))
