"""Opt-in process settings that make numpy training steps faster on Linux; nothing here runs
unless called.

glibc hands freed memory above its trim threshold back to the kernel and serves large
arrays with fresh mmaps, so each training step page-faults its large arrays (im2col
buffers, activations) in again. Raising both thresholds keeps that memory in the heap for
the next step, the way PyTorch's caching allocators keep theirs. It is a process-wide
setting, so it is the application's choice (a trainer, a benchmark), not the backend's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(max_bytes: int = 1 << 30) -> bool:
    """Ask glibc to keep up to `max_bytes` of freed memory for reuse; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # Older glibc refuses an mmap threshold above 32 MiB: then larger arrays still get mmaps.
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, max_bytes) or mallopt(_M_MMAP_THRESHOLD, min(max_bytes, 32 << 20))
    return bool(mmap_ok) and bool(mallopt(_M_TRIM_THRESHOLD, max_bytes))
