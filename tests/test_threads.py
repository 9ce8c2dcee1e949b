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
