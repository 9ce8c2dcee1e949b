"""The engine with several threads: training in two at once, and observers started meanwhile."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import topgrad
from helpers import assert_close, rand
from topgrad import Op, Tensor

ITERATIONS = 1000  # training steps beside the other thread's: the race showed in 3 of 3 runs


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond, so a race shows in a short run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def test_stepping_in_one_thread_while_another_runs_backward(fast_switching: None, interpreted: bool) -> None:
    """Backward read the update clock's sets of stepped leaves while another thread's optimizer
    step added to them: "Set changed size during iteration". Each thread's results are those of
    the same steps run alone."""
    if interpreted:  # the engine's race; every backend shares it, so the numpy run covers it
        pytest.skip("Triton's interpreter (and the suite's bounds check of it) holds one kernel's "
                    "state at a time: two threads cannot run kernels at once there")
    errors: list[BaseException] = []
    stop = threading.Event()

    def stepper() -> None:
        kept: list[Tensor] = []  # a few hundred stepped leaves alive: backward's snapshot is long
        while not stop.is_set():
            ws = [Tensor(rand((4, 4), 70)) for _ in range(50)]
            for w in ws:
                w.grad = topgrad.get_backend().asarray(np.ones((4, 4), np.float32))
            topgrad.optim.SGD(ws, lr=0.1).step()
            kept = [*kept[-250:], *ws]

    def train(out: list[np.ndarray]) -> None:
        w = Tensor(rand((8, 8), 71))
        x = Tensor(rand((16, 8), 72), requires_grad=False)
        opt = topgrad.optim.SGD([w], lr=0.01)
        try:
            for _ in range(ITERATIONS):
                opt.zero_grad()
                x.linear(w).relu().sum().backward()
                opt.step()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        out.append(w.numpy())

    alone: list[np.ndarray] = []
    train(alone)
    together: list[np.ndarray] = []
    other = threading.Thread(target=stepper)
    other.start()
    try:
        train(together)
    finally:
        stop.set()
        other.join()
    assert not errors, errors
    assert_close(together[0], alone[0], "the weights trained beside another thread's steps")


class _Held(Op):
    """x * 2, whose backward waits until the test lets it go on."""

    entered = threading.Event()
    release = threading.Event()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * 2

    def backward(self, grad: np.ndarray) -> tuple[np.ndarray]:
        self.entered.set()
        self.release.wait(timeout=30)
        return (grad * 2,)


def test_a_profile_started_during_another_threads_backward_times_it_from_zero() -> None:
    """The backward's start time was taken only if an observer was registered, and its end
    whenever one was by then: a profile started meanwhile recorded perf_counter() itself, hours."""
    x = Tensor(rand((3,), 73))
    worker = threading.Thread(target=lambda: _Held.apply(x).sum().backward())
    worker.start()
    assert _Held.entered.wait(timeout=30)
    with topgrad.profile() as prof:
        _Held.release.set()
        worker.join()
    assert prof.stats["_Held"].backward_s < 60.0, prof.stats["_Held"].backward_s
    assert_close(x.grad, np.full(3, 2.0), "the gradient through the held op")


@pytest.mark.parametrize(("size", "start"), [(8, None), (1024, "zeros")])
def test_two_threads_backward_through_one_shared_leaf_add_both_gradients(
    fast_switching: None, size: int, start: str | None, backend_name: str,
) -> None:
    """Data-parallel threads over one model: each runs backward on its own forward through a shared
    w. Both could see w.grad None and one store won, or numpy's in-place adds into one .grad (which
    drop the GIL) overlapped: 6-38 rounds in 1000 lost a gradient. PyTorch locks its accumulation;
    so does the engine now. The race is the engine's: run on numpy, whose add shows it in seconds."""
    if backend_name != "numpy":
        pytest.skip("a thousand rounds of a 1024-wide product: the numpy backend's test")
    w = Tensor(np.ones((size, size), np.float32))
    xs = [Tensor(np.full((4, size), k + 1.0, np.float32), requires_grad=False) for k in range(2)]
    barrier, rounds, wrong = threading.Barrier(3), 1000, []

    def worker(k: int) -> None:
        for _ in range(rounds):
            barrier.wait()
            (xs[k] @ w).sum().backward()
            barrier.wait()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for _ in range(rounds):
        w.grad = None if start is None else np.zeros((size, size), np.float32)
        barrier.wait()
        barrier.wait()
        if not np.all(w.grad == 12.0):  # 4 * 1 + 4 * 2
            wrong.append(np.unique(w.grad).tolist())
    for t in threads:
        t.join()
    assert not wrong, f"{len(wrong)} of {rounds} rounds lost a gradient: {wrong[:3]}"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.parametrize("lock", ["registry", "update clock", "leaf gradients"])
def test_a_forked_child_does_not_inherit_a_lock_another_thread_holds(lock: str) -> None:
    """A fork while another thread held the registry's lock or the update clock's left it held in
    the child, where that thread does not exist: the child's first backend lookup or optimizer
    step would wait for ever. The child gets new locks."""
    import os
    import warnings

    from topgrad import registry, versions

    def held() -> threading.Lock:
        return {"registry": registry._lock, "update clock": versions._updates.lock,
                "leaf gradients": versions._updates.grad_lock}[lock]

    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with held():
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(10)
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns that a fork with threads may deadlock
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: exit at once, 0 where the lock can be taken
            os._exit(0 if held().acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0, f"the child could not take the {lock}'s lock"
