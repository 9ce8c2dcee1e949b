"""Where kernels run: a CUDA GPU, or Triton's CPU interpreter (``TRITON_INTERPRET=1``).

`check_available` raises `topgrad.BackendUnavailableError` when neither is there. The
launch helpers pick block sizes for each mode: the interpreter runs one program
instance at a time in numpy, so there fewer, bigger programs are much faster.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import topgrad

INTERPRET_HINT = (
    "To run topgrad-triton on the CPU, use Triton's interpreter: set the environment variable "
    "TRITON_INTERPRET=1 before Python imports triton, for example `TRITON_INTERPRET=1 python your_script.py` "
    "or `TRITON_INTERPRET=1 topgrad-train mlp --backend triton` "
    "(or os.environ['TRITON_INTERPRET'] = '1' as the first line of the program)."
)


_TRUE = ("1", "true", "on", "yes", "y")  # what Triton reads as true, in any case


def interpreting() -> bool:
    """True when Triton's CPU interpreter runs the kernels (Triton reads the variable as it goes:
    it must stay set for as long as the backend is used)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in _TRUE  # no strip: Triton reads " 1" as off


def check_available() -> None:
    """Raise BackendUnavailableError unless triton imports and a GPU or the interpreter can run it."""
    try:
        import numpy  # noqa: F401  (arrays in and out: asarray, to_numpy)
        import torch

        if not interpreting() and not torch.cuda.is_available():
            raise _neither()  # before importing triton: setting the variable and retrying then works
        import triton  # noqa: F401
    except topgrad.BackendUnavailableError:
        raise
    except Exception as exc:
        name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        missing = (name or "").split(".")[0]
        advice = (f"install it with: pip install {missing}" if missing in ("numpy", "torch", "triton")
                  else "reinstall them with: pip install --force-reinstall topgrad-triton")
        raise topgrad.BackendUnavailableError(
            f"backend 'triton' cannot import its dependencies ({type(exc).__name__}: {exc}); {advice}"
        ) from exc
    if interpreting():
        import triton.language as tl

        if type(tl.zeros).__name__ == "JITFunction":  # triton was imported before the variable was set
            raise topgrad.BackendUnavailableError(
                "backend 'triton': TRITON_INTERPRET=1 was set after this Python process had imported "
                "triton, so Triton's own functions were compiled for a GPU and its interpreter cannot "
                "run them; restart Python with the variable set. " + INTERPRET_HINT
            )


def _neither() -> topgrad.BackendUnavailableError:
    value = os.environ.get("TRITON_INTERPRET")
    said = "is not set" if value is None else f"is {value!r}, which Triton reads as false"
    return topgrad.BackendUnavailableError(
        "backend 'triton' needs a CUDA GPU or Triton's CPU interpreter, and neither is available "
        f"here: torch.cuda.is_available() is False and TRITON_INTERPRET {said}. " + INTERPRET_HINT
    )


def device() -> str:
    """The torch device that holds the backend's arrays: "cpu" under the interpreter, else "cuda"."""
    return "cpu" if interpreting() else "cuda"


_many = False
"""Whether `many_blocks` is on: test-only, see there."""


@contextlib.contextmanager
def many_blocks() -> Iterator[None]:
    """Test-only: while on, every launch cuts its work into several blocks along each blocked axis
    (2 to 4 of `quarter`'s size, or a kernel's own few-element blocks), the last one ragged where
    it can be. The small arrays of drawn tests then reach the kernels' masks, block loops, chunked
    partial sums and second passes, where the usual blocks hold a whole small array. Slower; not
    for users, and not thread-safe: it switches every launch in the process."""
    global _many
    before, _many = _many, True
    try:
        yield
    finally:
        _many = before


def in_many_blocks() -> bool:
    """Whether `many_blocks` (test-only) is on."""
    return _many


def quarter(extent: int) -> int:
    """The power of two that cuts `extent` elements into 2 to 4 blocks (1 for an extent of 1):
    `many_blocks`' size for a kernel's axis."""
    return 1 << max(0, -(-extent // 4) - 1).bit_length()


def dot_block() -> int:
    """The smallest block side of a tl.dot operand: 16 on a GPU; the interpreter takes any, and 2
    cuts small tests' products into several tiles."""
    return 2 if interpreting() else 16


def block(gpu: int, interpreter: int, many: int) -> int:
    """A block size: `gpu` on a GPU, `interpreter` (bigger: fewer programs) under the interpreter,
    `many` under the test-only `many_blocks` (`quarter` of the extent, or a few elements)."""
    if _many:
        return many
    return interpreter if interpreting() else gpu


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence numpy's RuntimeWarnings in interpreted kernels, as a GPU and PyTorch compute silently:
    overflow to inf, inf - inf and 0 * inf (in the data, or in masked lanes), NaN. Every kernel launch
    runs under it."""
    if not interpreting():
        yield
        return
    import numpy as np

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
