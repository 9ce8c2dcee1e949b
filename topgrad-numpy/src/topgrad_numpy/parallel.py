"""The backend's worker threads: a convolution splits its batch chunks into one contiguous group
per thread, and numpy releases the GIL in its copies and BLAS calls, so the groups run at once.
Handing work to a thread costs ~70-180 us on a 2-core VM, so only ops of several milliseconds
split (a convolution's groups); a GEMM of a millisecond gained nothing split in two there.

The thread count is `TOPGRAD_NUM_THREADS`, else `OMP_NUM_THREADS`, else the CPUs this process
may run on; `set_threads(n)` changes it. With one thread every op runs in the caller, as if
this module did not exist. Results do not depend on the count: each group writes its own rows
of the output with the BLAS calls one thread would make, and sums over groups are taken in the
order of the serial loop. (numpy's OpenBLAS on several threads of its own, at a count of 1,
rounds some sums differently: that is OpenBLAS's doing.)

While it runs more than one thread, the backend sets numpy's OpenBLAS to one thread, for the
whole process: OpenBLAS's own threads split the small GEMMs of these models poorly, and
between calls they spin, taking the cores the groups run on (deepconv's step on 2 cores:
124-127 ms so; 145-180 with OpenBLAS's threads instead of these, or beside them; table 2k of
benchmarks/HISTORY.md). `set_threads(1)` gives OpenBLAS back the thread count it had.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise
from typing import TypeVar

from topgrad_numpy import openblas

T = TypeVar("T")
R = TypeVar("R")


def default_threads() -> int:
    """`TOPGRAD_NUM_THREADS`, else `OMP_NUM_THREADS`, else the CPUs this process may use."""
    for name in ("TOPGRAD_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_threads = 1
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()
_blas_threads: int | None = None  # OpenBLAS's count before we set it to 1, to give back
_in_group = threading.local()  # set in a thread while it runs a group: no nested splitting


def threads() -> int:
    """How many threads an op splits its work over (the caller's included)."""
    return _threads


def set_threads(n: int) -> None:
    """Split each op's work over `n` threads (1: every op runs in the calling thread), and set
    numpy's OpenBLAS to one thread while n > 1 (given back its count when n is 1 again)."""
    global _threads, _pool, _blas_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_threads: needs an int >= 1, got {n!r}")
    with _lock:
        if _pool is not None and _pool_size != n - 1 and n > 1:  # idle threads may stay for later
            # dropped, not shut down: a split in another thread may still be handing it work;
            # its threads exit once it is done with and collected
            _pool = None
        _threads = n
        blas = openblas.threads()
        if n > 1 and blas is not None and blas > 1:  # (again, if someone raised it meanwhile)
            _blas_threads = _blas_threads or blas
            openblas.set_threads(1)
        elif n == 1 and _blas_threads is not None:
            openblas.set_threads(_blas_threads)
            _blas_threads = None


def _split() -> tuple[int, ThreadPoolExecutor | None]:
    """The thread count and the pool for it, read together (another thread may call
    `set_threads` meanwhile): a split uses the pool made for its own count."""
    global _pool, _pool_size
    with _lock:
        if _threads > 1 and _pool is None:
            _pool_size = _threads - 1
            _pool = ThreadPoolExecutor(_pool_size, thread_name_prefix="topgrad-numpy")
        return _threads, _pool if _threads > 1 else None


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when one is needed."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def groups(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """`items` cut into at most n contiguous groups of near-equal length, none empty."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    cuts = [i * size + min(i, extra) for i in range(n + 1)]
    return [items[a:b] for a, b in pairwise(cuts)]


def _run(work: Callable[[Sequence[T]], R], part: Sequence[T]) -> R:
    _in_group.active = True
    try:
        return work(part)
    finally:
        _in_group.active = False


def map_groups(work: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
    """work(group) for each contiguous group of `items`, one group per thread, the first in the
    calling thread; the results in the groups' order. Every group has finished when this
    returns or raises (a worker never writes into an array after its op has returned). Called
    from inside a group, it runs everything there (a nested split would wait on itself). Each
    worker runs in a copy of the caller's context, so numpy's error state (`np.errstate`, a
    context variable) holds there as in the caller."""
    count, pool = (1, None) if getattr(_in_group, "active", False) else _split()
    parts = groups(items, count)
    if len(parts) == 1 or pool is None:
        return [work(part) for part in parts]
    futures: list[Future[R]] = []
    try:
        for part in parts[1:]:
            futures.append(pool.submit(contextvars.copy_context().run, _run, work, part))
        first = _run(work, parts[0])
    finally:
        for future in futures:
            future.exception()  # wait, whatever happened here
    return [first, *(future.result() for future in futures)]


set_threads(default_threads())
