"""Matmul precision: exact fp32 ("ieee", the default) or TF32 ("tf32", opt-in).

`tl.dot` on fp32 inputs would use TF32 tensor cores on Ampere and later GPUs, which
rounds the inputs to 10 mantissa bits. Topgrad matches PyTorch at 1e-4 only in exact
fp32, so that is the default; TF32 is chosen with `set_precision("tf32")` or the
environment variable ``TOPGRAD_TRITON_TF32=1``. No torch or triton import here.
"""

from __future__ import annotations

import os

_CHOICES = ("ieee", "tf32")
_precision: str | None = None


def set_precision(mode: str) -> None:
    """Choose the `tl.dot` input precision of every matmul kernel: "ieee" (exact) or "tf32"."""
    global _precision
    if mode not in _CHOICES:
        raise ValueError(f"set_precision: mode must be one of {_CHOICES}, got {mode!r}")
    _precision = mode


def get_precision() -> str:
    """The precision in force: set_precision's choice, else "tf32" if TOPGRAD_TRITON_TF32=1, else "ieee"."""
    if _precision is not None:
        return _precision
    return "tf32" if os.environ.get("TOPGRAD_TRITON_TF32") == "1" else "ieee"
