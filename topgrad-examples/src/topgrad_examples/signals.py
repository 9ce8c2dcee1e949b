"""Stop signals: SIGTERM and SIGHUP end a run as Ctrl-C does, once.

`docker stop`, a batch system's preemption or a closed terminal then get the run's one line saying
which checkpoint holds which epoch, and a checkpoint being written leaves no temporary file. The
first signal stops the run; any further one (a closed terminal sends SIGHUP twice: the kernel's and
the shell's) is ignored while the run says what it saved, so that it cannot cut that short too.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from topgrad_examples.cli import EXIT_INTERRUPTED

STOP_SIGNALS = ("SIGTERM", "SIGHUP")
"""Signals that stop a run as Ctrl-C does; Windows has no SIGHUP."""


@contextlib.contextmanager
def stop_like_ctrl_c() -> Iterator[list[int]]:
    """While the block runs, STOP_SIGNALS raise KeyboardInterrupt, as SIGINT does, and the first of
    them or SIGINT sets all of them to be ignored until the block ends; yields the list the signal's
    number goes to. Only in the main thread (Python's rule); a signal ignored before (nohup's
    SIGHUP, a background job's SIGINT) stays ignored, a SIGINT handler of the caller's own is left
    alone, and the previous handlers come back after."""
    received: list[int] = []
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        for number in previous:  # once: a second signal must not interrupt the wind-down
            signal.signal(number, absorb)
        raise KeyboardInterrupt

    def absorb(signum: int, frame: object) -> None:
        """A later stop signal, taken and dropped. Not SIG_IGN: a signal already pending when its
        handler became SIG_IGN made Python raise "Signal 15 ignored due to race condition"."""

    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                previous[number] = signal.signal(number, stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, stop)
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: not set by Python


def interrupted(text: str, received: list[int]) -> tuple[str, int]:
    """The line that says why the run stopped (`interrupted by SIGTERM; ...` for a stop signal) and
    the exit status, 128 + the signal's number, as a shell reports a process the signal ended (130
    for Ctrl-C)."""
    if not received or received[0] == signal.SIGINT:
        return text, EXIT_INTERRUPTED
    name = signal.Signals(received[0]).name
    return text.replace("interrupted", f"interrupted by {name}", 1), 128 + received[0]
