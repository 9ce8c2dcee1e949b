"""Measuring tools for the benchmark: timing, GEMM FLOP counting, the GEMM rate, peak memory.

Peak memory is measured the same way for both frameworks: the rise of the process's resident
set high-water mark (`VmHWM`, reset through `/proc/self/clear_refs`) over the resident set
before the step, in a child process whose glibc malloc serves every block of 4 KiB or more
with its own mmap and unmaps it on free. Memory then leaves the process the moment either
framework frees it, so the high-water mark is the step's peak of live memory.
"""

from __future__ import annotations

import ctypes
import gc
import math
import statistics
import time
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from topgrad.observe import Observer, observing

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


# ---- timing ----------------------------------------------------------------------------------
@dataclass
class Timing:
    """Per-call seconds of each repetition, for both frameworks."""

    topgrad: list[float]
    torch: list[float]

    def median(self, which: str) -> float:
        return statistics.median(getattr(self, which))

    def best(self, which: str) -> float:
        return min(getattr(self, which))


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}


def _calls_per_sample(fn: Callable[[], None], target_s: float) -> int:
    """How many calls make one timed sample of at least `target_s` (short ops need several)."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, min(1000, math.ceil(target_s / once)))


def _sample(fn: Callable[[], None], number: int, clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number


def time_interleaved(tg: Callable[[], None], th: Callable[[], None], repeat: int, warmup: int,
                     target_s: float = 0.005, clock: str = "wall") -> Timing:
    """Alternate Topgrad and PyTorch samples (ABBA order) after `warmup` calls of each.

    `clock="cpu"` counts the process's CPU time (user + system, page faults included) rather
    than elapsed time: on a machine shared with other jobs it leaves out the time this
    process waits for a core. It is only meaningful with one thread per framework.
    """
    tick = CLOCKS[clock]
    for _ in range(warmup):
        tg()
        th()
    n_tg, n_th = _calls_per_sample(tg, target_s), _calls_per_sample(th, target_s)
    out = Timing([], [])
    gc.collect()
    for r in range(repeat):
        if r % 2 == 0:
            out.topgrad.append(_sample(tg, n_tg, tick))
            out.torch.append(_sample(th, n_th, tick))
        else:
            out.torch.append(_sample(th, n_th, tick))
            out.topgrad.append(_sample(tg, n_tg, tick))
    return out


# ---- FLOPs of the GEMM-like ops ---------------------------------------------------------------
class FlopCounter(Observer):
    """An op observer summing the multiply-add FLOPs of Linear, Conv2d and Attention.

    Backward costs twice the forward (input and weight gradients), except that no input
    gradient is counted for an input that is a leaf outside `params` (the image batch):
    PyTorch does not compute it.
    """

    def __init__(self, params: set[int] | None = None) -> None:
        self.params = params
        self.forward = 0
        self.backward = 0

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def _needs_grad(self, t: Any) -> bool:
        if self.params is None:
            return True
        return getattr(t, "_op", None) is not None or id(t) in self.params

    def after_forward(self, op: Any, args: tuple[Any, ...], params: dict[str, Any], result: Any,
                      seconds: float) -> None:
        kind = type(op).__name__
        if kind == "Linear":
            x, w = args[0], args[1]
            fwd = 2 * math.prod(x.shape[:-1]) * w.shape[0] * w.shape[1]
        elif kind == "Conv2d":
            kh, kw, cin, cout = args[1].shape
            fwd = 2 * math.prod(result.shape[:-1]) * kh * kw * cin * cout
        elif kind == "Attention":
            (b, t, d), s = args[0].shape, args[1].shape[1]
            self.forward += 4 * b * t * s * d
            self.backward += 8 * b * t * s * d
            return
        else:
            return
        self.forward += fwd
        self.backward += fwd * (2 if self._needs_grad(args[0]) else 1)


def count_flops(fn: Callable[[], Any], params: set[int] | None = None) -> FlopCounter:
    """Run `fn` once (a Topgrad forward) with a FlopCounter attached to every op."""
    with observing(FlopCounter(params)) as counter:
        fn()
    return counter


# ---- the machine's GEMM rate -------------------------------------------------------------------
def gemm_rate(matmul: Callable[[Any, Any], Any], a: Any, b: Any, repeat: int = 3,
              clock: str = "wall") -> float:
    """FLOP/s of the best of `repeat` square float32 matmuls (the physical floor's denominator)."""
    matmul(a, b)
    n = a.shape[0]
    best = min(_sample(lambda: matmul(a, b), 1, CLOCKS[clock]) for _ in range(repeat))
    return 2.0 * n**3 / best


# ---- peak memory ----------------------------------------------------------------------------------
def force_mmap(threshold: int = 4096) -> bool:
    """Make glibc malloc mmap every block >= threshold and unmap it on free (memory child only)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextmanager
def _collected() -> Any:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def peak_rss_bytes(fn: Callable[[], Any]) -> int:
    """Rise of the resident high-water mark over the resident set while `fn` runs."""
    with _collected():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current VmRSS
        base = _status_kib("VmRSS")
        fn()
        return max(0, _status_kib("VmHWM") - base) * 1024


def peak_tracemalloc_bytes(fn: Callable[[], Any]) -> int:
    """Peak of Python-traced allocations (numpy reports its buffers) above the start, while `fn` runs."""
    with _collected():
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fn()
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
